import CLIP
import PromptLearning
import TensorCore
import TestSupport
import XCTest

final class PromptEncoderTests: XCTestCase {
    let names = ["cat", "golden_retriever", "Boeing 747-400", "apple pie", "x"]

    func learner(_ config: PromptConfig, context: Tensor? = nil) throws -> PromptLearner {
        var rng = SeededGenerator(seed: 1)
        return try PromptLearner(config: config, classNames: names, text: smallModel.text, tokenizer: sharedTokenizer,
                                 context: context, rng: &rng)
    }

    /// Reference: the class's full prompt (positions 0...EOT) through the plain text tower.
    func plainFeatures(_ l: PromptLearner, _ ctx: Tensor) -> Tensor {
        var rows: [Tensor] = []
        for (k, tokens) in l.tokens.enumerated() {
            var e = smallModel.text.embed([tokens])  // 1, T, D
            let d = smallModel.text.width
            let c = l.config.classSpecific ? ctx.slice(rows: k..<(k + 1)).reshaped([l.config.contextLength, d]) : ctx
            for j in 0..<l.config.contextLength { for x in 0..<d { e[(1 + j) * d + x] = c[j * d + x] } }
            rows.append(smallModel.text.forward(embeddings: e, eot: [l.eot[k]]).0)
        }
        return Tensor(shape: [rows.count, rows[0].lastDim], data: rows.flatMap(\.data))
    }

