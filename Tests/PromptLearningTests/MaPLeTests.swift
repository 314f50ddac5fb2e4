import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// MaPLe's architecture: its parameters and their initialisation, the shared-prefix text path
/// equal to every class's whole prompt with the deep prompts, the image path equal to the tower
/// fed the projected prompts, and the gradient of every parameter by finite differences.
final class MaPLeTests: XCTestCase {
    /// Text width 32, image width 48: the projections are not square. Three blocks per tower.
    static let config = CLIPConfig(embedDim: 24, imageResolution: 16, patchSize: 8, visionWidth: 48, visionLayers: 3,
                                   visionHeads: 2, contextLength: 77, vocabSize: 49408, textWidth: 32, textLayers: 3, textHeads: 2)
    static let model = CLIPModel.random(config: config, seed: 12)
    let names = ["cat", "golden retriever", "sunflower", "apple_pie"]
    var rng = SeededGenerator(seed: 5)

    static func method(depth: Int = 3) -> Method {
        var m = Method.maple
        m.maple = MaPLeConfig(promptDepth: depth)
        return m
    }

    func architecture(depth: Int = 3) throws -> MaPLeArchitecture {
        var g = SeededGenerator(seed: 3)
        return try XCTUnwrap(try Self.method(depth: depth).makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: names,
                                                                            template: "a photo of a {}.", rng: &g) as? MaPLeArchitecture)
    }

    func testParametersAndInitialisation() throws {
        let a = try architecture()
        let p = a.initialParameters
        XCTAssertEqual(p.names, ["text.context", "maple.proj.weight", "maple.proj.bias", "maple.deep_text.1", "maple.deep_text.2",
                                 "maple.deep_proj.1.weight", "maple.deep_proj.1.bias", "maple.deep_proj.2.weight", "maple.deep_proj.2.bias"])
        XCTAssertEqual(p.names, ArchitectureKind.maple.parameterNames(Self.method()))
        let shapes = ArchitectureKind.maple.expectedShapes(Self.method(), classes: 4, textWidth: 32, imageWidth: 48)
        for name in p.names { XCTAssertEqual(shapes[name], p[name]!.shape.map { Optional($0) }, name) }
        // The context: the embeddings of "a photo" (tokens 1...2 of "a photo of a").
        let ids = sharedTokenizer.encode("a photo of a")
        XCTAssertEqual(p[ParameterName.textContext], Self.model.text.tokenEmbedding.gatherRows(Array(ids.prefix(2))))
        // The prompt stays "a photo of a {class}.", with the suffix "of a {class}." fixed.
        XCTAssertEqual(a.tokens[3], sharedTokenizer.tokenize(["a photo of a apple pie."], contextLength: 77)[0].prefix(a.tokens[3].count).map(Int.init))
        // The deep projections are copies of one Linear; proj is drawn apart; bounds 1/sqrt(D).
        XCTAssertEqual(p["maple.deep_proj.1.weight"], p["maple.deep_proj.2.weight"])
        XCTAssertEqual(p["maple.deep_proj.1.bias"], p["maple.deep_proj.2.bias"])
        XCTAssertNotEqual(p["maple.proj.weight"], p["maple.deep_proj.1.weight"])
        XCTAssertLessThanOrEqual(p["maple.proj.weight"]!.maxAbs, 1 / Float(32).squareRoot())
        XCTAssertNotEqual(p["maple.deep_text.1"], p["maple.deep_text.2"])
        XCTAssertLessThan(p["maple.deep_text.1"]!.maxAbs, 0.2)
        XCTAssertTrue(a.promptsImageTower)
        XCTAssertTrue(Method.maple.needsImages)
        XCTAssertEqual(try Method.named("maple").maple?.promptDepth, 9)
        // The depth is written into the method's header and read back; other methods write none.
        let data = try JSONEncoder().encode(Self.method())
        XCTAssertEqual(try JSONDecoder().decode(Method.self, from: data), Self.method())
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(Method.coop), as: UTF8.self).contains("maple"))
        // Depth 1 is shallow MaPLe; depth 0 is refused.
        XCTAssertEqual(try architecture(depth: 1).initialParameters.names, ["text.context", "maple.proj.weight", "maple.proj.bias"])
        var g = SeededGenerator(seed: 3)
        XCTAssertThrowsError(try Self.method(depth: 0).makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: names,
                                                                        template: "{}", rng: &g)) { XCTAssertTrue("\($0)".contains("depth"), "\($0)") }
        // Given parameters are checked by shape.
        var bad = p
        bad["maple.proj.weight"] = Tensor(zeros: [32, 32])
        XCTAssertThrowsError(try Self.method().makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: names,
                                                                template: "{}", parameters: bad))
    }

    /// Perturbed parameters, so that no two deep prompts or projections are alike.
    func perturbed(_ a: MaPLeArchitecture) -> ParameterSet {
        var p = a.initialParameters
        for name in p.names { p[name] = p[name]! + .randomNormal(p[name]!.shape, std: 0.05, using: &rng) }
        return p
    }

    /// The shared prefix with the deep prompts replacing its rows equals every class's whole prompt
    /// encoded on its own with the deep prompts replacing rows 1...M of each.
    func testSharedPrefixEqualsWholePrompts() throws {
        let a = try architecture()
        let p = perturbed(a)
        let text = a.textFeatures(p)
        let layout = SequenceLayout(lengths: a.tokens.map(\.count))
        var rows: [Float] = []
        for t in a.tokens {
            var e = Self.model.text.tokenEmbedding.gatherRows(t)
            for j in 0..<2 { for x in 0..<32 { e[(1 + j) * 32 + x] = p[ParameterName.textContext]![j * 32 + x] } }
            rows += e.data
        }
        let h = Tensor(shape: [layout.rows, 32], data: rows).reshaped([layout.rows, 32])
        var packed = h
        Self.model.text.addPositionalEmbedding(to: &packed, layout: layout)
        let deep = DeepPrompts(values: [1: p["maple.deep_text.1"]!, 2: p["maple.deep_text.2"]!], position: 1, layout: layout)
        XCTAssertEqual(deep.blocks[1]?.starts.count, 4, "one span per class without a shared prefix")
        let whole = Self.model.text.forward(packed: packed, layout: layout, deepPrompts: deep).0
        XCTAssertLessThan(maxDiff(text, whole), 2e-5)
        // The deep prompts change the features (they do act).
        var q = p
        q["maple.deep_text.2"] = Tensor(zeros: [2, 32])
        XCTAssertGreaterThan(maxDiff(a.textFeatures(q), text), 1e-4)
        // The training forward's text features are the same computation.
        let pixels = Tensor.randomNormal([2, 3, 16, 16], using: &rng)
        let fw = a.forward(p, images: .pixels(pixels), workspace: Workspace())
        XCTAssertLessThan(maxDiff(fw.text, text), 1e-6)
        guard case .shared(let c) = a.classifier(p) else { return XCTFail("MaPLe's classifier is shared") }
        XCTAssertLessThan(maxDiff(c, text), 1e-6)
    }

    /// The image path: the tower fed the projected context appended before ln_pre and the projected
    /// deep prompts in place of the last M rows; the forward's features are those, normalised.
    func testImagePathIsTheProjectedPrompts() throws {
        let a = try architecture()
        let p = perturbed(a)
        let pixels = Tensor.randomNormal([3, 3, 16, 16], using: &rng)
        func lin(_ x: String, _ w: String, _ b: String) -> Tensor {
            var y = matmul(p[x]!, p[w]!, transB: true)
            y.addRowVector(p[b]!)
            return y
        }
        let want = Self.model.image.forward(pixels: pixels, extraTokens: lin("text.context", "maple.proj.weight", "maple.proj.bias"),
                                            promptEntry: .appendedBeforeLnPre,
                                            deepPrompts: [1: lin("maple.deep_text.1", "maple.deep_proj.1.weight", "maple.deep_proj.1.bias"),
                                                          2: lin("maple.deep_text.2", "maple.deep_proj.2.weight", "maple.deep_proj.2.bias")]).0
        XCTAssertLessThan(maxDiff(a.encodeImages(p, pixels: pixels, workspace: nil), want), 1e-6)
        let fw = a.forward(p, images: .pixels(pixels), workspace: Workspace())
        XCTAssertTrue(fw.imagesTrainable)
        XCTAssertLessThan(maxDiff(fw.images, L2Normalize.forward(want).0), 1e-6)
    }

    /// Cross-entropy's gradient to every parameter, text and image sides together.
    /// The context's rows are small next to the positional embeddings, so ln_1 bends the loss
    /// within a step of 1e-2: a step of 1e-3 (the loss is smooth enough in Float32 for it).
    func testGradientsOfEveryParameter() throws {
        try gradients(depth: 3)
    }

    /// Shallow MaPLe (depth 1): only the context and `proj`.
    func testGradientsShallow() throws {
        try gradients(depth: 1)
    }

    /// A depth past the towers' 3 blocks, as the reference runs it: the prompts of block 3 and
    /// beyond exist, act nowhere and get no gradient (so SGD leaves them as they are); the rest
    /// is depth 3 exactly.
    func testDepthPastTheBlocks() throws {
        let deep = try architecture(depth: 5), three = try architecture(depth: 3)
        var p = perturbed(deep)
        XCTAssertEqual(p.names.count, 3 + 4 + 8)
        let pixels = Tensor.randomNormal([2, 3, 16, 16], using: &rng)
        let fw = deep.forward(p, images: .pixels(pixels), workspace: Workspace())
        let q3 = ParameterSet(three.initialParameters.names.map { ($0, p[$0]!) })
        let fw3 = three.forward(q3, images: .pixels(pixels), workspace: Workspace())
        XCTAssertEqual(fw.text, fw3.text)
        XCTAssertEqual(fw.images, fw3.images)
        let v = objective(method: Self.method(depth: 5), textFeatures: fw.text, images: fw.images, labels: [1, 3], logitScale: 20,
                          inputs: TermInputs(), imageGradient: true)
        let g = fw.backward(v.dText, v.dImages), g3 = fw3.backward(v.dText, v.dImages)
        XCTAssertEqual(g, g3)
        var sgd = SGDState()
        let before = p
        sgd.step(&p, gradients: g, lr: 0.1, config: OptimizerConfig())
        for name in ["maple.deep_text.3", "maple.deep_text.4", "maple.deep_proj.3.weight", "maple.deep_proj.4.bias"] {
            XCTAssertEqual(p[name], before[name], name)
        }
        XCTAssertNotEqual(p["maple.deep_text.2"], before["maple.deep_text.2"])
    }

    func gradients(depth: Int) throws {
        let a = try architecture(depth: depth)
        let p = perturbed(a)
        let pixels = Tensor.randomNormal([2, 3, 16, 16], using: &rng)
        let labels = [2, 0]
        func value(_ q: ParameterSet) -> ObjectiveValue {
            let fw = a.forward(q, images: .pixels(pixels), workspace: Workspace())
            return objective(method: Self.method(depth: depth), textFeatures: fw.text, images: fw.images, labels: labels, logitScale: 20,
                             inputs: TermInputs(), imageGradient: true)
        }
        let fw = a.forward(p, images: .pixels(pixels), workspace: Workspace())
        let v = objective(method: Self.method(depth: depth), textFeatures: fw.text, images: fw.images, labels: labels, logitScale: 20,
                          inputs: TermInputs(), imageGradient: true)
        let g = fw.backward(v.dText, v.dImages)
        XCTAssertEqual(g.names, p.names)
        for name in p.names {
            XCTAssertGreaterThan(g[name]!.maxAbs, 0, "\(name) has a gradient")
            checkGradient("maple depth \(depth) \(name)", at: p[name]!, analytic: g[name]!, tolerance: .layers, eps: 1e-3) { x in
                var q = p
                q[name] = x
                return value(q).total
            }
        }
    }
}

