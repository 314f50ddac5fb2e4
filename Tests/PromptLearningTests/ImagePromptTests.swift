import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// The image side of prompt tuning: the tower's gradient to inserted tokens, the image terms, the
/// general trainer's checkpoints and traces.
final class ImagePromptTests: XCTestCase {
    static let tiny = DAPTParityTests.model

    /// Finite differences of sum(w * features) w.r.t. tokens inserted after ln_pre, shared by the
    /// batch ([N, W]) and per image ([B, N, W]), through the whole frozen tower (tiny CLIP: 2 blocks,
    /// 2 heads; the last block computes only the class tokens).
    func testImageTowerGradientToInsertedTokens() throws {
        let tower = Self.tiny.image
        var rng = SeededGenerator(seed: 5)
        let pixels = Tensor.randomNormal([2, 3, tower.resolution, tower.resolution], using: &rng)
        let w = Tensor.randomNormal([2, Self.tiny.config.embedDim], using: &rng)
        func loss(_ extra: Tensor) -> Double {
            let f = tower.forward(pixels: pixels, extraTokens: extra).0
            return (0..<f.count).reduce(0.0) { $0 + Double(f[$1]) * Double(w[$1]) }
        }
        for shape in [[3, tower.width], [2, 3, tower.width]] {
            let extra = Tensor.randomUniform(shape, -0.2, 0.2, using: &rng)
            let (_, trace) = tower.forward(pixels: pixels, extraTokens: extra, keepCaches: true)
            let analytic = tower.backwardToExtraTokens(w, trace: trace)
            XCTAssertEqual(analytic.shape, shape)
            XCTAssertGreaterThan(analytic.maxAbs, 1e-4, "the gradient must not vanish")
            checkGradient("image tower -> inserted tokens \(shape)", at: extra, analytic: analytic, eps: 1e-2, atol: 2e-3, rtol: 2e-2,
                          maxProbes: 96, loss)
        }
    }

    func testImageTermsGradients() throws {
        var rng = SeededGenerator(seed: 9)
        let f = L2Normalize.forward(Tensor.randomNormal([6, 8], using: &rng)).0
        let labels = [0, 2, 1, 2, 0, 1]
        let p = Tensor.randomNormal([3, 8], std: 0.3, using: &rng)
        let (_, gIntra) = intraClassDispersion(images: f, labels: labels, prototypes: p)
        checkGradient("intra", at: f, analytic: gIntra, tolerance: .lossTerms) { intraClassDispersion(images: $0, labels: labels, prototypes: p).value }
        let (_, gAnchor) = imageAnchorCollapse(images: f, labels: labels, anchors: p)
        checkGradient("image anchors", at: f, analytic: gAnchor, tolerance: .lossTerms) { imageAnchorCollapse(images: $0, labels: labels, anchors: p).value }
        // mean_b (1 - f_b . e_{y_b}) is 0 when every feature sits on its anchor.
        let e = L2Normalize.forward(p).0
        XCTAssertEqual(imageAnchorCollapse(images: e.gatherRows(labels), labels: labels, anchors: e).value, 0, accuracy: 1e-6)
    }

    /// The whole DAPT+NPT step (text context and visual prompt; CE, intra, inter, lc, mi and the
    /// image-anchor term) against finite differences of the total loss.
    func testDAPTWithNPTGradientsOfEveryParameter() throws {
        let config = DAPTParityTests.config(npt: true)
        let base = try PromptTuner(model: Self.tiny, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config)
        XCTAssertEqual(Set(base.config.method.terms.map(\.key)), ["intra", "inter", "lc", "mi", "ia"])
        let batch = try base.loadBatch([0, 3, 7, 11], epoch: 0)
        let (value, grads) = base.evaluate(batch)
        XCTAssertNotNil(value.terms["ia"])
        let prototypes = base.inputs.prototypes!
        for name in [ParameterName.visualPrompt, ParameterName.textContext] {
            let x = base.parameters[name]!
            checkGradient("dapt+npt \(name)", at: x, analytic: grads[name]!, eps: 5e-3, atol: 5e-3, rtol: 5e-2, maxProbes: 12) { v in
                var p = base.initialParameters
                p[name] = v
                let t = try! PromptTuner(model: Self.tiny, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config,
                                         initialParameters: p, prototypes: prototypes)
                return t.evaluate(batch).0.total
            }
        }
    }

