import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// PromptSRC: its independent deep prompts (IVLP) in both towers, its self-regularising terms
/// and the gradient of every parameter through its whole loss by finite differences.
final class PromptSRCTests: XCTestCase {
    static let model = MaPLeTests.model  // text width 32, image width 48, three blocks per tower
    let names = ["cat", "golden retriever", "sunflower", "apple_pie"]
    var rng = SeededGenerator(seed: 7)

    static func method(text: Int = 3, vision: Int = 3) -> Method {
        var m = Method.promptsrc
        m.promptsrc = PromptSRCConfig(textDepth: text, visionDepth: vision)
        return m
    }

    func architecture(text: Int = 3, vision: Int = 3) throws -> PromptSRCArchitecture {
        var g = SeededGenerator(seed: 3)
        return try XCTUnwrap(try Self.method(text: text, vision: vision).makeArchitecture(
            model: Self.model, tokenizer: sharedTokenizer, classNames: names, template: "{}", rng: &g) as? PromptSRCArchitecture)
    }

    func testParametersAndInitialisation() throws {
        let a = try architecture()
        let p = a.initialParameters
        XCTAssertEqual(p.names, ["text.context", "promptsrc.visual", "promptsrc.deep_visual.1", "promptsrc.deep_visual.2",
                                 "promptsrc.deep_text.1", "promptsrc.deep_text.2"])
        XCTAssertEqual(p.names, ArchitectureKind.promptsrc.parameterNames(Self.method()))
        let shapes = ArchitectureKind.promptsrc.expectedShapes(Self.method(), classes: 4, textWidth: 32, imageWidth: 48)
        for name in p.names { XCTAssertEqual(shapes[name], p[name]!.shape.map { Optional($0) }, name) }
        let ids = sharedTokenizer.encode("a photo of a")
        XCTAssertEqual(p[ParameterName.textContext], Self.model.text.tokenEmbedding.gatherRows(ids))
        XCTAssertEqual(p["promptsrc.visual"]!.shape, [4, 48])
        XCTAssertLessThan(p["promptsrc.deep_visual.1"]!.maxAbs, 0.2)
        XCTAssertEqual(Method.promptsrc.terms.map(\.key), ["src_text", "src_image", "src_kl"])
        XCTAssertEqual(Method.promptsrc.terms.map(\.weight), [25, 10, 1])
        XCTAssertTrue(Method.promptsrc.needsImages)
        XCTAssertEqual(Method.promptsrc.termInputs, [.templateEnsemble, .frozenImages])
        let data = try JSONEncoder().encode(Self.method())
        XCTAssertEqual(try JSONDecoder().decode(Method.self, from: data), Self.method())
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(Method.maple), as: UTF8.self).contains("promptsrc"))
        XCTAssertEqual(ImageNetTemplates.all.count, 60)
        XCTAssertEqual(try architecture(text: 1, vision: 2).initialParameters.names,
                       ["text.context", "promptsrc.visual", "promptsrc.deep_visual.1"])
        var g = SeededGenerator(seed: 3)
        XCTAssertThrowsError(try Self.method(text: 0).makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: names,
                                                                       template: "{}", rng: &g)) { XCTAssertTrue("\($0)".contains("depth"), "\($0)") }
        var bad = p
        bad["promptsrc.visual"] = Tensor(zeros: [4, 32])
        XCTAssertThrowsError(try Self.method().makeArchitecture(model: Self.model, tokenizer: sharedTokenizer, classNames: names,
                                                                template: "{}", parameters: bad))
    }

    func perturbed(_ a: PromptSRCArchitecture) -> ParameterSet {
        var p = a.initialParameters
        for name in p.names { p[name] = p[name]! + .randomNormal(p[name]!.shape, std: 0.05, using: &rng) }
        return p
    }

    /// The text path is every class's whole prompt with the deep prompts at rows 1...4; the image
    /// path the tower with the visual tokens appended before ln_pre and the deep ones in place.
    func testPaths() throws {
        let a = try architecture()
        let p = perturbed(a)
        let layout = SequenceLayout(lengths: a.tokens.map(\.count))
        var rows: [Float] = []
        for t in a.tokens {
            var e = Self.model.text.tokenEmbedding.gatherRows(t)
            for j in 0..<4 { for x in 0..<32 { e[(1 + j) * 32 + x] = p[ParameterName.textContext]![j * 32 + x] } }
            rows += e.data
        }
        var packed = Tensor(shape: [layout.rows, 32], data: rows)
        Self.model.text.addPositionalEmbedding(to: &packed, layout: layout)
        let deep = DeepPrompts(values: [1: p["promptsrc.deep_text.1"]!, 2: p["promptsrc.deep_text.2"]!], position: 1, layout: layout)
        let whole = Self.model.text.forward(packed: packed, layout: layout, deepPrompts: deep).0
        XCTAssertLessThan(maxDiff(a.textFeatures(p), whole), 2e-5)
        let pixels = Tensor.randomNormal([3, 3, 16, 16], using: &rng)
        let want = Self.model.image.forward(pixels: pixels, extraTokens: p["promptsrc.visual"]!, promptEntry: .appendedBeforeLnPre,
                                            deepPrompts: [1: p["promptsrc.deep_visual.1"]!, 2: p["promptsrc.deep_visual.2"]!]).0
        XCTAssertLessThan(maxDiff(a.encodeImages(p, pixels: pixels, workspace: nil), want), 1e-6)
        let fw = a.forward(p, images: .pixels(pixels), workspace: Workspace())
        XCTAssertTrue(fw.imagesTrainable)
        XCTAssertLessThan(maxDiff(fw.images, L2Normalize.forward(want).0), 1e-6)
        XCTAssertLessThan(maxDiff(fw.text, whole), 2e-5)
        // Text-only (`eval --text-only`): the trained classifier, images through the unprompted tower.
        a.textOnly = true
        defer { a.textOnly = false }
        XCTAssertFalse(a.promptsImageTower)
        XCTAssertEqual(a.encodeImages(p, pixels: pixels, workspace: nil), Self.model.image.forward(pixels: pixels).0)
        guard case .shared(let c) = a.classifier(p) else { return XCTFail("PromptSRC's classifier is shared") }
        XCTAssertLessThan(maxDiff(c, whole), 2e-5)
    }

    /// The terms' kernels against their definitions and finite differences in feature space
    /// (steps far from the L1 kinks).
    func testTermKernels() throws {
        let (b, k, d) = (3, 4, 8)
        let t = L2Normalize.forward(.randomNormal([k, d], using: &rng)).0
        let f = L2Normalize.forward(.randomNormal([b, d], using: &rng)).0
        let inputs = TermInputs(templateEnsemble: L2Normalize.forward(.randomNormal([k, d], using: &rng)).0,
                                frozenImages: L2Normalize.forward(.randomNormal([b, d], using: &rng)).0)
        func args(_ t: Tensor, _ f: Tensor) -> TermArguments {
            TermArguments(text: t, images: f, labels: [0, 1, 2], inputs: inputs, logitScale: 7)
        }
        // KL by its definition: sum q (log q - log p) / (B K).
        let z = matmul(f, t, transB: true) * 7, z0 = matmul(inputs.frozenImages!, inputs.templateEnsemble!, transB: true) * 7
        var kl = 0.0
        for i in 0..<b {
            let zr = (0..<k).map { Double(z[i * k + $0]) }, z0r = (0..<k).map { Double(z0[i * k + $0]) }
            let lse = log(zr.map(exp).reduce(0, +)), lse0 = log(z0r.map(exp).reduce(0, +))
            for j in 0..<k { let q = exp(z0r[j] - lse0); kl += q * ((z0r[j] - lse0) - (zr[j] - lse)) }
        }
        XCTAssertEqual(LogitDistillationTerm(parameters: [:]).evaluate(args(t, f)).value, kl / Double(b * k), accuracy: 1e-6)
        var l1 = 0.0
        for i in 0..<(k * d) { l1 += Double(abs(t[i] - inputs.templateEnsemble![i])) }
        XCTAssertEqual(TextConsistencyL1Term(parameters: [:]).evaluate(args(t, f)).value, l1 / Double(k * d), accuracy: 1e-6)
        for term in [LogitDistillationTerm(parameters: [:]) as any ObjectiveTerm, TextConsistencyL1Term(parameters: [:]),
                     ImageConsistencyL1Term(parameters: [:])] {
            let r = term.evaluate(args(t, f))
            if let g = r.dText {
                checkGradient("\(type(of: term)) text", at: t, analytic: g, tolerance: .layers, eps: 1e-4) { term.evaluate(args($0, f)).value }
            }
            if let g = r.dImages {
                checkGradient("\(type(of: term)) images", at: f, analytic: g, tolerance: .layers, eps: 1e-4) { term.evaluate(args(t, $0)).value }
            }
        }
    }

    /// The whole loss (CE + 25 L1 text + 10 L1 image + KL) to every parameter, both towers' deep
    /// prompts included; the frozen inputs as the trainer makes them.
    func testGradientsOfEveryParameter() throws {
        try gradients(text: 3, vision: 3)
    }

    /// Depths that differ between the towers, and the text tower shallow.
    func testGradientsUnequalDepths() throws {
        try gradients(text: 1, vision: 2)
    }

    func gradients(text: Int, vision: Int) throws {
        let a = try architecture(text: text, vision: vision)
        let method = Self.method(text: text, vision: vision)
        let p = perturbed(a)
        let pixels = Tensor.randomNormal([2, 3, 16, 16], using: &rng)
        let labels = [2, 0]
        let inputs = TermInputs(
            templateEnsemble: templateEnsembleTextFeatures(model: Self.model, tokenizer: sharedTokenizer, templates: Array(ImageNetTemplates.all.prefix(3)),
                                                           classNames: names),
            frozenImages: L2Normalize.forward(Self.model.image.forward(pixels: pixels).0).0)
        func value(_ q: ParameterSet) -> ObjectiveValue {
            let fw = a.forward(q, images: .pixels(pixels), workspace: Workspace())
            return objective(method: method, textFeatures: fw.text, images: fw.images, labels: labels, logitScale: 20,
                             inputs: inputs, imageGradient: true)
        }
        let fw = a.forward(p, images: .pixels(pixels), workspace: Workspace())
        let v = objective(method: method, textFeatures: fw.text, images: fw.images, labels: labels, logitScale: 20,
                          inputs: inputs, imageGradient: true)
        XCTAssertEqual(Set(v.terms.keys), ["ce", "src_text", "src_image", "src_kl"])
        for key in ["src_text", "src_image", "src_kl"] { XCTAssertGreaterThan(v.terms[key]!, 0, key) }
        let g = fw.backward(v.dText, v.dImages)
        XCTAssertEqual(g.names, p.names)
        for name in p.names {
            XCTAssertGreaterThan(g[name]!.maxAbs, 0, "\(name) has a gradient")
            checkGradient("promptsrc \(text)/\(vision) \(name)", at: p[name]!, analytic: g[name]!, tolerance: .layers, eps: 1e-3) { x in
                var q = p
                q[name] = x
                return value(q).total
            }
        }
    }

    /// A depth past the towers' 3 blocks: the prompts of blocks 3 and beyond act nowhere and get
    /// no gradient (the reference does not make them).
    func testDepthPastTheBlocks() throws {
        let a = try architecture(text: 5, vision: 4)
        let p = perturbed(a)
        let pixels = Tensor.randomNormal([2, 3, 16, 16], using: &rng)
        let fw = a.forward(p, images: .pixels(pixels), workspace: Workspace())
        var ceOnly = Self.method(text: 5, vision: 4)
        ceOnly.terms = []
        let v = objective(method: ceOnly, textFeatures: fw.text, images: fw.images, labels: [1, 3], logitScale: 20,
                          inputs: TermInputs(), imageGradient: true)
        let g = fw.backward(v.dText, v.dImages)
        XCTAssertNil(g["promptsrc.deep_text.3"])
        XCTAssertNil(g["promptsrc.deep_visual.3"])
        XCTAssertNotNil(g["promptsrc.deep_text.2"])
    }

    /// Trains from augmented pixels through the general trainer, which computes the template
    /// ensemble once and the frozen image features every batch.
    func testTrainsFromImages() throws {
        var config = TrainConfig(method: Self.method(text: 2, vision: 2), epochs: 2, batchSize: 4)
        config.optimizer.learningRate = 0.05
        let t = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages(perClass: 2)), config: config)
        XCTAssertEqual(t.inputs.templateEnsemble?.shape, [SyntheticImages.classNames.count, 24])
        try t.runEpoch(); try t.runEpoch()
        XCTAssertEqual(t.steps, 4)
        for name in t.parameters.names {
            XCTAssertGreaterThan(maxDiff(t.parameters[name]!, t.initialParameters[name]!), 0, "\(name) moved")
        }
        XCTAssertTrue(t.history.allSatisfy { $0.terms["src_kl"] != nil && $0.terms["src_image"] != nil })
    }
}

