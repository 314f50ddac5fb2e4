import Features
import CLIP
import Foundation
import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// 25 steps of CoOp, CoOp-CSC, CoOp with the class in the middle / front, KgCoOp, NPT and DAPT's
/// text term, from the same initial prompts and batches as the PyTorch reference
/// (reference/engine_goldens.py): every step's loss and terms, the first gradient, and the prompts
/// after every step.
final class TrainingParityTests: XCTestCase {
    struct Golden: Decodable {
        struct Config: Decodable {
            var n_ctx: Int; var csc: Bool; var position: String; var ctx_init: String?
            var kg_w: Float; var lambda_lc: Float; var lambda_mi: Float; var beta_t: Float; var tau: Float
            var anchors: String?; var lr0: Double; var max_epoch: Int; var batch_size: Int; var template: String
        }
        struct Prompts: Decodable { var eot: [Int]; var name_lens: [Int] }
        var config: Config
        var batches: [[Int]]
        var lrs: [Double]
        var losses: [Double]
        var terms: [[String: Double]]
        var prompts: Prompts
        var steps_per_epoch: Int
    }

    static let dir = repoRoot.appendingPathComponent("Goldens/engine")
    static let model = try! CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path)
    static let features = try! FeatureSet.read(path: dir.appendingPathComponent("features.safetensors").path).labeled

    func method(_ c: Golden.Config) -> Method {
        var terms: [LossTerm] = []
        if c.kg_w > 0 { terms.append(LossTerm("kg", weight: c.kg_w)) }
        if c.beta_t > 0 { terms.append(LossTerm("inter", weight: c.beta_t, parameters: ["tau": c.tau])) }
        if c.lambda_lc > 0 { terms.append(LossTerm("lc", weight: c.lambda_lc)) }
        if c.lambda_mi > 0 { terms.append(LossTerm("mi", weight: c.lambda_mi)) }
        let anchors = c.lambda_lc > 0 ? AnchorOptions(rotation: AnchorRotation(rawValue: c.anchors ?? "aligned")!) : nil
        return Method(name: "parity", prompt: PromptConfig(contextLength: c.n_ctx, classSpecific: c.csc,
                                                           position: ClassTokenPosition(rawValue: c.position)!, initText: c.ctx_init),
                      terms: terms, anchors: anchors)
    }

    func run(_ name: String, lossTolerance: Double = 5e-5, contextTolerance: Float = 5e-5) throws {
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.dir.appendingPathComponent("\(name).json")))
        let t = try Safetensors.read(path: Self.dir.appendingPathComponent("\(name).safetensors").path).tensors
        var optimizer = OptimizerConfig()
        optimizer.learningRate = golden.config.lr0
        let config = TrainConfig(method: method(golden.config), optimizer: optimizer, epochs: golden.config.max_epoch,
                                 batchSize: golden.config.batch_size, template: golden.config.template)
        let trainer = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .features(Self.features), config: config,
                                      initialParameters: golden.config.ctx_init == nil ? ParameterSet([(ParameterName.textContext, t["ctx_init"]!)]) : nil)
        XCTAssertEqual(trainer.context, t["ctx_init"]!, "\(name): initial context")
        var unused = SeededGenerator(seed: 0)
        let learner = try PromptLearner(config: config.method.prompt, classNames: Self.features.classNames, text: Self.model.text,
                                        tokenizer: sharedTokenizer, context: t["ctx_init"]!, rng: &unused)
        XCTAssertEqual(learner.eot, golden.prompts.eot, "\(name): EOT positions")
        XCTAssertEqual(learner.nameLengths, golden.prompts.name_lens, "\(name): name lengths")
        if let z = t["zero_shot"] { XCTAssertLessThan(maxDiff(trainer.inputs.zeroShot!, z), 1e-5, "\(name): zero-shot features") }
        if let a = t["anchors"] { XCTAssertLessThan(maxDiff(trainer.inputs.anchors!, a), 1e-5, "\(name): anchors") }
        if let p = t["prototypes"] { XCTAssertLessThan(maxDiff(trainer.inputs.prototypes!, p), 1e-6, "\(name): prototypes") }

        let (first, grads) = trainer.evaluate(try trainer.loadBatch(golden.batches[0], epoch: 0))
        let grad = grads[ParameterName.textContext]!
        let g0 = t["grad_ctx_step_0"]!
        XCTAssertLessThan(maxDiff(grad, g0), 1e-3 * g0.maxAbs + 1e-7, "\(name): gradient of step 0")
        XCTAssertEqual(first.total, golden.losses[0], accuracy: 1e-5, "\(name): loss of step 0")

        let steps = t["ctx_steps"]!
        var worstLoss = 0.0, worstContext: Float = 0
        for (s, batch) in golden.batches.enumerated() {
            let epoch = s / golden.steps_per_epoch
            let lr = learningRate(epoch: epoch, maxEpochs: golden.config.max_epoch, config: optimizer)
            XCTAssertEqual(lr, golden.lrs[s], accuracy: 1e-15, "\(name): lr of step \(s)")
            let v = try trainer.step(try trainer.loadBatch(batch, epoch: epoch), lr: lr)
            worstLoss = max(worstLoss, abs(v.total - golden.losses[s]))
            for (k, want) in golden.terms[s] {
                XCTAssertEqual(v.terms[k] ?? .nan, want, accuracy: lossTolerance, "\(name): term \(k) at step \(s)")
            }
            let want = steps.slice(rows: s..<(s + 1)).reshaped(trainer.context!.shape)
            worstContext = max(worstContext, maxDiff(trainer.context!, want))
        }
        print(String(format: "training parity %@: worst loss difference %.2e over %d steps, worst context difference %.2e",
                     name, worstLoss, golden.batches.count, worstContext))
        XCTAssertLessThan(worstLoss, lossTolerance, "\(name): losses")
        XCTAssertLessThan(worstContext, contextTolerance, "\(name): contexts")
        XCTAssertLessThan(maxDiff(trainer.context!, t["ctx_final"]!), contextTolerance, "\(name): final context")
    }

    func testCoOp() throws { try run("coop") }
    func testCoOpClassSpecific() throws { try run("coop_csc") }
    func testCoOpClassInTheMiddle() throws { try run("coop_middle") }
    func testCoOpClassInFront() throws { try run("coop_front") }
    func testKgCoOp() throws { try run("kgcoop") }
    func testNPT() throws { try run("npt") }
    func testDAPTTextDispersion() throws { try run("dapt_text") }
}
