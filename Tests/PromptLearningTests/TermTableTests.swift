import Foundation
@testable import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// A term that exists only in this test: its type and its row (`LossTerms.register`) are all it
/// takes for methods, the objective, checkpoints and validation to carry it.
struct ScaledMeanTerm: ObjectiveTerm {
    static let key = "fake", codingName = "scaledMean"
    static let parameters = [TermParameter("scale", default: 3, minimumExclusive: true, maximum: 10, help: "a test parameter")]
    static var needs: Set<TermInput> { [] }
    static func problem(weight: Float, parameters: [String: Float]) -> String? {
        weight * parameters["scale"]! > 50 ? "weight x scale must be at most 50" : nil
    }
    var scale: Float
    init(parameters: [String: Float]) { scale = parameters["scale"]! }
    /// scale * mean of the normalised text features' elements.
    func evaluate(_ a: TermArguments) -> TermResult {
        let n = Float(a.text.count)
        return TermResult(value: Double(scale) * a.text.data.reduce(0) { $0 + Double($1) } / Double(n),
                          dText: Tensor(shape: a.text.shape, data: [Float](repeating: scale / n, count: a.text.count)))
    }
}

final class TermTableTests: XCTestCase {
    override func setUp() {
        LossTerms.register(ScaledMeanTerm.self)
        Method.register(Method(name: "fake-coop", prompt: PromptConfig(contextLength: 4), terms: [LossTerm("fake", weight: 2)]))
    }

    func testBuiltInTableAndDefaults() {
        XCTAssertEqual(LossTerms.builtIn.map { $0.key }, ["kg", "hsic", "inter", "lc", "mi", "intra", "ia", "src_text", "src_image", "src_kl", "tetf", "cc", "rs"])
        XCTAssertEqual(Set(LossTerms.table.map { $0.codingName }).count, LossTerms.table.count)
        // Declared defaults fill parameters not given; the method table lists terms by key.
        XCTAssertEqual(Method.daptText.terms, [LossTerm("inter", weight: 0.01, parameters: ["tau": 2])])
        XCTAssertEqual(LossTerm("inter", weight: 1).parameters, ["tau": 2])
        XCTAssertEqual(Method.dapt.terms.map(\.key), ["intra", "inter"])
        XCTAssertEqual(try Method.named("dapt+npt").terms.map(\.key), ["intra", "inter", "lc", "mi", "ia"])
        XCTAssertTrue(Method.dapt.needsPrototypes)
        XCTAssertEqual(try Method.named("kgcoop+npt").termInputs, [.zeroShot, .anchors, .prototypes])
    }

    /// DeKg = KgCoOp's prompt, templates and term + HSIC; it composes with NPT like any base.
    func testDeKgIsKgCoOpPlusHSIC() throws {
        let dekg = try Method.named("dekg")
        XCTAssertEqual(dekg.terms, [LossTerm("kg", weight: 8), LossTerm("hsic", weight: 6)])
        XCTAssertEqual(dekg.prompt, Method.kgcoop.prompt)
        XCTAssertEqual(dekg.handTemplates, Method.kgcoop.handTemplates)
        XCTAssertEqual(dekg.architecture, .context)
        XCTAssertEqual(dekg.termInputs, [.zeroShot])
        let npt = try Method.named("dekg+npt")
        XCTAssertEqual(npt.terms.map(\.key), ["kg", "hsic", "lc", "mi"])
        XCTAssertNotNil(npt.anchors)
        XCTAssertEqual(npt.name, "dekg+npt")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(dekg.terms), as: UTF8.self)
        XCTAssertEqual(json, #"[{"knowledgeConsistency":{"weight":8}},{"hsicIndependence":{"weight":6}}]"#)
        XCTAssertEqual(try JSONDecoder().decode([LossTerm].self, from: Data(json.utf8)), dekg.terms)
        XCTAssertEqual(try JSONDecoder().decode(Method.self, from: try encoder.encode(npt)), npt)
    }