    func testSharedPrefixPathEqualsPlainPathValuesAndGradient() throws {
        // A context at a scale where finite differences are accurate (N(0, 0.02) makes LayerNorm very curved).
        var crng = SeededGenerator(seed: 8)
        let shared = try learner(PromptConfig(contextLength: 4), context: .randomNormal([4, smallModel.text.width], std: 0.3, using: &crng))
        XCTAssertTrue(shared.config.sharesPrefix)
        let encoder = PromptEncoder(text: smallModel.text)
        let (f, trace) = encoder.forward(shared, context: shared.context)
        XCTAssertLessThan(maxDiff(f, plainFeatures(shared, shared.context)), 1e-5)
        // Gradient of a random projection of the features w.r.t. the context, vs finite differences.
        var rng = SeededGenerator(seed: 2)
        let r = Tensor.randomNormal(f.shape, using: &rng)
        let g = encoder.backward(r, trace: trace, learner: shared)
        checkGradient("shared context", at: shared.context, analytic: g, tolerance: .lossTerms, eps: 3e-3, atol: 3e-3) { ctx in
            let out = encoder.forward(shared, context: ctx, keepCaches: false).0
            return zip(out.data, r.data).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        // And equal to the same learner forced through the plain (per-class) path.
        var plainConfig = shared.config
        plainConfig.position = .middle
        plainConfig.contextLength = 4
        _ = plainConfig  // positions differ, so compare with CSC instead: same context copied per class.
        let csc = try learner(PromptConfig(contextLength: 4, classSpecific: true),
                              context: Tensor(shape: [names.count, 4, smallModel.text.width],
                                              data: Array((0..<names.count).map { _ in shared.context.data }.joined())))
        let (fc, tc) = encoder.forward(csc, context: csc.context)
        XCTAssertLessThan(maxDiff(fc, f), 1e-5, "class-specific copies of one context give the shared features")
        let gc = encoder.backward(r, trace: tc, learner: csc)
        var summed = Tensor(zeros: shared.context.shape)
        for k in 0..<names.count { summed.accumulate(gc.slice(rows: k..<(k + 1)).reshaped(shared.context.shape)) }
        XCTAssertLessThan(maxDiff(summed, g), 1e-4 * g.maxAbs, "the shared gradient is the sum of the per-class gradients")
    }

    /// The arena path (forward into a workspace keeping only what the input gradient reads, backward
    /// releasing block by block) equals the plain path bit for bit, step after step, on both the
    /// shared-prefix and the per-class layouts; the second step reuses the first one's buffers.
    func testWorkspacePathIsBitIdentical() throws {
        let encoder = PromptEncoder(text: smallModel.text)
        var rng = SeededGenerator(seed: 9)
        for config in [PromptConfig(contextLength: 4), PromptConfig(contextLength: 3, position: .middle),
                       PromptConfig(contextLength: 2, classSpecific: true)] {
            let l = try learner(config)
            let workspace = Workspace()
            for step in 0..<2 {
                let (f, trace) = encoder.forward(l, context: l.context)
                let r = Tensor.randomNormal(f.shape, using: &rng)
                let g = encoder.backward(r, trace: trace, learner: l)
                var (fw, tw) = encoder.forward(l, context: l.context, workspace: workspace)
                let gw = encoder.backward(r, releasing: &tw, learner: l, workspace: workspace)
                XCTAssertEqual(fw, f, "features, \(config), step \(step)")
                XCTAssertEqual(gw, g, "context gradient, \(config), step \(step)")
            }
            XCTAssertGreaterThan(workspace.reused, 0, "the second step reuses the first one's buffers")
        }
    }

    func testMiddleAndFrontPositionsGradient() throws {
        let encoder = PromptEncoder(text: smallModel.text)
        var rng = SeededGenerator(seed: 4)
        for position in [ClassTokenPosition.middle, .front] {
            let l = try learner(PromptConfig(contextLength: 5, position: position),
                                context: .randomNormal([5, smallModel.text.width], std: 0.3, using: &rng))
            let (f, trace) = encoder.forward(l, context: l.context)
            let r = Tensor.randomNormal(f.shape, using: &rng)
            let g = encoder.backward(r, trace: trace, learner: l)
            checkGradient("\(position) context", at: l.context, analytic: g, tolerance: .lossTerms, eps: 3e-3, atol: 3e-3) { ctx in
                let out = encoder.forward(l, context: ctx, keepCaches: false).0
                return zip(out.data, r.data).reduce(0) { $0 + Double($1.0) * Double($1.1) }
            }
        }
    }

    func testInitTextAndItsErrors() throws {
        let l = try learner(PromptConfig(contextLength: 4, initText: "a photo of a"))
        let ids = sharedTokenizer.encode("a photo of a")
        XCTAssertEqual(l.context, smallModel.text.tokenEmbedding.gatherRows(ids))
        XCTAssertEqual(l.tokens[0].prefix(6), [49406] + ids + [sharedTokenizer.encode("cat")[0]])
        XCTAssertThrowsError(try learner(PromptConfig(contextLength: 16, initText: "a photo of a"))) {
            XCTAssertTrue("\($0)".contains("4 tokens but the context length is 16"), "\($0)")
        }
        XCTAssertThrowsError(try learner(PromptConfig(contextLength: 3, initText: "a close-up photo"))) {
            XCTAssertTrue("\($0)".contains("3 words but"), "\($0)")
        }
        let csc = try learner(PromptConfig(contextLength: 4, classSpecific: true, initText: "a photo of a"))
        XCTAssertEqual(csc.context.shape, [names.count, 4, smallModel.text.width])
    }

    func testMethodNames() throws {
        XCTAssertEqual(try Method.named("npt").terms.map(\.key), ["lc", "mi"])
        XCTAssertEqual(try Method.named("kgcoop+npt").terms.map(\.key), ["kg", "lc", "mi"])
        XCTAssertEqual(try Method.named("coop").prompt.contextLength, 16)
        XCTAssertThrowsError(try Method.named("prograd")) { XCTAssertTrue("\($0)".contains("unknown method 'prograd'"), "\($0)") }
        XCTAssertThrowsError(try Method.named("coop+kgcoop")) { XCTAssertTrue("\($0)".contains("only +npt and +cpt compose"), "\($0)") }
        // Library errors name the value, not a command-line flag.
        XCTAssertThrowsError(try Method.named("")) {
            XCTAssertTrue("\($0)".contains("empty method name") && !"\($0)".contains("--"), "\($0)")
        }
    }

    /// KgCoOp's DTD template is its own; elsewhere, and for CoOp and DAPT, the dataset's template.
    func testMethodHandTemplates() throws {
        let coopDTD = "{} texture."  // CoOp's CUSTOM_TEMPLATES["DescribableTextures"]
        for spec in ["kgcoop", "kgcoop+npt"] {
            let m = try Method.named(spec)
            XCTAssertEqual(m.handTemplate(dataset: "dtd", default: coopDTD), "a photo of a {}, a type of texture.", spec)
            XCTAssertEqual(m.handTemplate(dataset: "oxford_pets", default: "a photo of a {}, a type of pet."),
                           "a photo of a {}, a type of pet.", spec)
        }
        for spec in ["coop", "npt", "coop-csc", "dapt-text", "dapt-text+npt"] {
            XCTAssertEqual(try Method.named(spec).handTemplate(dataset: "dtd", default: coopDTD), coopDTD, spec)
        }
    }

    /// Prompt checkpoints store the method in their header: the hand templates round-trip, and a
    /// method written before they existed decodes to its base method's built-in ones.
    func testMethodCodingWithAndWithoutHandTemplates() throws {
        var custom = try Method.named("kgcoop+npt")
        custom.handTemplates["eurosat"] = "a satellite photo of {}."
        XCTAssertEqual(try JSONDecoder().decode(Method.self, from: JSONEncoder().encode(custom)), custom)

        for spec in ["kgcoop+npt", "coop", "dapt-text"] {
            let m = try Method.named(spec)
            var json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(m)) as? [String: Any])
            XCTAssertNotNil(json.removeValue(forKey: "handTemplates"), spec)
            let old = try JSONDecoder().decode(Method.self, from: JSONSerialization.data(withJSONObject: json))
            XCTAssertEqual(old, m, spec)
        }
        // An explicit empty table stays empty.
        var none = try Method.named("kgcoop")
        none.handTemplates = [:]
        XCTAssertEqual(try JSONDecoder().decode(Method.self, from: JSONEncoder().encode(none)).handTemplates, [:])
    }

    /// The prompts are assembled and their gradient gathered through the text tower's backend:
    /// on a backend that counts its calls, every layout (shared prefix, class in the middle,
    /// class-specific) equals the CPU's bit for bit, with the row operations counted.
    func testPromptsAreAssembledOnTheTowersBackend() throws {
        let recording = RecordingBackend()
        var text = smallModel.text
        text.backend = recording
        let (plain, recorded) = (PromptEncoder(text: smallModel.text), PromptEncoder(text: text))
        var rng = SeededGenerator(seed: 10)
        for config in [PromptConfig(contextLength: 4), PromptConfig(contextLength: 3, position: .middle),
                       PromptConfig(contextLength: 2, classSpecific: true)] {
            let l = try learner(config)
            recording.reset()
            let (f, trace) = plain.forward(l, context: l.context)
            let (fr, tr) = recorded.forward(l, context: l.context)
            let r = Tensor.randomNormal(f.shape, using: &rng)
            XCTAssertEqual(fr, f, "features, \(config)")
            XCTAssertEqual(recorded.backward(r, trace: tr, learner: l), plain.backward(r, trace: trace, learner: l), "gradient, \(config)")
            XCTAssertGreaterThanOrEqual(recording.calls["copyRows"] ?? 0, 2, "frozen rows and context rows, \(config)")
            XCTAssertGreaterThanOrEqual(recording.calls["copyRows+"] ?? 0, 1, "positions, \(config)")
        }
    }
}
