import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// 20 steps of PromptSRC (depths 2/2 on the tiny CLIP's 2 blocks per tower, 4 + 4 tokens, batch 4,
/// GPA over 5 epochs) against PromptSRC's own code in PyTorch (reference/promptsrc_goldens.py,
/// fp32): from the reference's initial parameters and the same pixel batches, step 0's gradients,
/// every step's loss and terms, every parameter after every step, the aggregate after every
/// epoch, the final (aggregated) prompts and their evaluation logits.
final class PromptSRCParityTests: XCTestCase {
    static let dir = repoRoot.appendingPathComponent("Goldens/promptsrc")
    static let model = try! CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path)

    struct Golden: Decodable {
        var losses: [Double]
        var terms: [[String: Double]]
        var lrs: [Double]
        var labels: [[Int]]
        var classnames: [String]
        var depth: Int
        var steps: Int
        var batch_size: Int
        var max_epoch: Int
        var lr0: Double
        var gpa_mean: Double
        var gpa_std: Double
        var gpa_weights: [Double]
    }

    func testTwentyStepsAgainstPromptSRCsReference() throws {
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.dir.appendingPathComponent("promptsrc.json")))
        let g = try Safetensors.read(path: Self.dir.appendingPathComponent("promptsrc.safetensors").path).tensors
        var method = Method.promptsrc
        let gpa = GaussianPromptAggregation(mean: golden.gpa_mean, std: golden.gpa_std)
        method.promptsrc = PromptSRCConfig(textDepth: golden.depth, visionDepth: golden.depth, aggregation: gpa)
        XCTAssertEqual(gpa.weights(epochs: golden.max_epoch), golden.gpa_weights)
        let names = ArchitectureKind.promptsrc.parameterNames(method)
        let initial = ParameterSet(names.map { ($0, g["init.\($0)"]!) })

        var rng = SeededGenerator(seed: 1)
        let own = try method.makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: golden.classnames,
                                              template: "{}", rng: &rng)
        XCTAssertEqual(own.initialParameters[ParameterName.textContext], initial[ParameterName.textContext], "the embedding of \"a photo of a\"")
        XCTAssertEqual(own.initialParameters.names, names)
        for name in names { XCTAssertEqual(own.initialParameters[name]?.shape, initial[name]?.shape, name) }

        let a = try method.makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: golden.classnames,
                                            template: "{}", parameters: initial)
        var inputs = TermInputs(templateEnsemble: templateEnsembleTextFeatures(model: Self.model, tokenizer: sharedTokenizer,
                                                                                templates: ImageNetTemplates.all, classNames: golden.classnames))
        var params = initial
        var sgd = SGDState()
        var optimizer = OptimizerConfig()
        optimizer.learningRate = golden.lr0
        let pixels = g["pixels"]!
        let r = Self.model.config.imageResolution
        let workspace = Workspace()
        let perEpoch = golden.steps / golden.max_epoch
        var aggregate: ParameterSet?
        var worstLoss = 0.0, worstTerm = 0.0, worstParam: Float = 0, worstGrad: Float = 0, worstAggregate: Float = 0
        for s in 0..<golden.steps {
            let lr = learningRate(epoch: s / perEpoch, maxEpochs: golden.max_epoch, config: optimizer)
            XCTAssertEqual(lr, golden.lrs[s], accuracy: 1e-12, "lr of step \(s)")
            let batch = pixels.slice(rows: s..<(s + 1)).reshaped([golden.batch_size, 3, r, r])
            let fw = a.forward(params, images: .pixels(batch), workspace: workspace)
            inputs.frozenImages = L2Normalize.forward(Self.model.image.forward(pixels: batch, workspace: workspace).0).0
            let v = objective(method: method, textFeatures: fw.text, images: fw.images, labels: golden.labels[s],
                              logitScale: Self.model.logitScale, inputs: inputs, imageGradient: fw.imagesTrainable)
            let rel = abs(v.total - golden.losses[s]) / abs(golden.losses[s])
            worstLoss = max(worstLoss, rel)
            XCTAssertLessThan(rel, 1e-5, "loss of step \(s): \(v.total) vs \(golden.losses[s])")
            for (key, want) in golden.terms[s] {
                let got = try XCTUnwrap(v.terms[key], key)
                let relTerm = abs(got - want) / max(abs(want), 1e-12)
                worstTerm = max(worstTerm, relTerm)
                XCTAssertLessThan(relTerm, 1e-4, "\(key) of step \(s): \(got) vs \(want)")
            }
            let grads = fw.backward(v.dText, v.dImages)
            if s == 0 {
                let want = ParameterSet(names.map { ($0, g["grad0.\($0)"]!) })
                let (name, rel0) = grads.worstRelativeDifference(to: want)
                worstGrad = rel0
                XCTAssertLessThan(rel0, 1e-4, "step 0's gradient of \(name)")
            }
            sgd.step(&params, gradients: grads, lr: lr, config: optimizer)
            let want = ParameterSet(names.map { n in
                let t = g[n]!
                return (n, t.slice(rows: s..<(s + 1)).reshaped(Array(t.shape.dropFirst())))
            })
            let (name, rel2) = params.worstRelativeDifference(to: want)
            worstParam = max(worstParam, rel2)
            XCTAssertLessThan(rel2, 1e-4, "\(name) after step \(s)")
            if (s + 1) % perEpoch == 0 {
                let e = s / perEpoch
                aggregate = gpa.accumulate(aggregate, params, epoch: e, epochs: golden.max_epoch)
                let wantAggregate = ParameterSet(names.map { n in
                    let t = g["aggregate.\(n)"]!
                    return (n, t.slice(rows: e..<(e + 1)).reshaped(Array(t.shape.dropFirst())))
                })
                let (an, relA) = aggregate!.worstRelativeDifference(to: wantAggregate)
                worstAggregate = max(worstAggregate, relA)
                XCTAssertLessThan(relA, 1e-4, "aggregate of \(an) after epoch \(e)")
            }
        }
        // The aggregate is the final prompt: its classifier and image encoding.
        let final = aggregate!
        let (fn, relF) = final.worstRelativeDifference(to: ParameterSet(names.map { ($0, g["final.\($0)"]!) }))
        XCTAssertLessThan(relF, 1e-4, "final \(fn)")
        guard case .shared(let text) = a.classifier(final) else { return XCTFail("PromptSRC's classifier is shared") }
        let f = L2Normalize.forward(a.encodeImages(final, pixels: g["eval_pixels"]!, workspace: nil)).0
        let logits = matmul(f, L2Normalize.forward(text).0, transB: true) * Self.model.logitScale
        let wantLogits = g["eval_logits"]!
        XCTAssertLessThan(maxDiff(logits, wantLogits), 1e-4 * wantLogits.maxAbs, "eval logits")
        print(String(format: "PromptSRC parity: %d steps, worst relative loss difference %.2e, terms %.2e, worst relative parameter difference %.2e, step-0 gradients %.2e, aggregates %.2e, eval logits %.2e",
                     golden.steps, worstLoss, worstTerm, worstParam, worstGrad, worstAggregate, maxDiff(logits, wantLogits) / wantLogits.maxAbs))
    }
}
