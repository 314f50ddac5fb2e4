import Analysis
import Experiments
import Foundation
import PromptLearning
import TestSupport
import XCTest

/// `run --tensorboard`: one TensorBoard run per cell (DIR/<model>/<cell identifier>), read back with tensorboard's EventAccumulator,
/// equal to what the trace and the records hold, across an interruption and resume.
final class TensorBoardRunnerTests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path

    func testEveryCellLogsStepsEpochsNCAndAccuracies() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        let board = dir.appendingPathComponent("board"), trace = dir.appendingPathComponent("trace.jsonl")
        try makeSyntheticDTD(in: data)
        let cells = try GridPlan(protocolKind: .baseToNovel, datasets: ["dtd"], methods: ["zeroshot", "coop"], shots: [2], seeds: [1],
                                 all: RecipeOverride(epochs: 3, batchSize: 2, views: 2, ncEvery: 1)).cells()
        // Interrupted after the coop cell's 2nd epoch, then resumed by another runner (another process).
        var epochs = 0
        let first = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out)
        first.tensorboard = board
        first.trace = try TraceWriter(url: trace, append: true)
        first.shouldStop = { epochs += 1; return epochs == 2 }
        XCTAssertThrowsError(try first.run(cells)) { XCTAssertTrue($0 is RunInterrupted, "\($0)") }
        let second = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out)
        second.tensorboard = board
        second.trace = try TraceWriter(url: trace, append: true)
        let records = try second.run(cells)

        let runs = try tensorBoardScalars(board)
        func run(_ i: Int) -> String { "\(second.modelFolder)/\(cells[i].identifier)" }
        XCTAssertEqual(Set(runs.keys), Set(cells.indices.map(run)), "a run per cell, under the model's folder as in runs/")
        XCTAssertEqual(second.folder(for: cells[1]).url.path, out.appendingPathComponent("runs").appendingPathComponent(run(1)).path)
        let coopDir = board.appendingPathComponent(run(1))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: coopDir.path).filter { $0.hasPrefix("events.out.tfevents.") }.count, 1,
                       "the resumed cell appends to its file")
        func f(_ x: Double) -> Float { Float(x) }

        // Zero-shot: its accuracies and measures at step 0.
        let zs = try XCTUnwrap(runs[run(0)]), zsRecord = records[0]
        XCTAssertEqual(zs["eval/base/accuracy"]?.map(\.step), [0])
        XCTAssertEqual(zs["eval/base/accuracy"]?.first?.value, f(zsRecord.evaluations[0].accuracy))
        XCTAssertEqual(zs["eval/hm"]?.first?.value, f(try XCTUnwrap(zsRecord.hm)))
        XCTAssertEqual(zs["nc/novel/nc1"]?.first?.value, f(try XCTUnwrap(zsRecord.nc["novel"]).image.nc1))
        XCTAssertNil(zs["train/loss"])

        // coop: every traced step, every epoch, the NC measures of each epoch, the final accuracies.
        let coop = try XCTUnwrap(runs[run(1)]), record = records[1]
        let steps = try TraceWriter.read(url: trace).filter { $0.cell == cells[1].identifier }
        XCTAssertEqual(steps.map(\.globalStep), Array(1...6))
        XCTAssertEqual(coop["train/loss"]?.map(\.step), steps.map(\.globalStep))
        XCTAssertEqual(coop["train/loss"]?.map(\.value), steps.map { f($0.loss) })
        XCTAssertEqual(coop["train/lr"]?.map(\.value), steps.map { f($0.lr) })
        XCTAssertEqual(coop["train/accuracy"]?.map(\.value), steps.map { f($0.accuracy) })
        XCTAssertEqual(coop["train/loss/ce"]?.map(\.value), steps.map { f($0.terms["ce"]!) })
        XCTAssertEqual(coop["epoch/loss"]?.map(\.step), [2, 4, 6])
        XCTAssertEqual(coop["epoch/loss"]?.map(\.value), record.history.map { f($0.loss) })
        XCTAssertEqual(coop["epoch/accuracy"]?.map(\.value), record.history.map { f($0.accuracy) })
        XCTAssertEqual(coop["epoch/lr"]?.map(\.value), record.history.map { f($0.learningRate) })
        XCTAssertEqual(record.ncHistory.map(\.epoch), [1, 2, 3])
        for set in ["train", "base", "novel"] {
            XCTAssertEqual(coop["nc/\(set)/nc1"]?.map(\.step), [2, 4, 6], set)
            XCTAssertEqual(coop["nc/\(set)/nc1"]?.map(\.value), record.ncHistory.map { f($0.measures[set]!.image.nc1) }, set)
            XCTAssertEqual(coop["nc/\(set)/text_etf_error"]?.last?.value, f(record.nc[set]!.text.etfError), set)
            XCTAssertEqual(coop["nc/\(set)/nc4"]?.last?.value, f(record.nc[set]!.nc4), set)
        }
        for e in record.evaluations {
            XCTAssertEqual(coop["eval/\(e.name)/accuracy"]?.map(\.step), [6])
            XCTAssertEqual(coop["eval/\(e.name)/accuracy"]?.first?.value, f(e.accuracy))
            XCTAssertEqual(coop["eval/\(e.name)/macro_f1"]?.first?.value, f(e.macroF1))
        }
        XCTAssertEqual(coop["eval/base"]?.first?.value, f(try XCTUnwrap(record.base)))
        XCTAssertEqual(coop["eval/novel"]?.first?.value, f(try XCTUnwrap(record.novel)))
    }

    /// The image-prompt stack (PromptTuner: DAPT) logs the same tags: steps equal the trace, the
    /// image-side terms included.
    func testImagePromptCellLogsThroughTheTuner() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), board = dir.appendingPathComponent("board")
        let trace = dir.appendingPathComponent("trace.jsonl")
        try makeSyntheticDTD(in: data)
        let cells = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["dapt"], shots: [2], seeds: [1],
                                 all: RecipeOverride(epochs: 2, batchSize: 4, ncEvery: 1)).cells()
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: data, out: dir.appendingPathComponent("out"))
        runner.tensorboard = board
        runner.trace = try TraceWriter(url: trace, append: true)
        let record = try XCTUnwrap(try runner.run(cells).first)
        XCTAssertEqual(record.status, .ok, record.error ?? "")
        let s = try XCTUnwrap(try tensorBoardScalars(board)["\(runner.modelFolder)/\(cells[0].identifier)"])
        let steps = try TraceWriter.read(url: trace)
        XCTAssertEqual(steps.count, 4)
        for term in ["ce", "intra", "inter"] {
            XCTAssertEqual(s["train/loss/\(term)"]?.map(\.value), steps.map { Float($0.terms[term]!) }, term)
        }
        XCTAssertEqual(s["train/loss"]?.map(\.step), [1, 2, 3, 4])
        XCTAssertEqual(s["epoch/accuracy"]?.map(\.value), record.history.map { Float($0.accuracy) })
        XCTAssertEqual(s["nc/test/nc1"]?.map(\.step), [2, 4])
        XCTAssertEqual(s["nc/test/nc1"]?.last?.value, Float(try XCTUnwrap(record.nc["test"]).image.nc1))
        XCTAssertEqual(s["eval/test/accuracy"]?.map(\.value), [Float(try XCTUnwrap(record.accuracy))])
    }
}