extension MaPLeTests {
    /// Trains from augmented pixels through the general trainer (batch 4, as its recipe); the
    /// checkpointed parameters rebuild the same architecture for evaluation.
    func testTrainsFromImages() throws {
        var config = TrainConfig(method: Self.method(depth: 2), epochs: 2, batchSize: 4)
        config.optimizer.learningRate = 0.05
        let t = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages(perClass: 2)), config: config)
        try t.runEpoch(); try t.runEpoch()
        XCTAssertEqual(t.steps, 4)  // 10 images: two full batches of 4 per epoch
        for name in t.parameters.names {
            XCTAssertGreaterThan(maxDiff(t.parameters[name]!, t.initialParameters[name]!), 0, "\(name) moved")
        }
        let a = try Self.method(depth: 2).makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: SyntheticImages.classNames,
                                                           template: "{}", parameters: t.parameters)
        let pixels = try SyntheticImages(perClass: 1).load([0, 1], seeds: [1, 2], resolution: 16).pixels
        XCTAssertEqual(a.encodeImages(t.parameters, pixels: pixels, workspace: nil),
                       t.architecture.encodeImages(t.parameters, pixels: pixels, workspace: nil))
    }
}

extension MaPLeTests {
    /// maple+npt: NPT's text terms and, as MaPLe's image path is prompted, the image-anchor term;
    /// it trains from images.
    func testWithNPT() throws {
        var m = try Method.named("maple+npt")
        XCTAssertEqual(m.terms.map(\.key), ["lc", "mi", "ia"])
        XCTAssertEqual(m.maple, MaPLeConfig(promptDepth: 9))
        m.maple = MaPLeConfig(promptDepth: 2)
        var config = TrainConfig(method: m, epochs: 1, batchSize: 4)
        config.optimizer.learningRate = 0.05
        let t = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages(perClass: 2)), config: config)
        try t.runEpoch()
        XCTAssertEqual(t.steps, 2)
        XCTAssertTrue(t.parameters.allFinite)
    }
}

