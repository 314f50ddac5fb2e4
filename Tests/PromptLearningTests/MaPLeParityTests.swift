import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// 20 steps of MaPLe (prompt depth 2 on the tiny CLIP's 2 blocks per tower, batch 4) against
/// MaPLe's own model code in PyTorch (reference/maple_goldens.py, fp32): from the reference's
/// initial parameters and the same pixel batches, step 0's gradients, every step's loss and
/// every parameter after every step, and the evaluation logits of the final parameters.
final class MaPLeParityTests: XCTestCase {
    static let dir = repoRoot.appendingPathComponent("Goldens/maple")
    static let model = try! CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path)

    struct Golden: Decodable {
        var losses: [Double]
        var lrs: [Double]
        var labels: [[Int]]
        var classnames: [String]
        var depth: Int
        var steps: Int
        var batch_size: Int
        var max_epoch: Int
        var lr0: Double
    }

    func testTwentyStepsAgainstMaPLesReference() throws {
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.dir.appendingPathComponent("maple.json")))
        let g = try Safetensors.read(path: Self.dir.appendingPathComponent("maple.safetensors").path).tensors
        var method = Method.maple
        method.maple = MaPLeConfig(promptDepth: golden.depth)
        let names = ArchitectureKind.maple.parameterNames(method)
        let initial = ParameterSet(names.map { ($0, g["init.\($0)"]!) })

        // PromptTune's own initialisation agrees where it is deterministic: the context is the
        // embedding of "a photo"; the reference's deep projections are copies of one Linear.
        var rng = SeededGenerator(seed: 1)
        let own = try XCTUnwrap(try method.makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: golden.classnames,
                                                            template: "{}", rng: &rng) as? MaPLeArchitecture)
        XCTAssertEqual(own.initialParameters[ParameterName.textContext], initial[ParameterName.textContext])
        XCTAssertEqual(own.initialParameters.names, names)
        for name in names { XCTAssertEqual(own.initialParameters[name]?.shape, initial[name]?.shape, name) }

        let a = try method.makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: golden.classnames,
                                            template: "{}", parameters: initial)
        var params = initial
        var sgd = SGDState()
        var optimizer = OptimizerConfig()
        optimizer.learningRate = golden.lr0
        let pixels = g["pixels"]!
        let r = Self.model.config.imageResolution
        let workspace = Workspace()
        var worstLoss = 0.0, worstParam: Float = 0, worstGrad: Float = 0
        for s in 0..<golden.steps {
            // Dassl's schedule, stepped per epoch: the learning rate PromptTune's trainer takes.
            let lr = learningRate(epoch: s / (golden.steps / golden.max_epoch), maxEpochs: golden.max_epoch, config: optimizer)
            XCTAssertEqual(lr, golden.lrs[s], accuracy: 1e-12, "lr of step \(s)")
            let batch = pixels.slice(rows: s..<(s + 1)).reshaped([golden.batch_size, 3, r, r])
            let fw = a.forward(params, images: .pixels(batch), workspace: workspace)
            let v = objective(method: method, textFeatures: fw.text, images: fw.images, labels: golden.labels[s],
                              logitScale: Self.model.logitScale, inputs: TermInputs(), imageGradient: fw.imagesTrainable)
            let rel = abs(v.total - golden.losses[s]) / abs(golden.losses[s])
            worstLoss = max(worstLoss, rel)
            XCTAssertLessThan(rel, 1e-5, "loss of step \(s): \(v.total) vs \(golden.losses[s])")
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
        }
        // The evaluation classifier and image encoding of the final parameters.
        guard case .shared(let text) = a.classifier(params) else { return XCTFail("MaPLe's classifier is shared") }
        let f = L2Normalize.forward(a.encodeImages(params, pixels: g["eval_pixels"]!, workspace: nil)).0
        let logits = matmul(f, L2Normalize.forward(text).0, transB: true) * Self.model.logitScale
        let wantLogits = g["eval_logits"]!
        XCTAssertLessThan(maxDiff(logits, wantLogits), 1e-4 * wantLogits.maxAbs, "eval logits")
        print(String(format: "MaPLe parity: %d steps, worst relative loss difference %.2e, worst relative parameter difference %.2e, step-0 gradients %.2e, eval logits %.2e",
                     golden.steps, worstLoss, worstParam, worstGrad, maxDiff(logits, wantLogits) / wantLogits.maxAbs))
    }
}
