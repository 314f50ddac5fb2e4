import CLIP
import Datasets
import Experiments
import Foundation
import Imaging
import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// `augment: per-iteration` for the text methods: CoOp's fresh crop and flip of every image at
/// every step through the frozen image tower. The plan key and its checks, the cell's identity,
/// and a kgcoop cell end to end: resumed bit for bit, traced with each image's crop and flip, and
/// replayed from the trace.
final class AugmentPerIterationTests: XCTestCase {
    static let tiny = RunnerTests.tiny

    func testPlanKeyOverridesAndCellIdentity() throws {
        let plan = try GridPlan.read(yaml: """
            datasets: [dtd]
            methods: [coop, kgcoop, dapt]
            shots: [2]
            seeds: [1]
            augment: per-iteration
            overrides:
              coop: {augment: views}
              dapt: {augment: per-iteration}
            """, source: "test")
        XCTAssertEqual(plan.all.augment, .perIteration)
        XCTAssertEqual(plan.overrides["coop"]?.augment, .views)
        let cells = try plan.cells()
        let by = Dictionary(uniqueKeysWithValues: cells.map { ($0.method, $0) })
        XCTAssertEqual(by["coop"]?.recipe.augment, .views)
        XCTAssertEqual(by["coop"]?.recipe.views, Recipes.defaultViews)
        XCTAssertEqual(by["kgcoop"]?.recipe.augment, .perIteration)
        XCTAssertEqual(by["kgcoop"]?.recipe.views, 1, "no cached views to make")
        // dapt augments every iteration whatever the plan says: one cell either way.
        XCTAssertEqual(by["dapt"]?.recipe.augment, .views)
        XCTAssertEqual(by["dapt"]?.identifier, "few-shot_dtd_dapt_2shot_seed1")
        XCTAssertEqual(by["coop"]?.identifier, "few-shot_dtd_coop_2shot_seed1")
        XCTAssertEqual(by["kgcoop"]?.identifier, "few-shot_dtd_kgcoop_2shot_seed1_per-iteration")

        // The spec says so only when it is not the default: records of cached-view cells read as before.
        let views = String(decoding: try JSONEncoder().encode(by["coop"]!), as: UTF8.self)
        XCTAssertFalse(views.contains("augment"), views)
        let perIteration = try JSONEncoder().encode(by["kgcoop"]!)
        XCTAssertTrue(String(decoding: perIteration, as: UTF8.self).contains("\"augment\":\"per-iteration\""))
        XCTAssertEqual(try JSONDecoder().decode(RunSpec.self, from: perIteration), by["kgcoop"])
        var other = by["kgcoop"]!
        other.recipe.augment = .views
        XCTAssertNotEqual(other, by["kgcoop"])

        // The plan written back reads to the same plan.
        XCTAssertEqual(try GridPlan.read(yaml: try plan.yaml(), source: "round trip"), plan)
    }

    func testPlanKeyTypeChecks() throws {
        func message(_ yaml: String) -> String {
            do { _ = try GridPlan.read(yaml: yaml, source: "p.yaml"); return "" } catch { return "\(error)" }
        }
        let base = "datasets: [dtd]\nmethods: [coop]\n"
        XCTAssertTrue(message(base + "augment: sometimes\n").contains("line 3: 'augment' is sometimes, but it must be views or per-iteration"),
                      message(base + "augment: sometimes\n"))
        XCTAssertTrue(message(base + "augment: 4\n").contains("must be views or per-iteration"))
        XCTAssertTrue(message(base + "augment: [views]\n").contains("must be views or per-iteration"))
        XCTAssertTrue(message(base + "overrides:\n  coop: {augment: fresh}\n")
            .contains("line 4: 'augment' in overrides of coop is fresh, but it must be views or per-iteration"))
        XCTAssertTrue(message(base + "augmnet: views\n").contains("did you mean augment?"))
        XCTAssertEqual(message(base + "augment: \"per-iteration\"\n"), "")
        XCTAssertEqual(message(base + "overrides:\n  coop: {augment: views}\n"), "")
    }