/// Gaussian prompt aggregation: the reference's weights, the aggregate as the final prompt, and
/// checkpoints that carry it so a resumed run equals an uninterrupted one bit for bit.
extension PromptSRCTests {
    func testAggregationWeights() {
        // numpy, as trainers/promptsrc.py computes them for GPA_MEAN 15, GPA_STD 1, 20 epochs.
        let w = GaussianPromptAggregation(mean: 15, std: 1).weights(epochs: 20)
        XCTAssertEqual(w.count, 20)
        XCTAssertEqual(w.reduce(0, +), 1, accuracy: 1e-15)
        XCTAssertEqual(w[14], 0.39894228069443455, accuracy: 1e-16)
        XCTAssertEqual(w[0], 1.0966065601943704e-43, accuracy: 1e-57)
        XCTAssertEqual(w[19], 1.486719515826214e-06, accuracy: 1e-20)
        XCTAssertNotNil(GaussianPromptAggregation(mean: 1, std: 0).problem)
        XCTAssertEqual(Method.promptsrc.aggregation, GaussianPromptAggregation(mean: 15, std: 1))
        XCTAssertNil(Method.maple.aggregation)
    }

    func gpaConfig() -> TrainConfig {
        var m = Self.method(text: 2, vision: 2)
        m.promptsrc?.aggregation = GaussianPromptAggregation(mean: 2, std: 1)
        var config = TrainConfig(method: m, epochs: 3, batchSize: 4)
        config.optimizer.learningRate = 0.05
        return config
    }

