import Datasets
import Experiments
import Features
import Foundation
import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// Experiments' errors carry a kind a caller can switch on; one case per kind reached here.
final class ExperimentErrorKindTests: XCTestCase {
    static let tiny = RunnerTests.tiny
    static let features = repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path

    func kind(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> ExperimentError.Kind? {
        do { try body() } catch let e as ExperimentError { return e.kind } catch {
            XCTFail("not an ExperimentError: \(error)", file: file, line: line)
            return nil
        }
        XCTFail("no error", file: file, line: line)
        return nil
    }

    func testTrainingJobKinds() throws {
        let dir = try makeTempDir(self)
        var coop = Method.coop
        coop.prompt.contextLength = 4
        func job(_ method: Method, _ folder: String, resume: Bool) -> TrainingJob {
            TrainingJob(modelPath: Self.tiny, featuresPath: Self.features, method: method, epochs: 1, learningRate: 0.002,
                        batchSize: 4, seed: 1, template: nil, folder: RunFolder(dir.appendingPathComponent(folder)), resume: resume)
        }
        let taken = RunFolder(dir.appendingPathComponent("taken"))
        try taken.create()
        try Data("a checkpoint".utf8).write(to: taken.checkpoint)
        XCTAssertEqual(kind { _ = try job(coop, "taken", resume: false).prepare() }, .outputExists,
                       "training into a folder that holds a checkpoint, without resuming")
        XCTAssertEqual(kind { _ = try job(coop, "empty", resume: true).prepare() }, .noCheckpoint)
        XCTAssertEqual(kind { _ = try job(try Method.named("vpt"), "vpt", resume: false).prepare() }, .notSupported)
        var noModel = job(coop, "no-model", resume: false)
        noModel.modelPath = dir.appendingPathComponent("none.pt").path
        XCTAssertEqual(kind { _ = try noModel.prepare() }, .missingModel)
        XCTAssertEqual(kind { _ = try coop.withTermSettings(weights: ["kgg": 1]) }, .invalidSetting)
    }

    func testEvaluationAndFileKinds() throws {
        let dir = try makeTempDir(self)
        XCTAssertEqual(kind {
            _ = try PromptEvaluationJob(modelPath: Self.tiny, promptPath: nil, images: .features(path: Self.features),
                                        classNames: ["a", "b"]).prepare()
        }, .classMismatch)
        var set = try FeatureSet.read(path: Self.features)
        set.provenance["model_digest"] = "0123"
        XCTAssertEqual(kind { try checkFeatures(set, path: Self.features, modelPath: Self.tiny, digest: "4567") }, .modelMismatch)

        // A dataset whose val split is empty, and one of whose test images is damaged.
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data, val: 0)
        try Data("not a png".utf8).write(to: data.appendingPathComponent("dtd/images/banded/banded_test_0.png"))
        func evaluate(_ split: SplitKind) throws {
            _ = try PromptEvaluationJob(modelPath: Self.tiny, promptPath: nil,
                                        images: .dataset(root: data, dataset: .dtd, split: split, subset: .all)).prepare()
        }
        XCTAssertEqual(kind { try evaluate(.val) }, .missingData)
        XCTAssertEqual(kind { try evaluate(.test) }, .unreadableImage)

        let garbage = dir.appendingPathComponent("record.json")
        try Data("{".utf8).write(to: garbage)
        XCTAssertEqual(kind { _ = try readJSON(RunRecord.self, from: garbage) }, .unreadableFile)

        // A grid's missing dataset is a plan error (exit 64, every missing dataset listed), found
        // before anything runs: not an ExperimentError.
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("nothing"),
                                          out: dir.appendingPathComponent("out"))
        let cells = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["zeroshot"], shots: [1], seeds: [1]).cells()
        XCTAssertThrowsError(try runner.run(cells)) { XCTAssertTrue($0 is PlanError, "\($0)") }
    }
}
