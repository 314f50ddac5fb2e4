import CLIP
import Foundation
import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// A ResNet CLIP with the prompt methods: the text-prompt ones train on its frozen image features;
/// those that put tokens into the image tower refuse it with `.needsViT`, naming method and model.
final class ResNetMethodsTests: XCTestCase {
    static let model = try! CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/rn/checkpoint/openai.pt").path)
    static let classNames = ["cat", "dog", "sunflower"]

    func testImagePromptMethodsNeedAViT() throws {
        for name in ["vpt", "dapt", "maple", "promptsrc", "maple+cpt", "dapt+npt"] {
            let method = try Method.named(name)
            var rng = SeededGenerator(seed: 1)
            XCTAssertThrowsError(try method.makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: Self.classNames,
                                                             template: "a photo of a {}.", rng: &rng)) { e in
                guard let e = e as? PromptError else { return XCTFail("\(name): not a PromptError: \(e)") }
                XCTAssertEqual(e.kind, .needsViT, name)
                XCTAssertTrue(e.message.contains("method \(method.name)") && e.message.contains("ResNet 2-1-1-1 width 8"), e.message)
            }
            // The trainer says so before it asks for images.
            let features = LabeledFeatures(features: Tensor(zeros: [1, 3, 32]), labels: [0, 1, 2], classNames: Self.classNames)
            var m = method
            m.prompt.contextLength = 4
            let config = TrainConfig(method: m, optimizer: OptimizerConfig(), epochs: 1, batchSize: 2, seed: 1)
            XCTAssertThrowsError(try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .features(features), config: config)) { e in
                XCTAssertEqual((e as? PromptError)?.kind, .needsViT, name)
            }
        }
    }

    /// CoOp and the other text-prompt methods train on the ResNet's cached features: the loss goes down.
    func testTextPromptMethodsTrainOnResNetFeatures() throws {
        var rng = SeededGenerator(seed: 5)
        let (perClass, k) = (4, Self.classNames.count)
        // Images of a class share a random mean, so there is something to learn.
        let means = (0..<k).map { _ in Tensor.randomNormal([3 * 96 * 96], using: &rng) }
        var pixels: [Float] = [], labels: [Int] = []
        for c in 0..<k { for _ in 0..<perClass {
            pixels += zip(means[c].data, Tensor.randomNormal([3 * 96 * 96], std: 0.5, using: &rng).data).map { $0 + $1 }
            labels.append(c)
        } }
        let features = Self.model.encodeImage(Tensor(shape: [k * perClass, 3, 96, 96], data: pixels))
        let data = LabeledFeatures(features: features.reshaped([1, k * perClass, 32]), labels: labels, classNames: Self.classNames)
        for name in ["coop", "kgcoop", "cocoop", "coop+npt", "dekg", "cpt"] {
            var method = try Method.named(name)
            method.prompt.contextLength = 4
            var o = OptimizerConfig()
            o.learningRate = 0.05
            let tuner = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .features(data),
                                        config: TrainConfig(method: method, optimizer: o, epochs: 4, batchSize: 4, seed: 3))
            do { while !tuner.isFinished { try tuner.runEpoch() } } catch { XCTFail("\(name): \(error)"); continue }
            XCTAssertTrue(tuner.history.allSatisfy { $0.loss.isFinite }, name)
            if name == "coop" { XCTAssertLessThan(tuner.history.last!.loss, tuner.history.first!.loss, "\(name): the loss goes down") }
        }
    }
}
