import CLIP
import Features
import Foundation
import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// CoCoOp against its reference (reference/cocoop_goldens.py: CoOp's own `trainers/cocoop.py`
/// PromptLearner and CustomCLIP, fp32, Dassl's SGD and schedule) on the tiny CLIP, from the same
/// initial parameters and batches: every step's loss, the first gradient of every tensor, the five
/// tensors after every step, and the final prompt learner's test logits.
final class CoCoOpParityTests: XCTestCase {
    struct Golden: Decodable {
        struct Config: Decodable {
            var n_ctx: Int; var ctx_init: String?; var lr0: Double; var max_epoch: Int; var batch_size: Int; var template: String
        }
        var config: Config
        var batches: [[Int]]
        var lrs: [Double]
        var losses: [Double]
        var logit_scale: Double
    }

    static let dir = repoRoot.appendingPathComponent("Goldens/cocoop")

    func run(_ name: String) throws {
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.dir.appendingPathComponent("\(name).json")))
        let t = try Safetensors.read(path: Self.dir.appendingPathComponent("\(name).safetensors").path).tensors
        var method = Method.cocoop
        method.prompt = PromptConfig(contextLength: golden.config.n_ctx, initText: golden.config.ctx_init)
        var optimizer = OptimizerConfig()
        optimizer.learningRate = golden.config.lr0
        let config = TrainConfig(method: method, optimizer: optimizer, epochs: golden.config.max_epoch, batchSize: golden.config.batch_size,
                                 template: golden.config.template)
        let names = CoCoOpArchitecture.parameterNames
        let initial = ParameterSet(names.map { ($0, t[$0]!) })
        let features = TrainingParityTests.features
        let trainer = try PromptTuner(model: TrainingParityTests.model, tokenizer: sharedTokenizer, data: .features(features), config: config,
                                      initialParameters: initial)
        if golden.config.ctx_init != nil {
            XCTAssertEqual(trainer.architecture.initialParameters[ParameterName.textContext], t[ParameterName.textContext]!,
                           "\(name): the context from \"a photo of a\" is the reference's")
        }
        XCTAssertEqual(Double(TrainingParityTests.model.logitScale), golden.logit_scale, accuracy: 1e-4)

        // The first step's gradient of every tensor (before weight decay).
        let (first, grads) = trainer.evaluate(try trainer.loadBatch(golden.batches[0], epoch: 0))
        XCTAssertEqual(first.total, golden.losses[0], accuracy: 1e-5 * abs(golden.losses[0]), "\(name): loss of step 0")
        for n in names {
            let want = t["grad_step_0.\(n)"]!
            XCTAssertLessThanOrEqual(maxDiff(grads[n]!, want), 1e-4 * want.maxAbs + 1e-7, "\(name): step-0 gradient of \(n)")
        }

        var worstLoss = 0.0, worstParameter: (name: String, value: Float) = ("", 0)
        let perEpoch = features.count / golden.config.batch_size
        for (s, batch) in golden.batches.enumerated() {
            let epoch = s / perEpoch
            let lr = learningRate(epoch: epoch, maxEpochs: golden.config.max_epoch, config: optimizer)
            XCTAssertEqual(lr, golden.lrs[s], accuracy: 1e-15, "\(name): lr of step \(s)")
            let v = try trainer.step(try trainer.loadBatch(batch, epoch: epoch), lr: lr)
            worstLoss = max(worstLoss, abs(v.total - golden.losses[s]) / max(abs(golden.losses[s]), 1e-12))
            for n in names {
                let all = t["steps.\(n)"]!
                let want = all.slice(rows: s..<(s + 1)).reshaped(trainer.parameters[n]!.shape)
                let r = maxDiff(trainer.parameters[n]!, want) / max(want.maxAbs, 1e-30)
                if r > worstParameter.value { worstParameter = (n, r) }
            }
        }
        print(String(format: "CoCoOp parity %@: %d steps, worst relative loss difference %.2e, worst relative parameter difference %.2e (%@)",
                     name, golden.batches.count, worstLoss, worstParameter.value, worstParameter.name))
        XCTAssertLessThan(worstLoss, 1e-5, "\(name): losses within 1e-5 relative")
        XCTAssertLessThan(worstParameter.value, 1e-4, "\(name): parameters within 1e-4 relative (\(worstParameter.name))")
        for n in names {
            XCTAssertLessThan(maxDiff(trainer.parameters[n]!, t["final.\(n)"]!), 1e-4 * t["final.\(n)"]!.maxAbs + 1e-7, "\(name): final \(n)")
        }

        // The final prompt learner's logits for the first 8 features, as the reference evaluates.
        let eight = features.view(0).slice(rows: 0..<8)
        let (scores, _) = classify(images: eight, classifier: trainer.architecture.classifier(trainer.parameters))
        let logits = scores * TrainingParityTests.model.logitScale
        let want = t["eval_logits"]!
        XCTAssertLessThan(maxDiff(logits, want), 1e-4 * want.maxAbs, "\(name): test logits")
    }

    /// "a photo of a", batch 1 (CoCoOp's recipe), 120 steps over 3 epochs.
    func testCoCoOp() throws { try run("cocoop") }
    /// A random context of 4, batch 4: several images' prefixes in one packed sequence.
    func testCoCoOpBatch4() throws { try run("cocoop_b4") }
}
