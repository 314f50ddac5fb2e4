import Features
import CLIP
import Foundation
import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// 20 steps of DeKg against DeKg's own code (reference/dekg_goldens.py, cnunlp/DeKg b8f2f1c):
/// the same initial prompts ("a photo of a"), zero-shot features and batches; every step's loss
/// and its terms (ce, kg, hsic), the first gradient, and the context after every step.
final class DeKgParityTests: XCTestCase {
    struct Golden: Decodable {
        struct Config: Decodable {
            var n_ctx: Int; var ctx_init: String; var w1: Float; var w2: Float; var template: String
            var lr0: Double; var max_epoch: Int; var batch_size: Int
        }
        var config: Config
        var batches: [[Int]]
        var lrs: [Double]
        var losses: [Double]
        var terms: [[String: Double]]
        var steps_per_epoch: Int
    }

    static let dir = repoRoot.appendingPathComponent("Goldens/dekg")
    static let model = try! CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path)
    static let features = try! FeatureSet.read(path: repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path).labeled

    /// `Method.dekg` with the golden's weights.
    func method(_ c: Golden.Config) throws -> Method {
        var m = try Method.named("dekg")
        XCTAssertEqual(m.terms.map(\.key), ["kg", "hsic"])
        XCTAssertEqual(m.prompt.contextLength, c.n_ctx)
        XCTAssertEqual(m.prompt.initText, c.ctx_init)
        m.terms[0].weight = c.w1
        m.terms[1].weight = c.w2
        return m
    }

    /// Worst relative difference of the steps' terms (`key`), against the golden's largest value.
    func run(_ name: String) throws -> (loss: Double, context: Float, hsic: Double) {
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.dir.appendingPathComponent("\(name).json")))
        let t = try Safetensors.read(path: Self.dir.appendingPathComponent("\(name).safetensors").path).tensors
        var optimizer = OptimizerConfig()
        optimizer.learningRate = golden.config.lr0
        let config = TrainConfig(method: try method(golden.config), optimizer: optimizer, epochs: golden.config.max_epoch,
                                 batchSize: golden.config.batch_size, template: golden.config.template)
        let trainer = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .features(Self.features), config: config)
        XCTAssertLessThan(maxDiff(trainer.context!, t["ctx_init"]!), 1e-7, "\(name): initial context from \"a photo of a\"")
        XCTAssertLessThan(maxDiff(trainer.inputs.zeroShot!, t["zero_shot"]!), 1e-5, "\(name): zero-shot features")

        let (first, grads) = trainer.evaluate(try trainer.loadBatch(golden.batches[0], epoch: 0))
        let g0 = t["grad_ctx_step_0"]!
        XCTAssertLessThan(maxDiff(grads[ParameterName.textContext]!, g0), 1e-3 * g0.maxAbs + 1e-7, "\(name): gradient of step 0")
        XCTAssertEqual(first.total, golden.losses[0], accuracy: 1e-5, "\(name): loss of step 0")

        let steps = t["ctx_steps"]!
        var worstLoss = 0.0, worstContext: Float = 0, worstHSIC = 0.0
        for (s, batch) in golden.batches.enumerated() {
            let epoch = s / golden.steps_per_epoch
            let lr = learningRate(epoch: epoch, maxEpochs: golden.config.max_epoch, config: optimizer)
            XCTAssertEqual(lr, golden.lrs[s], accuracy: 1e-15, "\(name): lr of step \(s)")
            let v = try trainer.step(try trainer.loadBatch(batch, epoch: epoch), lr: lr)
            worstLoss = max(worstLoss, abs(v.total - golden.losses[s]) / abs(golden.losses[s]))
            XCTAssertEqual(Set(v.terms.keys), ["ce", "kg", "hsic"], "\(name): terms")
            for (k, want) in golden.terms[s] {
                XCTAssertEqual(v.terms[k] ?? .nan, want, accuracy: 5e-5, "\(name): term \(k) at step \(s)")
            }
            // HSIC is about 1e-5 here: compare it relatively, or the absolute check above says nothing.
            let want = golden.terms[s]["hsic"]!
            worstHSIC = max(worstHSIC, abs((v.terms["hsic"] ?? .nan) - want) / want)
            let ctx = steps.slice(rows: s..<(s + 1)).reshaped(trainer.context!.shape)
            worstContext = max(worstContext, maxDiff(trainer.context!, ctx) / ctx.maxAbs)
        }
        print(String(format: "DeKg parity %@: worst relative loss difference %.2e, hsic %.2e, context %.2e over %d steps",
                     name, worstLoss, worstHSIC, worstContext, golden.batches.count))
        XCTAssertLessThan(worstLoss, 2e-5, "\(name): losses")
        XCTAssertLessThan(worstHSIC, 1e-3, "\(name): hsic")
        XCTAssertLessThan(worstContext, 5e-5, "\(name): contexts")
        let final = t["ctx_final"]!
        XCTAssertLessThan(maxDiff(trainer.context!, final), 5e-5 * final.maxAbs, "\(name): final context")
        return (worstLoss, worstContext, worstHSIC)
    }

    /// The scripts' weights, w1 = 8 and w2 = 6.
    func testDeKg() throws { _ = try run("dekg") }

    /// w2 = 20000: HSIC's gradient is a sizeable part of every update. A wrong HSIC gradient shows
    /// here as contexts that drift from the reference's.
    func testDeKgWithHeavyHSIC() throws { _ = try run("dekg_hsic") }
}
