import CLIP
import Features
import Foundation
import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// PromptLearning's errors carry a kind a caller can switch on; one case per kind reached here.
final class PromptErrorKindTests: XCTestCase {
    static var model: CLIPModel { TrainerTests.model }
    static var features: LabeledFeatures { TrainerTests.features }

    func config(_ method: Method, epochs: Int = 2) -> TrainConfig {
        var o = OptimizerConfig()
        o.learningRate = 0.05
        var m = method
        m.prompt.contextLength = 4
        return TrainConfig(method: m, optimizer: o, epochs: epochs, batchSize: 8, seed: 11)
    }

    func tuner(_ c: TrainConfig, features: LabeledFeatures = PromptErrorKindTests.features, prototypes: Tensor? = nil) throws -> PromptTuner {
        try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .features(features), config: c, prototypes: prototypes)
    }

    func kind(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> PromptError.Kind? {
        do { try body() } catch let e as PromptError { return e.kind } catch {
            XCTFail("not a PromptError: \(error)", file: file, line: line)
            return nil
        }
        XCTFail("no error", file: file, line: line)
        return nil
    }

    func testEachSiteThrowsItsKind() throws {
        let d = Self.model.config.embedDim, k = Self.features.classNames.count

        var c = config(.coop)
        c.epochs = 0
        XCTAssertEqual(kind { _ = try self.tuner(c) }, .invalidSetting)
        c = config(.coop)
        c.method.prompt.contextLength = 200
        XCTAssertEqual(kind { _ = try self.tuner(c) }, .invalidSetting, "a context longer than the text context")

        XCTAssertEqual(kind { _ = try Method.named("cooop") }, .unknownMethod)
        XCTAssertEqual(kind { _ = try Method.named("coop+kgcoop") }, .unknownMethod)

        let otherModel = LabeledFeatures(features: Tensor(zeros: [1, 2, 7]), labels: [0, 1], classNames: ["a", "b"])
        XCTAssertEqual(kind { _ = try self.tuner(self.config(.coop), features: otherModel) }, .modelMismatch)
        let badLabel = LabeledFeatures(features: Tensor(zeros: [1, 2, d]), labels: [0, 5], classNames: ["a", "b"])
        XCTAssertEqual(kind { _ = try self.tuner(self.config(.coop), features: badLabel) }, .invalidData)
        var nan = Self.features
        nan.features[3] = .nan
        XCTAssertEqual(kind { _ = try self.tuner(self.config(.coop), features: nan) }, .nonFiniteInput)
        XCTAssertEqual(kind { _ = try self.tuner(self.config(try Method.named("vpt"))) }, .notSupported,
                       "a method that trains inside the image tower, given cached features")

        let oneClass = LabeledFeatures(features: Tensor(zeros: [1, 2, d]), labels: [0, 0], classNames: ["a"])
        XCTAssertEqual(kind { _ = try self.tuner(self.config(try Method.named("npt")), features: oneClass) }, .classMismatch)
        let many = (0...maxAnchorClasses).map { "c\($0)" }
        let manyClasses = LabeledFeatures(features: Tensor(zeros: [1, 2, d]), labels: [0, 1], classNames: many)
        XCTAssertEqual(kind { _ = try self.tuner(self.config(try Method.named("npt")), features: manyClasses) }, .tooLarge)

        XCTAssertEqual(kind { _ = try self.tuner(self.config(try Method.named("npt")), prototypes: Tensor(zeros: [k, d + 1])) }, .shapeMismatch)

        // Class-specific contexts on other class names.
        let csc = try tuner(config(.coopCSC, epochs: 1))
        XCTAssertEqual(kind { _ = try csc.textFeatures(classNames: ["dog", "tulip"], tokenizer: sharedTokenizer) }, .classMismatch)
        let names = Self.features.classNames
        XCTAssertEqual(kind {
            _ = try promptTextFeatures(model: Self.model, method: csc.config.method, context: csc.context!,
                                       classNames: names.reversed(), tokenizer: sharedTokenizer, trainedClassNames: names)
        }, .classMismatch)
    }

    func testResumeKinds() throws {
        let t = try tuner(config(.coop))
        try t.runEpoch()
        let good = t.checkpoint()
        var other = config(.coop)
        other.optimizer.learningRate = 0.1
        XCTAssertEqual(kind { try self.tuner(other).restore(good) }, .incompatibleResume)
        var damaged = good
        var p = damaged.parameters[ParameterName.textContext]!
        p[0] = .nan
        damaged.parameters[ParameterName.textContext] = p
        XCTAssertEqual(kind { try self.tuner(self.config(.coop)).restore(damaged) }, .damagedCheckpoint)
    }

    func testNonFiniteLossIsATrainingErrorWithWhereItStopped() throws {
        // NaN prototypes pass the trainer's checks (only their shape is checked) and make NPT's
        // isomorphism term, and so the loss, NaN at the very first step.
        let k = Self.features.classNames.count, d = Self.model.config.embedDim
        let prototypes = Tensor(shape: [k, d], data: [Float](repeating: .nan, count: k * d))
        let t = try tuner(config(try Method.named("npt")), prototypes: prototypes)
        do {
            try t.runEpoch()
            XCTFail("a NaN loss must stop training")
        } catch let e as TrainingError {
            XCTAssertEqual(e.kind, .nonFiniteLoss, e.message)
            XCTAssertEqual(e.epoch, 1)
            XCTAssertEqual(e.step, 1)
            XCTAssertTrue(e.message.contains("before any update"), e.message)
        }

        // A diverging run names the epoch and learning rate it stopped at.
        var c = config(.coop, epochs: 3)
        c.optimizer.learningRate = 1e30
        let diverging = try tuner(c)
        try diverging.runEpoch()
        do {
            while !diverging.isFinished { try diverging.runEpoch() }
            XCTFail("a learning rate of 1e30 must stop training")
        } catch let e as TrainingError {
            XCTAssertTrue([.nonFiniteLoss, .nonFiniteUpdate].contains(e.kind), e.message)
            XCTAssertGreaterThanOrEqual(e.epoch, 2)
            XCTAssertGreaterThan(e.step, diverging.stepsPerEpoch)
            XCTAssertGreaterThan(e.learningRate, 1e20)
        }
    }
}
