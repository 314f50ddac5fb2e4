import Features
import CLIP
import Foundation
import PromptLearning
import TensorCore
import TensorIO
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

    func temp(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("pt-\(UUID().uuidString)-\(name)")
    }

    func testInterruptedRunResumesToTheSamePrompts() throws {
        for method in [Method.coop, try Method.named("kgcoop+npt")] {
            let c = config(method)
            let full = try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: Self.features, config: c)
            while !full.isFinished { try full.runEpoch() }

            let url = temp("resume.ptprompt")
            defer { try? FileManager.default.removeItem(at: url) }
            let first = try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: Self.features, config: c)
            try first.runEpoch()
            try first.runEpoch()
            try first.checkpoint().write(to: url)
            // "Interrupted": a new process picks the checkpoint up.
            let second = try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: Self.features, config: c)
            try second.restore(PromptCheckpoint.read(path: url.path))
            XCTAssertEqual(second.epochsDone, 2)
            while !second.isFinished { try second.runEpoch() }
            XCTAssertEqual(second.context, full.context, "\(method.name): resumed prompts equal uninterrupted ones bit for bit")
            XCTAssertEqual(second.history, full.history)
            XCTAssertLessThan(full.history.last!.loss, full.history.first!.loss, "\(method.name): the loss goes down")
        }
    }

    func testCheckpointRoundTripAndErrors() throws {
        let t = try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: Self.features, config: config(.coop, epochs: 2))
        try t.runEpoch()
        let url = temp("a.ptprompt")
        defer { try? FileManager.default.removeItem(at: url) }
        try t.checkpoint().write(to: url)
        let back = try PromptCheckpoint.read(path: url.path)
        XCTAssertEqual(back, t.checkpoint())
        // Truncated, wrong magic, missing: errors naming the file.
        let bytes = try Data(contentsOf: url)
        let cut = temp("cut.ptprompt"), bad = temp("bad.ptprompt")
        defer { try? FileManager.default.removeItem(at: cut); try? FileManager.default.removeItem(at: bad) }
        try bytes.prefix(bytes.count - 10).write(to: cut)
        try Data("not a prompt".utf8).write(to: bad)
        for (path, expect) in [(cut.path, "truncated"), (bad.path, "not a PromptTune prompt checkpoint"), ("/nonexistent.ptprompt", "no such prompt checkpoint")] {
            XCTAssertThrowsError(try PromptCheckpoint.read(path: path)) { e in
                XCTAssertTrue("\(e)".contains(path) && "\(e)".contains(expect), "\(e)")
            }
        }
        // Resuming with other settings is refused.
        var other = config(.coop, epochs: 2)
        other.optimizer.learningRate = 0.1
        let t2 = try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: Self.features, config: other)
        XCTAssertThrowsError(try t2.restore(back)) { XCTAssertTrue("\($0)".contains("other training settings"), "\($0)") }
    }

    func testNonFiniteLossStopsWithoutTouchingThePrompt() throws {
        var c = config(.coop, epochs: 3)
        c.optimizer.learningRate = 1e30  // blows up after the warm-up epoch
        let t = try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: Self.features, config: c)
        try t.runEpoch()
        var failed = false
        do {
            while !t.isFinished { try t.runEpoch() }
        } catch {
            failed = true
            XCTAssertTrue("\(error)".contains("training stopped") && "\(error)".contains("lower --lr"), "\(error)")
            XCTAssertTrue(t.context.data.allSatisfy { $0.isFinite }, "the prompt in memory stays the last good one")
        }
        XCTAssertTrue(failed, "a learning rate of 1e30 must stop training")
    }

    func testNPTWithOneClassIsRefused() throws {
        let one = LabeledFeatures(features: Tensor(zeros: [1, 2, Self.model.config.embedDim]), labels: [0, 0], classNames: ["a"])
        XCTAssertThrowsError(try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: one, config: config(try Method.named("npt")))) {
            XCTAssertTrue("\($0)".contains("at least 2 classes"), "\($0)")
        }
    }

    func testFeaturesFromAnotherModelAreRefused() throws {
        let wrong = LabeledFeatures(features: Tensor(zeros: [1, 2, 7]), labels: [0, 1], classNames: ["a", "b"])
        XCTAssertThrowsError(try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: wrong, config: config(.coop))) {
            XCTAssertTrue("\($0)".contains("made with another model"), "\($0)")
        }
    }

    func testBaseToNovelEvaluationUsesAnyClassNames() throws {
        let t = try PromptTrainer(model: Self.model, tokenizer: sharedTokenizer, features: Self.features, config: config(.coop, epochs: 1))
        try t.runEpoch()
        let novel = try t.textFeatures(classNames: ["dog", "tulip", "airliner"], tokenizer: sharedTokenizer)
        XCTAssertEqual(novel.shape, [3, Self.model.config.embedDim])
        let trained = try t.textFeatures(tokenizer: sharedTokenizer)
        let r = evaluate(images: Self.features.view(0), labels: Self.features.labels, text: trained, classNames: Self.features.classNames)
        XCTAssertEqual(r.count, 40)
        XCTAssertGreaterThanOrEqual(r.accuracy, 0)
    }
}
