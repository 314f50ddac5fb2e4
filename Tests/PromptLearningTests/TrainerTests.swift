import Features
import CLIP
import Foundation
import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

final class TrainerTests: XCTestCase {
    static let model = try! CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path)
    static let features = try! FeatureSet.read(path: repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path).labeled

    func config(_ method: Method, epochs: Int = 4) -> TrainConfig {
        var o = OptimizerConfig()
        o.learningRate = 0.05
        var m = method
        m.prompt.contextLength = m.prompt.initText == nil ? 4 : m.prompt.contextLength
        return TrainConfig(method: m, optimizer: o, epochs: epochs, batchSize: 8, seed: 11)
    }

    func tuner(_ c: TrainConfig, features: LabeledFeatures = TrainerTests.features) throws -> PromptTuner {
        try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .features(features), config: c)
    }

    func testInterruptedRunResumesToTheSamePrompts() throws {
        for method in [Method.coop, try Method.named("kgcoop+npt")] {
            let c = config(method)
            let full = try tuner(c)
            while !full.isFinished { try full.runEpoch() }

            let url = try makeTempDir(self).appendingPathComponent("prompt.safetensors")
            let first = try tuner(c)
            try first.runEpoch()
            try first.runEpoch()
            try first.checkpoint().write(to: url)
            // "Interrupted": a new process picks the checkpoint up.
            let second = try tuner(c)
            try second.restore(ParameterCheckpoint.read(path: url.path))
            XCTAssertEqual(second.epochsDone, 2)
            while !second.isFinished { try second.runEpoch() }
            XCTAssertEqual(second.parameters, full.parameters, "\(method.name): resumed prompts equal uninterrupted ones bit for bit")
            XCTAssertEqual(second.history, full.history)
            XCTAssertLessThan(full.history.last!.loss, full.history.first!.loss, "\(method.name): the loss goes down")
        }
    }

    func testCheckpointRoundTripAndErrors() throws {
        let t = try tuner(config(.coop, epochs: 2))
        try t.runEpoch()
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("a.safetensors")
        try t.checkpoint().write(to: url)
        let back = try ParameterCheckpoint.read(path: url.path)
        XCTAssertEqual(back, t.checkpoint())
        // Truncated, wrong content, missing: typed errors naming the file.
        let bytes = try Data(contentsOf: url)
        let cut = dir.appendingPathComponent("cut.safetensors"), bad = dir.appendingPathComponent("bad.safetensors")
        try bytes.prefix(bytes.count - 10).write(to: cut)
        try Data("not a prompt".utf8).write(to: bad)
        for (path, kind) in [(cut.path, FileError.Kind.truncated), (bad.path, .wrongFormat), ("/nonexistent.safetensors", .fileNotFound)] {
            XCTAssertThrowsError(try ParameterCheckpoint.read(path: path)) { e in
                XCTAssertEqual((e as? FileError)?.kind, kind, "\(e)")
                XCTAssertTrue("\(e)".hasPrefix(path), "\(e)")
            }
        }
        // Resuming with other settings is refused.
        var other = config(.coop, epochs: 2)
        other.optimizer.learningRate = 0.1
        let t2 = try tuner(other)
        XCTAssertThrowsError(try t2.restore(back)) { XCTAssertTrue("\($0)".contains("other training settings"), "\($0)") }
    }

    func testNonFiniteLossStopsWithoutTouchingThePrompt() throws {
        var c = config(.coop, epochs: 3)
        c.optimizer.learningRate = 1e30  // blows up after the warm-up epoch
        let t = try tuner(c)
        try t.runEpoch()
        var failed = false
        do {
            while !t.isFinished { try t.runEpoch() }
        } catch {
            failed = true
            XCTAssertTrue("\(error)".contains("training stopped") && "\(error)".contains("lower learning rate"), "\(error)")
            XCTAssertTrue(t.context!.data.allSatisfy { $0.isFinite }, "the prompt in memory stays the last good one")
        }
        XCTAssertTrue(failed, "a learning rate of 1e30 must stop training")
    }

    /// Library errors name the value and make sense without the command line.
    func testInvalidSettingsNameTheValue() throws {
        func message(_ c: TrainConfig) -> String {
            do { _ = try tuner(c); return "" }
            catch { return "\(error)" }
        }
        var c = config(.coop)
        c.epochs = 0
        XCTAssertTrue(message(c).contains("epochs must lie in 1...1000000 (got 0)"), message(c))
        c = config(.coop)
        c.batchSize = -2
        XCTAssertTrue(message(c).contains("batch size must be at least 1 (got -2)"), message(c))
        c = config(.kgcoop)
        c.method.prompt.contextLength = 16  // "a photo of a" is 4 tokens
        XCTAssertTrue(message(c).contains("'a photo of a' is 4 tokens but the context length is 16"), message(c))
        for m in [config(.coop, epochs: 0), { var b = config(.coop); b.batchSize = 0; return b }(), c].map(message) {
            XCTAssertFalse(m.isEmpty)
            XCTAssertFalse(m.contains("--"), "a library error names no command-line flag: \(m)")
        }
    }

    func testNPTWithOneClassIsRefused() throws {
        let one = LabeledFeatures(features: Tensor(zeros: [1, 2, Self.model.config.embedDim]), labels: [0, 0], classNames: ["a"])
        XCTAssertThrowsError(try tuner(config(try Method.named("npt")), features: one)) {
            XCTAssertTrue("\($0)".contains("at least 2 classes"), "\($0)")
        }
    }

    func testFeaturesFromAnotherModelAreRefused() throws {
        let wrong = LabeledFeatures(features: Tensor(zeros: [1, 2, 7]), labels: [0, 1], classNames: ["a", "b"])
        XCTAssertThrowsError(try tuner(config(.coop), features: wrong)) {
            XCTAssertTrue("\($0)".contains("made with another model"), "\($0)")
        }
    }

    func testBaseToNovelEvaluationUsesAnyClassNames() throws {
        let t = try tuner(config(.coop, epochs: 1))
        try t.runEpoch()
        let names = Self.features.classNames
        let trained = try t.textFeatures(tokenizer: sharedTokenizer)
        // The any-names path with the training names is the training path.
        XCTAssertLessThan(maxDiff(try t.textFeatures(classNames: names, tokenizer: sharedTokenizer), trained), 1e-6)
        // Novel names: one feature per name, each from its own name (reordering the names reorders the rows).
        let novel = try t.textFeatures(classNames: ["dog", "tulip", "airliner"], tokenizer: sharedTokenizer)
        XCTAssertEqual(novel.shape, [3, Self.model.config.embedDim])
        let reordered = try t.textFeatures(classNames: ["airliner", "dog", "tulip"], tokenizer: sharedTokenizer)
        XCTAssertLessThan(maxDiff(reordered.gatherRows([1, 2, 0]), novel), 1e-6)
        XCTAssertGreaterThan(maxDiff(novel.gatherRows([0]), novel.gatherRows([1])), 1e-3, "different names give different features")
    }

    /// Training fits the training features: train accuracy rises above the initial prompt's and
    /// the loss falls. (The synthetic features are separable, but the tiny model's text tower
    /// reaches only part of them through the prompt: 0.25 -> 0.35 here, loss 2.70 -> 1.44.)
    func testTrainingImprovesTrainAccuracy() throws {
        let t = try tuner(config(.coop, epochs: 20))
        let images = Self.features.view(0), labels = Self.features.labels, names = Self.features.classNames
        let before = evaluate(images: images, labels: labels, text: try t.textFeatures(tokenizer: sharedTokenizer), classNames: names)
        while !t.isFinished { try t.runEpoch() }
        let after = evaluate(images: images, labels: labels, text: try t.textFeatures(tokenizer: sharedTokenizer), classNames: names)
        XCTAssertEqual(after.count, 40)
        XCTAssertGreaterThanOrEqual(after.accuracy, before.accuracy + 0.075, "train accuracy \(before.accuracy) -> \(after.accuracy)")
        XCTAssertGreaterThan(after.accuracy, 1.0 / Double(names.count), "above chance")
        XCTAssertLessThan(t.history.last!.loss, 0.6 * t.history.first!.loss)
    }
}