extension MaPLeTests {
    /// maple+cpt: CPT's three terms; the compactness term's image gradient reaches the prompts
    /// that act only on the image tower (the projections), and it trains from images.
    func testWithCPT() throws {
        var m = try Method.named("maple+cpt")
        XCTAssertEqual(m.terms.map(\.key), ["tetf", "cc", "rs"])
        m.maple = MaPLeConfig(promptDepth: 2)
        m.terms[0].parameters["clusters"] = 2
        var config = TrainConfig(method: m, epochs: 1, batchSize: 4)
        config.optimizer.learningRate = 0.05
        let t = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages(perClass: 2)), config: config)
        let batch = try t.loadBatch([0, 1, 2, 3], epoch: 0)
        let (with, gWith) = t.evaluate(batch)
        XCTAssertEqual(Set(with.terms.keys), ["ce", "tetf", "cc", "rs"])
        var noCC = m
        noCC.terms[1].weight = 0
        var c2 = config
        c2.method = noCC
        let u = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages(perClass: 2)), config: c2)
        let (_, gWithout) = u.evaluate(try u.loadBatch([0, 1, 2, 3], epoch: 0))
        let proj = MaPLeArchitecture.projWeight
        XCTAssertGreaterThan(maxDiff(gWith[proj]!, gWithout[proj]!), 1e-4 * gWithout[proj]!.maxAbs, "cc's image gradient reaches proj")
        try t.runEpoch()
        XCTAssertTrue(t.parameters.allFinite)
    }
}