    func testAggregateIsTheFinalPrompt() throws {
        let config = gpaConfig()
        let t = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages(perClass: 2)), config: config)
        let w = config.method.aggregation!.weights(epochs: 3).map(Float.init)
        var want = ParameterSet()
        for e in 0..<3 {
            try t.runEpoch()
            // Before the last epoch's end the aggregate is the epochs' so far, the prompts the trained ones.
            let trained = e < 2 ? t.parameters : nil
            if let trained {
                for n in trained.names { want[n] = want[n].map { $0 + trained[n]! * w[e] } ?? trained[n]! * w[e] }
                XCTAssertEqual(t.aggregate, want)
            }
        }
        XCTAssertEqual(t.parameters, t.aggregate, "the aggregate replaces the prompts after the last epoch")
        XCTAssertNotEqual(t.parameters, want)
    }

    func testResumeWithAggregateIsBitExact() throws {
        let config = gpaConfig()
        let data = TrainingData.images(SyntheticImages(perClass: 2))
        let whole = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: data, config: config)
        try whole.runEpoch(); try whole.runEpoch(); try whole.runEpoch()
        let part = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: data, config: config)
        try part.runEpoch()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("promptsrc-gpa-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("prompt.safetensors")
        try part.checkpoint().write(to: url)
        let read = try ParameterCheckpoint.read(path: url.path)
        XCTAssertEqual(read.aggregate, part.aggregate)
        XCTAssertEqual(read, part.checkpoint())
        let resumed = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: data, config: config)
        try resumed.restore(read)
        try resumed.runEpoch(); try resumed.runEpoch()
        XCTAssertEqual(resumed.parameters, whole.parameters)
        XCTAssertEqual(resumed.aggregate, whole.aggregate)
        XCTAssertEqual(resumed.checkpoint(), whole.checkpoint())

        // The reader accepts the aggregate only for a method that keeps one, and requires it there.
        var noGPA = read
        noGPA.header.config.method.promptsrc?.aggregation = nil
        try noGPA.write(to: url)
        XCTAssertThrowsError(try ParameterCheckpoint.read(path: url.path)) { XCTAssertTrue("\($0)".contains("aggregate"), "\($0)") }
        var missing = read
        missing.aggregate = ParameterSet(read.aggregate.names.dropFirst().map { ($0, read.aggregate[$0]!) })
        try missing.write(to: url)
        XCTAssertThrowsError(try ParameterCheckpoint.read(path: url.path)) { XCTAssertTrue("\($0)".contains("aggregate of 'text.context'"), "\($0)") }
        // A checkpoint without one cannot resume a run that keeps one.
        let fresh = try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: data, config: config)
        var stripped = read
        stripped.aggregate = ParameterSet()
        XCTAssertThrowsError(try fresh.restore(stripped)) { XCTAssertTrue("\($0)".contains("aggregate"), "\($0)") }
    }
}