    /// Checkpoints store terms as the enum did (`{"interClassDispersion": {"tau": 2, "weight": ...}}`,
    /// sorted keys): the bytes are unchanged and older headers read.
    func testSerialisedFormIsTheEnumsAndOldFormsRead() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let old = #"[{"intraClassDispersion":{"weight":100}},{"interClassDispersion":{"tau":2,"weight":0.01}},{"languageCollapse":{"weight":1}},{"modalityIsomorphism":{"weight":1}},{"imageAnchorCollapse":{"weight":1}}]"#
        let dapt = try Method.named("dapt+npt")
        XCTAssertEqual(String(decoding: try encoder.encode(dapt.terms), as: UTF8.self), old)
        XCTAssertEqual(try JSONDecoder().decode([LossTerm].self, from: Data(old.utf8)), dapt.terms)
        let kg = #"[{"knowledgeConsistency":{"weight":8}},{"languageCollapse":{"weight":1}},{"modalityIsomorphism":{"weight":1}}]"#
        XCTAssertEqual(try JSONDecoder().decode([LossTerm].self, from: Data(kg.utf8)), try Method.named("kgcoop+npt").terms)
        // A parameter left out reads as its default; unknown names are refused with the name.
        XCTAssertEqual(try JSONDecoder().decode(LossTerm.self, from: Data(#"{"interClassDispersion":{"weight":1}}"#.utf8)).parameters, ["tau": 2])
        for (bad, says) in [(#"{"interClassDispersion":{"weight":1,"tua":2}}"#, "no parameter 'tua'"),
                            (#"{"cocoopTerm":{"weight":1}}"#, "unknown loss term 'cocoopTerm'"),
                            (#"{"knowledgeConsistency":{"weight":1},"languageCollapse":{"weight":1}}"#, "one key")] {
            XCTAssertThrowsError(try JSONDecoder().decode(LossTerm.self, from: Data(bad.utf8))) { XCTAssertTrue("\($0)".contains(says), "\($0)") }
        }
        // A registered term serialises under its coding name with its parameters, and reads back.
        let fake = LossTerm("fake", weight: 2, parameters: ["scale": 4])
        XCTAssertEqual(String(decoding: try encoder.encode(fake), as: UTF8.self), #"{"scaledMean":{"scale":4,"weight":2}}"#)
        XCTAssertEqual(try JSONDecoder().decode(LossTerm.self, from: try encoder.encode(fake)), fake)
    }

    /// A prompt checkpoint written before the term table (`prompttune train --method dapt-text+npt
    /// --beta-t 0.3 --tau 1.5 --epochs 2 --batch-size 8 --lr 0.05` on Goldens/engine/features.safetensors
    /// with the tiny CLIP, commit d6662b2) reads, with its weights and temperature, and writes back
    /// to the same bytes.
    func testCheckpointFromBeforeTheTableReadsAndWritesBackUnchanged() throws {
        let url = repoRoot.appendingPathComponent("Goldens/compat/dapt-text+npt-before-term-table.ptprompt")
        let c = try PromptCheckpoint.read(path: url.path)
        var expected = try Method.named("dapt-text+npt")
        expected.terms[0].weight = 0.3
        expected.terms[0].parameters["tau"] = 1.5
        XCTAssertEqual(c.header.config.method, expected)
        XCTAssertEqual(c.header.epochsDone, 2)
        let copy = try makeTempDir(self).appendingPathComponent("copy.ptprompt")
        try c.write(to: copy)
        XCTAssertEqual(try Data(contentsOf: copy), try Data(contentsOf: url))
    }

    func testValidationComesFromTheDeclarations() throws {
        var t = LossTerm("inter", weight: 0.5)
        XCTAssertNil(t.problem)
        t.parameters["tau"] = 0
        XCTAssertEqual(t.problem, "parameter tau of loss term 'inter' must be a finite number above 0 (got 0.0)")
        t = LossTerm("kg", weight: -1)
        XCTAssertEqual(t.problem, "the weight of loss term 'kg' must be a finite number of at least 0 (got -1.0)")
        XCTAssertEqual(LossTerm("fake", weight: 1, parameters: ["scale": 11]).problem,
                       "parameter scale of loss term 'fake' must be a finite number above 0 and at most 10 (got 11.0)")
        XCTAssertEqual(LossTerm("fake", weight: 6, parameters: ["scale": 10]).problem, "weight x scale must be at most 50")
        // A checkpoint's settings are held to the same declarations.
        var config = TrainConfig(method: try Method.named("fake-coop"), optimizer: OptimizerConfig(), epochs: 1, batchSize: 4, seed: 1,
                                 template: "a photo of a {}.")
        XCTAssertNil(config.problem)
        config.method.terms[0].parameters["scale"] = .nan
        XCTAssertEqual(config.problem, "parameter scale of loss term 'fake' must be a finite number above 0 and at most 10 (got nan)")
    }

    /// The objective adds a registered term like a built-in one: weighted value, its key in the
    /// terms, its gradient through the normalisation.
    func testObjectiveRunsARegisteredTerm() throws {
        var rng = SeededGenerator(seed: 5)
        let (k, d) = (3, 6)
        let text = Tensor.randomNormal([k, d], using: &rng)
        let images = L2Normalize.forward(.randomNormal([4, d], using: &rng)).0
        var method = try Method.named("fake-coop")
        method.terms[0].parameters["scale"] = 5
        let v = objective(method: method, textFeatures: text, images: images, labels: [0, 1, 2, 0], logitScale: 10, inputs: TermInputs())
        XCTAssertEqual(Set(v.terms.keys), ["ce", "fake"])
        let t = L2Normalize.forward(text).0
        XCTAssertEqual(v.terms["fake"]!, 5 * t.data.reduce(0) { $0 + Double($1) } / Double(k * d), accuracy: 1e-6)
        XCTAssertEqual(v.total, v.terms["ce"]! + 2 * v.terms["fake"]!, accuracy: 1e-9)
        checkGradient("fake objective", at: text, analytic: v.dText, tolerance: .lossTerms, atol: 3e-4) {
            objective(method: method, textFeatures: $0, images: images, labels: [0, 1, 2, 0], logitScale: 10, inputs: TermInputs()).total
        }
    }
}