    func testVPTLearnsOnlyTheVisualPrompt() throws {
        var config = DAPTParityTests.config()
        config.method = try Method.named("vpt+npt")
        config.epochs = 1
        let t = try PromptTuner(model: Self.tiny, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config)
        XCTAssertEqual(t.parameters.names, [ParameterName.visualPrompt])
        XCTAssertEqual(config.method.terms.map(\.key), ["ia"])
        try t.runEpoch()
        XCTAssertNotEqual(t.parameters, t.initialParameters)
    }

    func testCheckpointRoundTripAndResumeIsExact() throws {
        var config = DAPTParityTests.config()
        config.epochs = 2
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tuner-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = try PromptTuner(model: Self.tiny, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config)
        try a.runEpoch()
        let url = dir.appendingPathComponent("prompt.safetensors")
        try a.checkpoint().write(to: url)
        let read = try ParameterCheckpoint.read(path: url.path)
        XCTAssertEqual(read, a.checkpoint())
        try a.runEpoch()
        let b = try PromptTuner(model: Self.tiny, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config)
        try b.restore(read)
        try b.runEpoch()
        XCTAssertEqual(b.parameters, a.parameters)
        XCTAssertEqual(b.history, a.history)
        // Initial parameters round-trip too (every run saves them).
        let initial = dir.appendingPathComponent("initial.safetensors")
        try ParameterCheckpoint.writeParameters(a.initialParameters, to: initial)
        XCTAssertEqual(try ParameterCheckpoint.readParameters(path: initial.path), a.initialParameters)
    }

    /// A `.ptprompt` that an earlier version's text-prompt trainer wrote mid-run (the same state:
    /// context, momentum, progress, generator) reads as a parameter checkpoint, and a run resumed
    /// from it ends bit for bit where the uninterrupted run ends.
    func testRunsResumeFromAnEarlierVersionsPTPrompt() throws {
        let features = TrainingParityTests.features
        var config = TrainConfig(method: try Method.named("kgcoop+npt"), epochs: 3, batchSize: 8)
        config.optimizer.learningRate = 0.05
        let full = try PromptTuner(model: Self.tiny, tokenizer: sharedTokenizer, data: .features(features), config: config)
        let first = try PromptTuner(model: Self.tiny, tokenizer: sharedTokenizer, data: .features(features), config: config)
        try full.runEpoch(); try first.runEpoch()
        let state = first.checkpoint()
        let old = PromptCheckpoint(
            header: .init(config: config, classNames: state.header.classNames, contextShape: state.parameters[ParameterName.textContext]!.shape,
                          hasMomentum: true, epochsDone: 1, steps: state.header.steps, rngState: state.header.rngState,
                          history: state.header.history, modelDigest: "", featuresDigest: ""),
            context: state.parameters[ParameterName.textContext]!, momentum: state.momentum[ParameterName.textContext]!)
        let url = try makeTempDir(self).appendingPathComponent("prompt.ptprompt")
        try old.write(to: url)
        let c = try ParameterCheckpoint.read(path: url.path)
        XCTAssertEqual(c.parameters, state.parameters)
        XCTAssertEqual(c.momentum, state.momentum)
        let resumed = try PromptTuner(model: Self.tiny, tokenizer: sharedTokenizer, data: .features(features), config: config)
        try resumed.restore(c)
        for _ in 1..<3 { try full.runEpoch(); try resumed.runEpoch() }
        XCTAssertEqual(resumed.parameters, full.parameters)
        XCTAssertEqual(resumed.history, full.history)
    }
}

final class DAPTPrototypeFileTests: XCTestCase {
    /// The pickle DAPT's prototype_generator writes (fp16 tensor, plain pickle) reads as its values.
    func testReadsDAPTsPrototypePickle() throws {
        let dir = repoRoot.appendingPathComponent("Goldens/dapt")
        let got = try DAPTPrototypeFile.read(path: dir.appendingPathComponent("shot_4-seed_1_prototype.pkl").path, dimension: 32)
        let want = try Safetensors.read(path: dir.appendingPathComponent("shot_4-seed_1_prototype.safetensors").path).tensors["prototypes"]!
        XCTAssertEqual(got, want)
        XCTAssertEqual(DAPTPrototypeFile.path(fewShotCache: "/d/split_fewshot/shot_16-seed_1.pkl"), "/d/split_fewshot/shot_16-seed_1_prototype.pkl")
        XCTAssertThrowsError(try DAPTPrototypeFile.read(path: dir.appendingPathComponent("shot_4-seed_1_prototype.pkl").path, dimension: 512))
    }
}
