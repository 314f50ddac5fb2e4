import Datasets
import Experiments
import Foundation
import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// Grids with the methods that train prompts inside the image tower (dapt, vpt, +npt), end to end
/// on the synthetic CoOp-layout DTD and the tiny CLIP: records, evaluations, loss terms,
/// prototypes cached and reused, resumes, traces, initial parameters and the report.
final class ImagePromptRunnerTests: XCTestCase {
    static let tiny = RunnerTests.tiny

    static let termsOf: [String: Set<String>] = [
        "dapt": ["ce", "intra", "inter"], "vpt": ["ce"], "dapt+npt": ["ce", "intra", "inter", "lc", "mi", "ia"],
        "vpt+npt": ["ce", "ia"], "coop": ["ce"],
    ]

    func prototypeFiles(_ out: URL) throws -> [URL] {
        let folder = ResultsFolder(out).features.appendingPathComponent(try modelDigest(Self.tiny))
        return try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
            .filter { $0.lastPathComponent.hasPrefix("prototypes-") }
    }

    func modified(_ url: URL) throws -> Date {
        try XCTUnwrap(FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date)
    }

    /// Few-shot: dapt, vpt, dapt+npt (and coop beside them) train, evaluate through the prompted
    /// tower and record their terms; every trained cell saves its initial parameters and traces
    /// every step; DAPT's prototypes are made once and reused; the report lists the methods.
    func testFewShotGridWithImagePrompts() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data)
        let methods = ["dapt", "vpt", "dapt+npt", "coop"]
        let plan = GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: methods, shots: [2], seeds: [1],
                            all: RecipeOverride(epochs: 2, batchSize: 2, views: 2, ncEvery: 1))
        let cells = try plan.cells()
        XCTAssertEqual(cells.map(\.recipe.views), [1, 1, 1, 2], "image prompts are augmented every iteration: one cached view")
        let out = dir.appendingPathComponent("out")
        let traceURL = dir.appendingPathComponent("trace.jsonl")
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out)
        runner.trace = try TraceWriter(url: traceURL, append: true)
        let records = try runner.run(cells)

        for (spec, r) in zip(cells, records) {
            let m = spec.method
            XCTAssertEqual(r.status, .ok, "\(m): \(r.error ?? "")")
            XCTAssertEqual(r.evaluations.map(\.name), ["test"], m)
            XCTAssertEqual(r.evaluations.first?.count, 12, m)
            XCTAssertEqual(r.evaluations.first?.classes, 4, m)
            XCTAssertNotNil(r.accuracy, m)
            XCTAssertEqual(r.history.count, 2, m)
            for e in r.history {
                XCTAssertEqual(Set(e.terms.keys), Self.termsOf[m], "terms of \(m)")
                XCTAssertTrue(e.loss.isFinite && e.terms.values.allSatisfy(\.isFinite), "\(m): \(e)")
            }
            XCTAssertEqual(Set(r.nc.keys), ["train", "test"], m)
            XCTAssertEqual(r.ncHistory.map(\.epoch), [1, 2], m)
            XCTAssertEqual(Set(r.ncHistory[0].measures.keys), ["train", "test"], m)
            // Every run saves the parameters it started from.
            let folder = runner.folder(for: spec)
            let initial = try ParameterCheckpoint.readParameters(path: folder.initial.path)
            let expected: [String] = switch m {
            case "vpt": [ParameterName.visualPrompt]
            case "coop": [ParameterName.textContext]
            default: [ParameterName.textContext, ParameterName.visualPrompt]
            }
            XCTAssertEqual(initial.names.sorted(), expected.sorted(), m)
            let checkpoint = folder.checkpoint
            XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoint.path), "\(m): \(checkpoint.path)")
        }
        // The trained prompts moved from their initial values; vpt's image prompt changed the image features.
        let dapt = try ParameterCheckpoint.read(path: runner.folder(for: cells[0]).checkpoint.path)
        XCTAssertNotEqual(dapt.parameters, try ParameterCheckpoint.readParameters(path: runner.folder(for: cells[0]).initial.path))
        XCTAssertEqual(dapt.header.epochsDone, 2)

        // Prototypes: one file for the draw (dapt and dapt+npt share it; vpt needs none).
        let protos = try prototypeFiles(out)
        XCTAssertEqual(protos.count, 1, "\(protos)")
        let made = try modified(protos[0])
        XCTAssertEqual(try ParameterCheckpoint.readParameters(path: protos[0].path)["prototypes"]?.shape, [4, runner.model.config.embedDim])

        // The trace: every step of every trained cell, in order, with its cell.
        let lines = try String(contentsOf: traceURL, encoding: .utf8).split(separator: "\n")
        let trace = try TraceWriter.read(url: traceURL)
        XCTAssertEqual(trace.count, 4 * 2 * 4, "4 cells x 2 epochs x 4 steps (8 images, batch 2)")
        XCTAssertEqual(Set(trace.compactMap(\.cell)), Set(cells.map(\.identifier)))
        for spec in cells {
            let steps = trace.filter { $0.cell == spec.identifier }
            XCTAssertEqual(steps.map(\.globalStep), Array(1...8), spec.method)
            XCTAssertEqual(steps.map(\.epoch), [0, 0, 0, 0, 1, 1, 1, 1], spec.method)
            XCTAssertEqual(steps.map(\.step), [1, 2, 3, 4, 1, 2, 3, 4], spec.method)
            XCTAssertEqual(steps.first?.lr, 1e-5, "warm-up epoch")
            for s in steps {
                XCTAssertEqual(s.indices.count, 2)
                XCTAssertEqual(Set(s.terms.keys), Self.termsOf[spec.method], spec.method)
                if spec.method == "coop" {
                    XCTAssertNil(s.augmentations)
                    XCTAssertEqual(s.views?.count, 2)
                    XCTAssertTrue(s.views!.allSatisfy { (0..<2).contains($0) })
                } else {
                    XCTAssertNil(s.views)
                    XCTAssertEqual(s.augmentations?.count, 2)
                }
            }
            // Each epoch visits the 8 images once.
            XCTAssertEqual(steps.prefix(4).flatMap(\.indices).sorted(), Array(0..<8))
        }
        // Sorted keys on every line.
        for line in lines.prefix(1) + lines.suffix(1) {
            let keys = ["accuracy", "augmentations", "cell", "epoch", "global_step", "indices", "labels", "loss", "lr", "step", "terms", "views"]
            let positions = keys.compactMap { line.range(of: "\"\($0)\":")?.lowerBound }
            XCTAssertGreaterThanOrEqual(positions.count, 11, String(line))
            XCTAssertEqual(positions, positions.sorted(), String(line))
        }

        // Reused: a new setting of the same draw (other epochs) reads the cached prototypes.
        var again = plan
        again.methods = ["dapt+npt"]
        again.all.epochs = 1
        let second = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).run(try again.cells())
        XCTAssertEqual(second.map(\.status), [.ok], second.first?.error ?? "")
        XCTAssertEqual(try prototypeFiles(out), protos)
        XCTAssertEqual(try modified(protos[0]), made, "the prototypes were read, not made again")

        // The report.
        let summary = try writeReport(directory: out)
        XCTAssertEqual(summary.written.map(\.lastPathComponent), ["results.md", "results.csv", "results.tex", "report.html"])
        let markdown = try String(contentsOf: out.appendingPathComponent("results.md"), encoding: .utf8)
        for m in methods { XCTAssertTrue(markdown.contains(m), "\(m) in\n\(markdown)") }
    }

    /// Base-to-novel: the image prompt is evaluated on base and novel test images (the text side
    /// of dapt names the novel classes through its shared context; vpt uses the hand template).
    func testBaseToNovelGridWithImagePrompts() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data)
        let plan = GridPlan(protocolKind: .baseToNovel, datasets: ["dtd"], methods: ["dapt", "vpt", "dapt+npt", "vpt+npt"],
                            shots: [2], seeds: [1], all: RecipeOverride(epochs: 1, batchSize: 2))
        let out = dir.appendingPathComponent("out")
        let records = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).run(try plan.cells())
        for r in records {
            let m = r.spec.method
            XCTAssertEqual(r.status, .ok, "\(m): \(r.error ?? "")")
            XCTAssertEqual(r.evaluations.map(\.name), ["base", "novel"], m)
            XCTAssertEqual(r.evaluations.map(\.classes), [2, 2], m)
            XCTAssertEqual(r.evaluations.map(\.count), [6, 6], m)
            let (b, n) = (try XCTUnwrap(r.base), try XCTUnwrap(r.novel))
            XCTAssertEqual(try XCTUnwrap(r.hm), b + n == 0 ? 0 : 2 * b * n / (b + n), accuracy: 1e-12)
            XCTAssertEqual(r.history.count, 1, m)
            XCTAssertEqual(Set(r.history[0].terms.keys), Self.termsOf[m], m)
            XCTAssertEqual(Set(r.nc.keys), ["train", "base", "novel"], m)
        }
        XCTAssertEqual(try prototypeFiles(out).count, 1)
        _ = try writeReport(directory: out)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("report.html").path))
    }

    /// A dapt cell interrupted after its first epoch resumes from `prompt.safetensors` to the record
    /// of an uninterrupted run; its trace (initial parameters + steps) replays to the final prompt.
    func testInterruptedDAPTCellResumesToTheSameRecord() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data)
        let plan = GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["dapt"], shots: [2], seeds: [1],
                            all: RecipeOverride(epochs: 3, lr: 0.05, batchSize: 2, ncEvery: 1))
        let cells = try plan.cells()
        let out = dir.appendingPathComponent("interrupted")
        let traceURL = dir.appendingPathComponent("trace.jsonl")
        let folder = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).folder(for: cells[0])

        let first = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out)
        first.trace = try TraceWriter(url: traceURL, append: true)
        var epochs = 0
        first.shouldStop = { epochs += 1; return epochs == 1 }
        XCTAssertThrowsError(try first.run(cells)) { XCTAssertTrue($0 is RunInterrupted, "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.record.path))
        XCTAssertEqual(try ParameterCheckpoint.read(path: folder.checkpoint.path).header.epochsDone, 1)
        let initial = try Data(contentsOf: folder.initial)

        var steppedEpochs = Set<Int>()
        let second = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out) {
            if case .step(let r, _) = $0 { steppedEpochs.insert(r.epoch) }
        }
        second.trace = try TraceWriter(url: traceURL, append: true)
        let resumed = try second.run(cells)
        XCTAssertEqual(steppedEpochs, [1, 2], "only the epochs left were trained")
        XCTAssertEqual(try Data(contentsOf: folder.initial), initial, "a resume keeps the initial parameters")

        let straightOut = dir.appendingPathComponent("straight")
        let straightTrace = dir.appendingPathComponent("straight.jsonl")
        let reference = try ExperimentRunner(modelPath: Self.tiny, root: data, out: straightOut)
        reference.trace = try TraceWriter(url: straightTrace, append: true)
        let straight = try reference.run(cells)
        let (a, b) = (resumed[0], straight[0])
        XCTAssertEqual(a.status, .ok, a.error ?? "")
        XCTAssertEqual(a.spec, b.spec)
        XCTAssertEqual(a.history, b.history)
        XCTAssertEqual(a.evaluations, b.evaluations)
        XCTAssertEqual(a.nc, b.nc)
        XCTAssertEqual(a.ncHistory, b.ncHistory)
        XCTAssertEqual(a.ncHistory.map(\.epoch), [1, 2, 3])
        XCTAssertEqual(a.accuracy, b.accuracy)
        let straightFolder = reference.folder(for: cells[0])
        let final = try ParameterCheckpoint.read(path: folder.checkpoint.path)
        XCTAssertEqual(final.parameters, try ParameterCheckpoint.read(path: straightFolder.checkpoint.path).parameters)
        XCTAssertEqual(try Data(contentsOf: straightFolder.initial), initial)
        // The interrupted run's trace, continued by the resume, is the uninterrupted run's.
        XCTAssertEqual(try TraceWriter.read(url: traceURL), try TraceWriter.read(url: straightTrace))

        // Replay: the initial parameters and the trace's batches, crops and learning rates give the final prompt.
        let store = second.store
        let (items, selection, loaded) = try store.items(FeatureRequest(dataset: .dtd, split: .train,
                                                                        selection: SelectionOptions(shots: 2, seed: 1), views: 1))
        let images = AugmentedImages(items: items, classNames: selection.classNames, source: loaded.images)
        let protoFile = try XCTUnwrap(try prototypeFiles(out).first)
        let prototypes = try XCTUnwrap(try ParameterCheckpoint.readParameters(path: protoFile.path)["prototypes"])
        let tuner = try PromptTuner(model: second.model, tokenizer: second.tokenizer, data: .images(images), config: final.header.config,
                                    initialParameters: try ParameterCheckpoint.readParameters(path: folder.initial.path),
                                    prototypes: prototypes)
        for s in try TraceWriter.read(url: traceURL) {
            let batch = try tuner.loadBatch(s.indices, epoch: s.epoch)
            XCTAssertEqual(batch.augmentations, s.augmentations)
            XCTAssertEqual(batch.labels, s.labels)
            let value = try tuner.step(batch, lr: s.lr)
            XCTAssertEqual(value.total, s.loss)
        }
        XCTAssertEqual(tuner.parameters, final.parameters)
    }
}
