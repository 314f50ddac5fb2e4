import Analysis
import Datasets
import Experiments
import Foundation
import TestSupport
import XCTest

final class RunnerTests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path

    func plan() -> GridPlan {
        GridPlan(protocolKind: .baseToNovel, datasets: ["dtd"], methods: ["zeroshot", "coop"], shots: [2], seeds: [1, 2],
                 all: RecipeOverride(epochs: 3, batchSize: 2, views: 2, ncEvery: 1))
    }

    /// A base-to-novel grid killed in the middle of its last cell resumes without redoing the
    /// finished cells, and ends with the records of an uninterrupted run.
    func testInterruptedGridResumesWithoutRedoingFinishedCells() throws {
        let dir = try makeTempDir(self)
        try makeSyntheticDTD(in: dir.appendingPathComponent("data"))
        let cells = try plan().cells()
        XCTAssertEqual(cells.map(\.method), ["zeroshot", "coop", "zeroshot", "coop"])

        // Interrupted: the second coop cell stops after its 2nd epoch (the 5th epoch of the grid).
        let out = dir.appendingPathComponent("interrupted")
        var epochs = 0
        let first = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("data"), out: out)
        first.shouldStop = { epochs += 1; return epochs == 5 }
        XCTAssertThrowsError(try first.run(cells)) { XCTAssertTrue($0 is RunInterrupted, "\($0)") }
        let folders = cells.map { first.folder(for: $0) }
        let finished = try folders.prefix(3).map { try Data(contentsOf: $0.record) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folders[3].record.path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: folders[3].checkpoint.path))

        // Resumed: the three finished cells are skipped, the fourth runs only its last epoch.
        var skipped: [Int] = [], started: [Int] = [], steppedEpochs = Set<Int>()
        let second = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("data"), out: out) { event in
            switch event {
            case .cellSkipped(let i, _, _, _): skipped.append(i)
            case .cellStarted(let i, _, _, _): started.append(i)
            case .step(let r, _): steppedEpochs.insert(r.epoch)
            default: break
            }
        }
        let records = try second.run(cells)
        XCTAssertEqual(skipped, [0, 1, 2])
        XCTAssertEqual(started, [3])
        XCTAssertEqual(steppedEpochs, [2], "only the third epoch was left to train")
        XCTAssertEqual(try folders.prefix(3).map { try Data(contentsOf: $0.record) }, finished, "finished records are untouched")

        // The same grid without interruption gives the same numbers.
        let reference = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("data"),
                                             out: dir.appendingPathComponent("straight")).run(cells)
        XCTAssertEqual(records.count, 4)
        for (a, b) in zip(records, reference) {
            XCTAssertEqual(a.status, .ok, a.error ?? "")
            XCTAssertEqual(a.spec, b.spec)
            XCTAssertEqual(a.history, b.history)
            XCTAssertEqual(a.evaluations, b.evaluations)
            XCTAssertEqual(a.nc, b.nc)
            XCTAssertEqual(a.ncHistory, b.ncHistory)
        }

        // What a base-to-novel record holds.
        let coop = records[3]
        XCTAssertEqual(coop.evaluations.map(\.name), ["base", "novel"])
        XCTAssertEqual(coop.evaluations.map(\.classes), [2, 2])
        XCTAssertEqual(coop.evaluations.map(\.count), [6, 6])
        let (b, n) = (try XCTUnwrap(coop.base), try XCTUnwrap(coop.novel))
        XCTAssertEqual(try XCTUnwrap(coop.hm), 2 * b * n / (b + n), accuracy: 1e-12)
        XCTAssertEqual(coop.history.count, 3)
        XCTAssertEqual(coop.ncHistory.map(\.epoch), [1, 2, 3])
        XCTAssertEqual(Set(coop.nc.keys), ["train", "base", "novel"])
        XCTAssertEqual(coop.fewShotSource, "dassl")
        XCTAssertNotNil(coop.digests["train_features"])
        // Training counts of the draw (2 shots of each base class), shot groups on the base set only.
        XCTAssertEqual(coop.trainCounts, ["banded": 2, "blotchy": 2])
        XCTAssertNotNil(coop.evaluations[0].manyShot)
        XCTAssertNil(coop.evaluations[1].manyShot, "novel classes were not trained on: no group")
        XCTAssertEqual(coop.shotGroupsRule, ShotGroups.rule)
        XCTAssertNotNil(coop.digests["train_inputs"])
        XCTAssertEqual(records[0].history.count, 0, "zero-shot does not train")
        // Features are shared: one training draw per seed (augmented for coop, plain for zero-shot), one test file per subset.
        let featuresFolder = ResultsFolder(out).features.appendingPathComponent(try modelDigest(Self.tiny))
        let files = try FileManager.default.contentsOfDirectory(atPath: featuresFolder.path).filter { $0.hasSuffix(".safetensors") }
        XCTAssertEqual(Set(files), ["dtd-train-base-2shot-seed1.safetensors", "dtd-train-base-2shot-seed1-2views.safetensors",
                                    "dtd-train-base-2shot-seed2.safetensors", "dtd-train-base-2shot-seed2-2views.safetensors",
                                    "dtd-test-base.safetensors", "dtd-test-new.safetensors"])
        // Asking for one cell by number runs (here: finds) just that one.
        XCTAssertEqual(try second.run(cells, only: [2]).map(\.spec), [cells[2]])
        XCTAssertThrowsError(try second.run(cells, only: [9])) { XCTAssertTrue("\($0)".contains("no cell 9"), "\($0)") }
    }

    /// A cell that fails is recorded with its error and the grid goes on; the report lists it.
    /// Class-specific contexts and the linear probe report the base classes they know, with a warning.
    func testFailingCellIsRecordedAndTheGridGoesOn() throws {
        let dir = try makeTempDir(self)
        try makeSyntheticDTD(in: dir.appendingPathComponent("data"))
        // coop's second epoch (after the warm-up at 1e-5) at an absurd learning rate: a non-finite prompt.
        let plan = GridPlan(protocolKind: .baseToNovel, datasets: ["dtd"], methods: ["coop-csc", "linear-probe", "coop"], shots: [2],
                            seeds: [1], all: RecipeOverride(epochs: 2, batchSize: 2, views: 1),
                            overrides: ["coop": RecipeOverride(lr: 1e38)])
        let out = dir.appendingPathComponent("out")
        let records = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("data"), out: out).run(try plan.cells())
        XCTAssertEqual(records.map(\.status), [.ok, .ok, .failed], records.map { $0.error ?? "" }.joined(separator: "; "))
        XCTAssertTrue(records[2].error?.contains("learning rate") ?? false, records[2].error ?? "")
        XCTAssertEqual(records[2].model, "openai.pt", "a failed record names its model")
        XCTAssertEqual(records[2].digests["model"], try modelDigest(Self.tiny))
        // Class-specific contexts (one per base class) and the probe report base, and say why novel is missing.
        for r in records.prefix(2) {
            XCTAssertEqual(r.evaluations.map(\.name), ["base"], r.spec.method)
            XCTAssertEqual(r.base, r.evaluations.first?.accuracy)
            XCTAssertNil(r.hm)
            XCTAssertEqual(r.accuracy, r.base, "the headline of a cell without novel is its base accuracy")
            XCTAssertTrue(r.warnings.contains { $0.hasPrefix("novel:") && $0.contains("classes it was trained on") }, "\(r.warnings)")
        }
        XCTAssertEqual(records[0].history.count, 2, "coop-csc trained")
        let summary = try writeReport(directory: out)
        XCTAssertEqual(summary.written.map(\.lastPathComponent), ["results.md", "results.csv", "results.tex", "report.html"])
        let markdown = try String(contentsOf: out.appendingPathComponent("results.md"), encoding: .utf8)
        XCTAssertTrue(markdown.contains("base-to-novel_dtd_coop_2shot_seed1"), markdown)
        // A second run retries the failed cell and skips the others.
        var started: [Int] = []
        _ = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("data"), out: out) {
            if case .cellStarted(let i, _, _, _) = $0 { started.append(i) }
        }.run(try plan.cells())
        XCTAssertEqual(started, [2])
    }
}
