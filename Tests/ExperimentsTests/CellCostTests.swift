import Foundation
import TensorCore
import TestSupport
import XCTest
@testable import Experiments

/// What a cell costs before it runs (issue 20): rates measured once per machine and model and
/// kept in a file, the cost model read from them, cached features, and the estimate against a run.
final class CellCostTests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path

    func setUpGrid(_ plans: [GridPlan]) throws -> (runner: ExperimentRunner, cells: [RunSpec], rates: URL) {
        let dir = try makeTempDir(self, prefix: "cellcost")
        try makeSyntheticDTD(in: dir.appendingPathComponent("data"))
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("data"), out: dir.appendingPathComponent("out"))
        return (runner, try plans.flatMap { try $0.cells() }, CostEstimator.defaultRatesURL(results: runner.results))
    }

    func fewShot(_ methods: [String], shots: Int = 2, epochs: Int = 3) -> GridPlan {
        GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: methods, shots: [shots], seeds: [1],
                 all: RecipeOverride(epochs: epochs, batchSize: 2, views: 2))
    }

    /// The first estimate measures and writes the rates file; a later one (another estimator, as
    /// a later `--list` would be) measures nothing, leaves the file as it is and gives the same numbers.
    func testRatesAreMeasuredOnceAndReused() throws {
        let (runner, cells, rates) = try setUpGrid([fewShot(["zeroshot", "linear-probe", "coop", "vpt"])])
        let first = CostEstimator(runner: runner, rates: rates)
        let a = try first.estimate(cells)
        XCTAssertTrue(first.measured.contains("image tower"), "\(first.measured)")
        XCTAssertTrue(first.measured.contains("decoding dtd"), "\(first.measured)")
        XCTAssertTrue(first.measured.contains("linear probe"), "\(first.measured)")
        let bytes = try Data(contentsOf: rates)
        let entry = try XCTUnwrap(try RatesFile.read(rates).entry(RatesKey.current(modelDigest: runner.store.modelDigest, precision: nil)))
        XCTAssertEqual(entry.methods.count, 3, "zeroshot, coop and vpt: \(entry.methods.map(\.key))")
        XCTAssertNotNil(entry.method(try XCTUnwrap(entry.methods.first { $0.key.hasPrefix("vpt") }).key)?.promptedEncode)

        let second = CostEstimator(runner: runner, rates: rates)
        let b = try second.estimate(cells)
        XCTAssertEqual(second.measured, [], "everything came from the file")
        XCTAssertEqual(try Data(contentsOf: rates), bytes, "the rates file is untouched")
        XCTAssertEqual(a, b)
        _ = try second.featuresJob(cells)
        XCTAssertEqual(second.measured, [])

        // More epochs change no rate: nothing is measured, and the estimate grows.
        let longer = try fewShot(["coop"], epochs: 9).cells()
        let c = try second.estimate(longer)
        XCTAssertEqual(second.measured, [])
        XCTAssertGreaterThan(c[0].trainSeconds, b[2].trainSeconds)
    }

    /// The cost model read from the file: with a step of K seconds and nothing else, a cell trains
    /// for epochs x steps per epoch x K seconds, so it grows with the epochs and the class count.
    func testEstimateFollowsTheRates() throws {
        let baseToNovel = GridPlan(protocolKind: .baseToNovel, datasets: ["dtd"], methods: ["coop"], shots: [2], seeds: [1],
                                   all: RecipeOverride(epochs: 3, batchSize: 2, views: 2))
        let (runner, cells, rates) = try setUpGrid([fewShot(["coop"]), baseToNovel, fewShot(["coop"], epochs: 6)])
        _ = try CostEstimator(runner: runner, rates: rates).estimate(cells)
        var file = try RatesFile.read(rates)
        XCTAssertEqual(file.entries.count, 1)
        XCTAssertEqual(file.entries[0].methods.count, 1, "one coop configuration: batch 2 on cached features")
        XCTAssertEqual(file.entries[0].methods[0].points.map(\.classes).sorted(), [2, 4], "the grid's smallest and largest class counts")
        for i in file.entries[0].methods[0].points.indices {
            var p = file.entries[0].methods[0].points[i]
            p.stepSeconds = Double(p.classes)
            p.setupSeconds = 0
            p.classifier.seconds = 0
            file.entries[0].methods[0].points[i] = p
        }
        file.entries[0].methods[0].epochSeconds = 0
        try writeJSON(file, to: rates)
        let estimator = CostEstimator(runner: runner, rates: rates)
        let e = try estimator.estimate(cells)
        XCTAssertEqual(estimator.measured, [])
        // Few-shot: 2 shots x 4 classes = 8 images, batch 2: 4 steps of 4 s per epoch.
        XCTAssertEqual(e[0].trainSeconds, 3 * 4 * 4, accuracy: 1e-9)
        // Base-to-novel: 2 shots of the 2 base classes: 2 steps of 2 s per epoch.
        XCTAssertEqual(e[1].trainSeconds, 3 * 2 * 2, accuracy: 1e-9)
        XCTAssertEqual(e[2].trainSeconds, 6 * 4 * 4, accuracy: 1e-9)
        // Between and beyond the measured counts, on the line through them.
        let m = file.entries[0].methods[0]
        XCTAssertEqual(m.at(3) { $0.stepSeconds }, 3, accuracy: 1e-12)
        XCTAssertEqual(m.at(100) { $0.stepSeconds }, 100, accuracy: 1e-9)
        for x in e { XCTAssertEqual(x.seconds, x.featureSeconds + x.trainSeconds + x.evaluationSeconds, accuracy: 1e-9) }
    }

    /// Features made by `prepareFeatures` are found cached: the estimate encodes nothing more.
    func testPreparedFeaturesCostNothing() throws {
        let (runner, cells, rates) = try setUpGrid([fewShot(["zeroshot", "coop"])])
        let estimator = CostEstimator(runner: runner, rates: rates)
        let before = try estimator.estimate(cells)
        XCTAssertEqual(before.map(\.uncachedFeatureFiles), [2, 2], "the training draw (views) and the test set")
        XCTAssertTrue(before.allSatisfy { $0.featureSeconds > 0 })
        let job = try estimator.featuresJob(cells)
        // The test set is one file for both cells: the job encodes it once.
        XCTAssertLessThan(job.seconds, before[0].featureSeconds + before[1].featureSeconds)
        XCTAssertGreaterThan(job.seconds, 0)
        try runner.prepareFeatures(cells)
        let after = try estimator.estimate(cells)
        XCTAssertEqual(after.map(\.uncachedFeatureFiles), [0, 0])
        XCTAssertEqual(after.map(\.featureSeconds), [0, 0])
        XCTAssertEqual(try estimator.featuresJob(cells).seconds, 0)
        XCTAssertEqual(after.map(\.trainSeconds), before.map(\.trainSeconds))
    }

    /// The estimate of a cell's training against its run: within a factor of 5 either way (a model
    /// without the epochs, here 30, or the steps per epoch would be far outside). The rates are
    /// measured just before the run and again just after it (a machine shared with other work
    /// changes speed), and the run must lie within the factor of one of them. The peak memory is
    /// above the process's own and below the machine's.
    func testEstimateIsNearARealRun() throws {
        // One thread: on a machine shared with other work, threads that spin-wait for each other
        // slow a run by far more than the load.
        let threads = Compute.threads
        Compute.threads = 1
        defer { Compute.threads = threads }
        let (runner, cells, rates) = try setUpGrid([fewShot(["coop"], shots: 4, epochs: 30), fewShot(["vpt"], shots: 4, epochs: 8)])
        let before = try CostEstimator(runner: runner, rates: rates).estimate(cells)
        let records = try runner.run(cells)
        try FileManager.default.removeItem(at: rates)
        let estimator = CostEstimator(runner: runner, rates: rates)
        let after = try estimator.estimate(cells)
        let processBytes = try XCTUnwrap(try estimator.currentRates()?.processBytes)
        for ((b, a), r) in zip(zip(before, after), records) {
            XCTAssertEqual(r.status, .ok, r.error ?? "")
            let (low, high) = (min(a.trainSeconds, b.trainSeconds), max(a.trainSeconds, b.trainSeconds))
            print("\(r.spec.identifier): training estimated \(b.trainSeconds) s before the run, \(a.trainSeconds) s after; ran \(r.timings.training) s; peak \(a.peakBytes >> 20) MiB")
            XCTAssertTrue(r.timings.training >= 0.2 * low && r.timings.training <= 5 * high,
                          "\(r.spec.identifier): training estimated \(b.trainSeconds) s and \(a.trainSeconds) s, ran \(r.timings.training) s")
            XCTAssertGreaterThan(a.peakBytes, processBytes)
            XCTAssertLessThan(a.peakBytes, Int(ProcessInfo.processInfo.physicalMemory))
        }
    }

    /// Slurm's limits: the largest cell with the stated margins.
    func testSlurmLimits() {
        let gib = 1 << 30
        let cells = [CellEstimate(featureSeconds: 0, trainSeconds: 600, evaluationSeconds: 0, peakBytes: gib, uncachedFeatureFiles: 0),
                     CellEstimate(featureSeconds: 10, trainSeconds: 20, evaluationSeconds: 0, peakBytes: gib / 2, uncachedFeatureFiles: 1)]
        let limits = CostEstimator.slurmLimits(for: cells)
        XCTAssertEqual(limits.timeMinutes, 20, "600 s x 1.5 + 5 min")
        XCTAssertEqual(limits.memoryMB, 1792, "1024 MiB x 1.25 + 512 MiB")
        XCTAssertEqual(CostEstimator.slurmLimits(for: []).timeMinutes, 5)
    }

    /// Which class counts a method is measured at.
    func testClassCountsToMeasure() {
        XCTAssertEqual(CostEstimator.classCountsToMeasure(measured: [], needed: [10, 100, 47]), [10, 100])
        XCTAssertEqual(CostEstimator.classCountsToMeasure(measured: [], needed: [37]), [37])
        XCTAssertEqual(CostEstimator.classCountsToMeasure(measured: [10, 100], needed: [10, 50, 150]), [], "within twice the range: the line")
        XCTAssertEqual(CostEstimator.classCountsToMeasure(measured: [10, 100], needed: [1000]), [1000])
        XCTAssertEqual(CostEstimator.classCountsToMeasure(measured: [10, 100], needed: [2]), [2])
        XCTAssertEqual(CostEstimator.classCountsToMeasure(measured: [37], needed: [37]), [])
        XCTAssertEqual(CostEstimator.classCountsToMeasure(measured: [37], needed: [10, 37]), [10], "a second point for a line")
    }
}
