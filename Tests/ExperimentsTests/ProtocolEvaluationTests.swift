import Datasets
import Experiments
import Foundation
import TestSupport
import XCTest

/// Checks before a grid runs and evaluation as the papers do it (issue 16, item 3): missing
/// datasets listed at once, class-specific contexts reported where they can be, ImageNet's
/// variants scored by ImageNet's classifier restricted to their classes, targets in the papers' order.
final class ProtocolEvaluationTests: XCTestCase {
    static let tiny = RunnerTests.tiny

    /// Every missing training set and target is named in one error before any cell runs.
    func testMissingTargetsAreListedBeforeAnythingRuns() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticImageNet(in: data, variants: [.imageNetV2, .imageNetA])
        // Domain generalisation to the four variants (two are not there), and a training set that is not there.
        let cells = try GridPlan(protocolKind: .domainGeneralization, datasets: ["imagenet", "caltech101"], methods: ["zeroshot", "coop"],
                                 shots: [1], seeds: [1]).cells()
        var events = 0
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out) { _ in events += 1 }
        XCTAssertThrowsError(try runner.run(cells)) { error in
            XCTAssertTrue(error is PlanError, "\(error)")
            let message = "\(error)"
            for missing in ["caltech101", "imagenet_sketch", "imagenet_r"] { XCTAssertTrue(message.contains(missing), message) }
            for present in ["imagenetv2:", "imagenet_a:", "imagenet:"] { XCTAssertFalse(message.contains(present), message) }
            XCTAssertTrue(message.contains("3 of the grid's 6 datasets"), message)
            XCTAssertTrue(message.contains("nothing ran"), message)
        }
        XCTAssertEqual(events, 0, "no cell started")
        XCTAssertFalse(FileManager.default.fileExists(atPath: ResultsFolder(out).runs.path), "no cell folder was made")
    }

    /// Domain generalisation: ImageNet-A is scored on its classes by ImageNet's classifier
    /// restricted to them, for every method (the linear probe and class-specific contexts too);
    /// targets given in any order are evaluated in the papers' order.
    func testImageNetVariantsAreScoredOnTheirClassesByEveryMethod() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        let subset = [1, 3, 4]
        try makeSyntheticImageNet(in: data, variants: [.imageNetV2, .imageNetA], subset: subset)
        let plan = GridPlan(protocolKind: .domainGeneralization, datasets: ["imagenet"], targets: ["imagenet_a", "imagenetv2"],
                            methods: ["zeroshot", "linear-probe", "coop", "coop-csc"], shots: [2], seeds: [1],
                            all: RecipeOverride(epochs: 2, lr: 0.05, batchSize: 2, views: 1))
        let cells = try plan.cells()
        XCTAssertEqual(cells[0].targets, ["imagenetv2", "imagenet_a"], "the papers' order (V2, Sketch, A, R)")
        let records = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).run(cells)
        let imagenet = try loadDataset(.imageNet, root: data)
        for r in records {
            let m = r.spec.method
            XCTAssertEqual(r.status, .ok, "\(m): \(r.error ?? "")")
            XCTAssertEqual(r.evaluations.map(\.name), ["imagenet", "imagenetv2", "imagenet_a"], m)
            XCTAssertNil(r.targetsMissing, m)
            let source = r.evaluations[0], a = r.evaluations[2]
            XCTAssertEqual(a.classes, subset.count, m)
            XCTAssertEqual(a.count, 2 * subset.count, m)
            XCTAssertEqual(r.evaluations[1].classes, 5, m)
            XCTAssertEqual(try XCTUnwrap(r.accuracy), (r.evaluations[1].accuracy + a.accuracy) / 2, accuracy: 1e-12, m)
            // A's images are copies of ImageNet's val images of its classes: choosing among fewer
            // classes can only keep or gain each image, so per class A is at least ImageNet's.
            for k in subset {
                let name = imagenet.classNames[k]
                XCTAssertGreaterThanOrEqual(try XCTUnwrap(a.perClassAccuracy[name]), try XCTUnwrap(source.perClassAccuracy[name]), "\(m) \(name)")
            }
            // V2 holds the same images under all the classes: the same numbers as ImageNet's own test.
            XCTAssertEqual(r.evaluations[1].accuracy, source.accuracy, accuracy: 1e-12, m)
            XCTAssertNotNil(r.nc["imagenet_a"], m)
        }
    }

    /// Cross-dataset: class-specific contexts and the linear probe report the source's accuracy,
    /// mark the targets they cannot classify, and say why; coop beside them reports every target.
    func testClassBoundMethodsReportTheSourceInCrossDataset() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticImageNet(in: data)
        try makeSyntheticDTD(in: data)
        let plan = GridPlan(protocolKind: .crossDataset, datasets: ["imagenet"], targets: ["dtd"],
                            methods: ["coop-csc", "linear-probe", "coop"], shots: [2], seeds: [1],
                            all: RecipeOverride(epochs: 1, batchSize: 2, views: 1))
        let records = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).run(try plan.cells())
        for r in records { XCTAssertEqual(r.status, .ok, "\(r.spec.method): \(r.error ?? "")") }
        for r in records.prefix(2) {
            XCTAssertEqual(r.evaluations.map(\.name), ["imagenet"], r.spec.method)
            XCTAssertEqual(r.targetsMissing, ["dtd"], r.spec.method)
            XCTAssertNil(r.accuracy, "no target, no mean over targets")
            XCTAssertTrue(r.warnings.contains { $0.hasPrefix("dtd:") && $0.contains("classes it was trained on") }, "\(r.warnings)")
        }
        XCTAssertEqual(records[2].evaluations.map(\.name), ["imagenet", "dtd"])
        XCTAssertNil(records[2].targetsMissing)
        XCTAssertEqual(records[2].accuracy, records[2].evaluations[1].accuracy)
    }
}
