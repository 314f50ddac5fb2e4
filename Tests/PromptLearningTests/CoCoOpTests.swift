import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// CoCoOp's architecture: the meta-net's bias per image, one shared prefix per image for its K
/// classes (equal to encoding every class's whole prompt on its own), the gradient of every
/// parameter by finite differences, and evaluation in class chunks equal to all classes at once.
final class CoCoOpTests: XCTestCase {
    /// 48-dimensional embedding: a meta-net of 3 hidden units.
    static let config = CLIPConfig(embedDim: 48, imageResolution: 16, patchSize: 8, visionWidth: 64, visionLayers: 1,
                                   visionHeads: 1, contextLength: 77, vocabSize: 49408, textWidth: 32, textLayers: 2, textHeads: 2)
    static let model = CLIPModel.random(config: config, seed: 11)
    let names = ["cat", "golden retriever", "sunflower", "apple pie"]
    var rng = SeededGenerator(seed: 4)

    func architecture(_ method: Method = .cocoop) throws -> CoCoOpArchitecture {
        var g = SeededGenerator(seed: 2)
        return try XCTUnwrap(try method.makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: names,
                                                         template: "a photo of a {}.", rng: &g) as? CoCoOpArchitecture)
    }

    /// The meta-net's initial values are PyTorch's default Linear initialisation; the context is
    /// the embedding of "a photo of a".
    func testParametersAndInitialisation() throws {
        let a = try architecture()
        let p = a.initialParameters
        XCTAssertEqual(p.names, CoCoOpArchitecture.parameterNames)
        XCTAssertEqual(p[CoCoOpArchitecture.meta1Weight]?.shape, [3, 48])
        XCTAssertEqual(p[CoCoOpArchitecture.meta2Weight]?.shape, [32, 3])
        XCTAssertEqual(p[CoCoOpArchitecture.meta2Bias]?.shape, [32])
        XCTAssertLessThanOrEqual(p[CoCoOpArchitecture.meta1Weight]!.maxAbs, 1 / Float(48).squareRoot())
        XCTAssertLessThanOrEqual(p[CoCoOpArchitecture.meta2Weight]!.maxAbs, 1 / Float(3).squareRoot())
        XCTAssertEqual(p[ParameterName.textContext], Self.model.text.tokenEmbedding.gatherRows(sharedTokenizer.encode("a photo of a")))
        XCTAssertFalse(a.promptsImageTower, "the image tower stays frozen: cached features train CoCoOp")
        var csc = Method.cocoop
        csc.prompt.classSpecific = true
        var g = SeededGenerator(seed: 2)
        XCTAssertThrowsError(try csc.makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: names, template: "{}", rng: &g)) {
            XCTAssertTrue("\($0)".contains("class-specific"), "\($0)")
        }
    }

    /// Each image's K prompts through one shared prefix equal each prompt encoded whole: SOS, the
    /// context plus the image's bias, the class's rows, cut at its EOT.
    func testSharedPrefixPerImageEqualsWholePrompts() throws {
        let a = try architecture()
        var p = a.initialParameters
        p[CoCoOpArchitecture.meta2Bias] = .randomNormal([32], std: 0.3, using: &rng)
        let f = L2Normalize.forward(.randomNormal([3, 48], using: &rng)).0
        let text = a.textFeatures(p, imageFeatures: f)
        let (_, bias) = a.metaNet(p, f)
        let ctx = p[ParameterName.textContext]!
        for i in 0..<3 {
            var shifted = ctx
            for j in 0..<4 { for x in 0..<32 { shifted[j * 32 + x] += bias[i * 32 + x] } }
            let whole = PromptEncoder(text: Self.model.text).forward(a.learner, context: shifted, keepCaches: false).0
            XCTAssertLessThan(maxDiff(text.slice(rows: i..<(i + 1)).reshaped([4, 48]), whole), 2e-5, "image \(i)")
        }
        // Class chunks give the same features.
        a.classChunk = 3
        XCTAssertLessThan(maxDiff(a.textFeatures(p, imageFeatures: f), text), 1e-6)
        // The training forward's text features are the same computation.
        let fw = a.forward(p, images: .features(f), workspace: Workspace())
        XCTAssertEqual(fw.text.shape, [3, 4, 48])
        XCTAssertLessThan(maxDiff(fw.text, text), 2e-5)
    }

    /// The per-image cross-entropy's gradient to the context and to every meta-net tensor.
    func testGradientsOfEveryParameter() throws {
        let a = try architecture()
        var p = a.initialParameters
        // Biases that keep every hidden unit away from ReLU's kink for the probes.
        p[CoCoOpArchitecture.meta1Bias] = Tensor(shape: [3], data: [0.5, -0.6, 0.7])
        p[CoCoOpArchitecture.meta2Weight] = .randomNormal([32, 3], std: 0.5, using: &rng)
        let f = L2Normalize.forward(.randomNormal([2, 48], using: &rng)).0
        let labels = [2, 0]
        func loss(_ q: ParameterSet) -> Double {
            let fw = a.forward(q, images: .features(f), workspace: Workspace())
            return objective(method: .cocoop, textFeatures: fw.text, images: fw.images, labels: labels, logitScale: 20, inputs: TermInputs()).total
        }
        let fw = a.forward(p, images: .features(f), workspace: Workspace())
        let v = objective(method: .cocoop, textFeatures: fw.text, images: fw.images, labels: labels, logitScale: 20, inputs: TermInputs())
        let g = fw.backward(v.dText, v.dImages)
        XCTAssertEqual(g.names.sorted(), CoCoOpArchitecture.parameterNames.sorted())
        for name in CoCoOpArchitecture.parameterNames {
            checkGradient("cocoop \(name)", at: p[name]!, analytic: g[name]!, tolerance: .layers) { x in
                var q = p
                q[name] = x
                return loss(q)
            }
        }
    }

    /// Trains from cached features through the general trainer (batch 1, as its recipe), and the
    /// classifier per image evaluates.
    func testTrainsFromCachedFeatures() throws {
        let features = LabeledFeatures(features: .randomNormal([1, 8, 48], using: &rng), labels: [0, 1, 2, 3, 0, 1, 2, 3], classNames: names)
        var config = TrainConfig(method: .cocoop, epochs: 2, batchSize: 1)
        config.optimizer.learningRate = 0.05
        let t = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .features(features), config: config)
        try t.runEpoch(); try t.runEpoch()
        XCTAssertEqual(t.steps, 16)
        for name in CoCoOpArchitecture.parameterNames {
            XCTAssertGreaterThan(maxDiff(t.parameters[name]!, t.initialParameters[name]!), 0, "\(name) moved")
        }
        let r = evaluate(images: features.view(0), labels: features.labels, classifier: t.architecture.classifier(t.parameters), classNames: names)
        XCTAssertEqual(r.count, 8)
        XCTAssertThrowsError(try t.textFeatures(tokenizer: sharedTokenizer)) { XCTAssertTrue("\($0)".contains("per image"), "\($0)") }
    }
}