    /// A kgcoop cell on per-iteration augmentation, interrupted after its first epoch, resumes from
    /// `prompt.safetensors` to the record of an uninterrupted run; its trace holds each image's crop
    /// and flip (no cached views), and replaying the trace's crops from the initial parameters gives
    /// every traced loss and the final prompt.
    func testInterruptedPerIterationCellResumesAndReplays() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data)
        let plan = GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["kgcoop"], shots: [2], seeds: [1],
                            all: RecipeOverride(epochs: 3, lr: 0.05, batchSize: 2, ncEvery: 1, augment: .perIteration))
        let cells = try plan.cells()
        let out = dir.appendingPathComponent("interrupted")
        let traceURL = dir.appendingPathComponent("trace.jsonl")
        let folder = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).folder(for: cells[0])
        XCTAssertTrue(folder.url.path.hasSuffix("_per-iteration"))

        let first = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out)
        first.trace = try TraceWriter(url: traceURL, append: true)
        var epochs = 0
        first.shouldStop = { epochs += 1; return epochs == 1 }
        XCTAssertThrowsError(try first.run(cells)) { XCTAssertTrue($0 is RunInterrupted, "\($0)") }
        XCTAssertEqual(try ParameterCheckpoint.read(path: folder.checkpoint.path).header.epochsDone, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.legacyCheckpoint.path), "nothing writes the old format")
        let initial = try Data(contentsOf: folder.initial)

        var steppedEpochs = Set<Int>()
        let second = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out) {
            if case .step(let r, _) = $0 { steppedEpochs.insert(r.epoch) }
        }
        second.trace = try TraceWriter(url: traceURL, append: true)
        let resumed = try second.run(cells)
        XCTAssertEqual(steppedEpochs, [1, 2], "only the epochs left were trained")

        let straightOut = dir.appendingPathComponent("straight")
        let straightTrace = dir.appendingPathComponent("straight.jsonl")
        let reference = try ExperimentRunner(modelPath: Self.tiny, root: data, out: straightOut)
        reference.trace = try TraceWriter(url: straightTrace, append: true)
        let straight = try reference.run(cells)
        let (a, b) = (resumed[0], straight[0])
        XCTAssertEqual(a.status, .ok, a.error ?? "")
        XCTAssertEqual(a.spec.recipe.augment, .perIteration)
        XCTAssertEqual(a.spec, b.spec)
        XCTAssertEqual(a.history, b.history)
        XCTAssertEqual(a.history.count, 3)
        XCTAssertEqual(Set(a.history[0].terms.keys), ["ce", "kg"])
        XCTAssertEqual(a.evaluations, b.evaluations)
        XCTAssertEqual(a.nc, b.nc)
        XCTAssertEqual(a.ncHistory, b.ncHistory)
        XCTAssertEqual(a.ncHistory.map(\.epoch), [1, 2, 3])
        let straightFolder = reference.folder(for: cells[0])
        let final = try ParameterCheckpoint.read(path: folder.checkpoint.path)
        XCTAssertEqual(final.parameters, try ParameterCheckpoint.read(path: straightFolder.checkpoint.path).parameters)
        XCTAssertEqual(final.parameters.names, [ParameterName.textContext])
        XCTAssertEqual(try Data(contentsOf: straightFolder.initial), initial)
        let steps = try TraceWriter.read(url: traceURL)
        XCTAssertEqual(steps, try TraceWriter.read(url: straightTrace))

        let (items, selection, loaded) = try second.store.items(FeatureRequest(dataset: .dtd, split: .train,
                                                                               selection: SelectionOptions(shots: 2, seed: 1), views: 1))
        XCTAssertEqual(items.count, 8)
        // Every step drew a crop and flip per image (fresh each epoch), and no cached view.
        let perEpoch = items.count / 2
        XCTAssertEqual(steps.count, 3 * perEpoch)
        for s in steps {
            XCTAssertNil(s.views)
            XCTAssertEqual(s.augmentations?.count, 2)
            XCTAssertEqual(s.cell, cells[0].identifier)
        }
        func crops(epoch: Int) -> [Int: AugmentationRecord] {
            var m: [Int: AugmentationRecord] = [:]
            for s in steps where s.epoch == epoch { for (i, n) in s.indices.enumerated() { m[n] = s.augmentations![i] } }
            return m
        }
        XCTAssertEqual(crops(epoch: 0).count, items.count)
        XCTAssertNotEqual(crops(epoch: 0), crops(epoch: 1), "each epoch draws new crops")

        // Replay from the trace alone: decode each image, apply the traced crop and flip, step.
        let images = AugmentedImages(items: items, classNames: selection.classNames, source: loaded.images)
        let tuner = try PromptTuner(model: second.model, tokenizer: second.tokenizer, data: .images(images), config: final.header.config,
                                    initialParameters: try ParameterCheckpoint.readParameters(path: folder.initial.path))
        let r = second.model.config.imageResolution
        let transform = CoOpTrainTransform(size: r)
        for s in steps {
            var pixels: [Float] = []
            for (i, n) in s.indices.enumerated() {
                let a = s.augmentations![i]
                let image = try loaded.images.image(for: items[n])
                pixels += transform(image, TrainAugmentation(crop: CropBox(top: a.top, left: a.left, height: a.height, width: a.width),
                                                             flip: a.flip)).data
            }
            let batch = TrainingBatch(indices: s.indices, labels: s.labels, pixels: Tensor(shape: [s.indices.count, 3, r, r], data: pixels),
                                      augmentations: s.augmentations)
            XCTAssertEqual(try tuner.step(batch, lr: s.lr).total, s.loss)
        }
        XCTAssertEqual(tuner.parameters, final.parameters)

        // The same method on cached views is another cell, in another folder, with other numbers.
        var viewsPlan = plan
        viewsPlan.all.augment = nil
        let viewsCells = try viewsPlan.cells()
        XCTAssertNotEqual(reference.folder(for: viewsCells[0]).url, straightFolder.url)
        let views = try reference.run(viewsCells)
        XCTAssertEqual(views[0].status, .ok, views[0].error ?? "")
        XCTAssertNotEqual(views[0].history, b.history)
        XCTAssertEqual(try reference.run(cells)[0].history, b.history, "the per-iteration cell's record is kept beside it")
        // A report keeps them apart: one row each, never averaged together.
        let table = renderMarkdownTables(records: try loadRunRecords(under: straightOut))
        XCTAssertTrue(table.contains("| kgcoop |"), table)
        XCTAssertTrue(table.contains("| kgcoop (per-iteration) |"), table)
    }
}
