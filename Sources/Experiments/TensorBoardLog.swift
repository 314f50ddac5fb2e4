import Analysis
import Foundation
import PromptLearning

/// A cell's TensorBoard run (`run --tensorboard DIR`): DIR/<model>/<cell identifier>, as the cell's
/// folder under `runs/` (so two models' cells never share a run), and the global step
/// its training has reached (the step the end-of-cell measures are logged at).
struct CellBoard {
    var writer: TensorBoardWriter
    var steps: Int
}

extension NeuralCollapseReport {
    /// The measures as TensorBoard scalars under `prefix` (`nc/<set>`).
    func scalars(prefix: String) -> [(tag: String, value: Double)] {
        [("nc1", image.nc1), ("image_equinorm", image.equinorm), ("image_equiangularity", image.equiangularity),
         ("image_max_angle", image.maxAngle), ("image_etf_error", image.etfError),
         ("text_equinorm", text.equinorm), ("text_equiangularity", text.equiangularity),
         ("text_max_angle", text.maxAngle), ("text_etf_error", text.etfError),
         ("nc3", nc3), ("nc4", nc4), ("accuracy", accuracy)].map { ("\(prefix)/\($0.0)", $0.1) }
            + (clusterETFError.map { [("\(prefix)/text_cluster_etf_error", $0)] } ?? [])
    }
}

extension ExperimentRunner {
    /// Opens the cell's event file (appending after `resumeStep` steps of a resumed cell).
    func openBoard(_ spec: RunSpec, resumeStep: Int) throws {
        guard let dir = tensorboard, board == nil else { return }
        let runDir = dir.appendingPathComponent(modelFolder).appendingPathComponent(spec.identifier)
        board = CellBoard(writer: try TensorBoardWriter(directory: runDir, resumeStep: resumeStep), steps: resumeStep)
    }

    func boardStep(_ r: StepReport) {
        board?.writer.logStep(r)
        board?.steps = r.epoch * r.stepsPerEpoch + r.step
    }

    func boardEpoch(_ e: EpochRecord?, step: Int) throws {
        guard let b = board, let e else { return }
        try b.writer.rethrowDeferred()
        try b.writer.addEpoch(e, step: step)
        board?.steps = step
    }

    /// NC measures of the epochs in between (`nc_every`): `nc/<set>/<measure>`.
    func boardMeasures(_ measures: [String: NeuralCollapseReport], step: Int) throws {
        guard let b = board else { return }
        try b.writer.add(measures.sorted { $0.key < $1.key }.flatMap { $0.value.scalars(prefix: "nc/\($0.key)") }, step: step)
    }

    /// The finished cell at its last step: `eval/<set>/accuracy`, `eval/<set>/macro_f1`, the
    /// headline numbers (`eval/accuracy`, `eval/base`, `eval/novel`, `eval/hm`) and the final NC measures.
    func boardFinished(_ record: RunRecord) throws {
        try openBoard(record.spec, resumeStep: 0)
        guard let b = board else { return }
        try b.writer.rethrowDeferred()
        var s: [(tag: String, value: Double)] = []
        for e in record.evaluations { s += [("eval/\(e.name)/accuracy", e.accuracy), ("eval/\(e.name)/macro_f1", e.macroF1)] }
        for (k, v) in [("accuracy", record.accuracy), ("base", record.base), ("novel", record.novel), ("hm", record.hm)] {
            if let v { s.append(("eval/\(k)", v)) }
        }
        for (name, m) in record.nc.sorted(by: { $0.key < $1.key }) { s += m.scalars(prefix: "nc/\(name)") }
        try b.writer.add(s, step: b.steps)
    }
}
