import ArgumentParser
import Experiments
import Foundation
import PromptLearning
import TensorCore
import TestSupport
import XCTest
@testable import prompttune

/// A term that exists only in this test, with one parameter: its type and its row in the term
/// table (and a method that uses it) are all plans, `--term` and the trainer need.
struct ProbeTerm: ObjectiveTerm {
    static let key = "probe", codingName = "probeTerm"
    static let parameters = [TermParameter("gain", default: 1, maximum: 100, help: "a test parameter")]
    static var needs: Set<TermInput> { [] }
    var gain: Float
    init(parameters: [String: Float]) { gain = parameters["gain"]! }
    /// gain * mean of the squared normalised text features' elements.
    func evaluate(_ a: TermArguments) -> TermResult {
        let n = Float(a.text.count)
        return TermResult(value: Double(gain) * a.text.data.reduce(0) { $0 + Double($1 * $1) } / Double(n),
                          dText: Tensor(shape: a.text.shape, data: a.text.data.map { 2 * gain * $0 / n }))
    }
}

/// `term_weights` / `term_parameters` in plans and `--term KEY[.PARAM]=VALUE` on `train` and `run`,
/// for built-in terms and one defined here.
final class TermOptionsTests: XCTestCase {
    override func setUp() {
        LossTerms.register(ProbeTerm.self)
        Method.register(Method(name: "probe-coop", prompt: PromptConfig(contextLength: 4), terms: [LossTerm("probe", weight: 1)]))
    }

    func planError(_ yaml: String) -> String {
        do { _ = try GridPlan.read(yaml: yaml, source: "p.yaml").cells(); return "" } catch { return "\(error)" }
    }

    func testPlansSetAnyTermsWeightAndParameters() throws {
        let plan = try GridPlan.read(yaml: """
            datasets: [dtd]
            seeds: [1]
            methods: [probe-coop, dapt]
            overrides:
              probe-coop: {term_weights: {probe: 3}, term_parameters: {probe: {gain: 7}}}
              dapt:
                term_parameters:
                  inter: {tau: 0.5, weight: 0.2}
            """, source: "p.yaml")
        let cells = try plan.cells()
        XCTAssertEqual(cells.map(\.recipe.termParameters), [["probe": ["gain": 7]], ["inter": ["tau": 0.5, "weight": 0.2]]])
        let probe = try Method.named("probe-coop").withTermSettings(weights: cells[0].recipe.termWeights, parameters: cells[0].recipe.termParameters)
        XCTAssertEqual(probe.terms, [LossTerm("probe", weight: 3, parameters: ["gain": 7])])
        let dapt = try Method.named("dapt").withTermSettings(weights: cells[1].recipe.termWeights, parameters: cells[1].recipe.termParameters)
        XCTAssertEqual(dapt.terms[1], LossTerm("inter", weight: 0.2, parameters: ["tau": 0.5]))
        // The plan a results folder keeps writes them and reads back equal.
        XCTAssertEqual(try GridPlan.read(yaml: try plan.yaml(), source: "written"), plan)
    }

    /// Unknown terms and parameters name the line and the closest valid name; values are held to
    /// the declared range.
    func testPlanErrorsNameTheTermParameterAndLine() {
        let base = "datasets: [dtd]\nmethods: [probe-coop]\noverrides:\n  probe-coop:\n    term_parameters:\n"
        let term = planError(base + "      prob: {gain: 2}\n")
        for part in ["line 6", "probe-coop has no loss term 'prob'", "did you mean probe?", "its terms: probe", "term_parameters"] {
            XCTAssertTrue(term.contains(part), term)
        }
        let parameter = planError(base + "      probe:\n        gian: 2\n")
        for part in ["line 7", "loss term 'probe' of probe-coop has no parameter 'gian'", "did you mean gain?", "its parameters: weight, gain"] {
            XCTAssertTrue(parameter.contains(part), parameter)
        }
        let range = planError(base + "      probe: {gain: 200}\n")
        XCTAssertTrue(range.contains("term_parameters probe.gain must be a finite number of at least 0 and at most 100 (got 200.0)"), range)
        let shape = planError(base + "      probe: 3\n")
        XCTAssertTrue(shape.contains("must be a map of term names to maps of parameter names to numbers"), shape)
        let builtIn = planError("datasets: [dtd]\nmethods: [dapt]\noverrides: {dapt: {term_parameters: {inter: {tua: 1}}}}\n")
        XCTAssertTrue(builtIn.contains("has no parameter 'tua'; did you mean tau?"), builtIn)
        // Plans built in code are held to the same declarations.
        let coded = GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["probe-coop"], shots: [1], seeds: [1],
                             overrides: ["probe-coop": RecipeOverride(termParameters: ["probe": ["gian": 1]])])
        XCTAssertThrowsError(try coded.cells()) { XCTAssertTrue("\($0)".contains("no parameter 'gian'"), "\($0)") }
    }

    /// Before `term_parameters`, DAPT's temperature was `term_weights: {tau: ...}`: such plans read
    /// as before (the spec keeps the key, so old cells keep their identity) and give the same method.
    func testOlderPlansTauIsStillDAPTsTemperature() throws {
        let old = try GridPlan.read(yaml: "datasets: [dtd]\nmethods: [dapt]\noverrides: {dapt: {term_weights: {tau: 1, inter: 0.05}}}\n",
                                    source: "old.yaml").cells()[0]
        XCTAssertEqual(old.recipe.termWeights["tau"], 1)
        XCTAssertEqual(old.recipe.termWeights["inter"], 0.05)
        XCTAssertEqual(old.recipe.termParameters, [:])
        let new = try GridPlan.read(yaml: "datasets: [dtd]\nmethods: [dapt]\noverrides: {dapt: {term_weights: {inter: 0.05}, term_parameters: {inter: {tau: 1}}}}\n",
                                    source: "new.yaml").cells()[0]
        func method(_ s: RunSpec) throws -> Method {
            try Method.named(s.method).withTermSettings(weights: s.recipe.termWeights, parameters: s.recipe.termParameters)
        }
        XCTAssertEqual(try method(old), try method(new))
        XCTAssertEqual(try method(old).terms[1], LossTerm("inter", weight: 0.05, parameters: ["tau": 1]))
        let zero = planError("datasets: [dtd]\nmethods: [dapt]\noverrides: {dapt: {term_weights: {tau: 0}}}\n")
        XCTAssertTrue(zero.contains("term_weights tau must be a finite number above 0 (got 0.0)"), zero)
    }

    /// A spec's term parameters are written (and read back) only when there are some, so specs
    /// without them, and the records and folders that hold them, are as before.
    func testSpecJSONRoundTrip() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var spec = RunSpec(protocolKind: .fewShot, dataset: "dtd", shots: 1, seed: 1, method: "dapt",
                           recipe: Recipe(epochs: 2, learningRate: 0.01, batchSize: 4, views: 1, termWeights: ["inter": 0.05]))
        let plain = String(decoding: try encoder.encode(spec), as: UTF8.self)
        XCTAssertFalse(plain.contains("term_parameters"), plain)
        XCTAssertTrue(plain.contains(#""recipe":{"batch_size":4,"epochs":2,"lr":0.01,"nc_every":0,"term_weights":{"inter":0.05},"views":1}"#), plain)
        spec.recipe.termParameters = ["inter": ["tau": 1.5]]
        let data = try encoder.encode(spec)
        XCTAssertTrue(String(decoding: data, as: UTF8.self).contains(#""term_parameters":{"inter":{"tau":1.5}}"#))
        XCTAssertEqual(try JSONDecoder().decode(RunSpec.self, from: data), spec)
        XCTAssertEqual(try JSONDecoder().decode(RunSpec.self, from: Data(plain.utf8)).recipe.termParameters, [:])
    }

    func testRunTermSetsEveryMethodThatHasTheTerm() throws {
        func plan(_ extra: [String]) throws -> GridPlan {
            let c = try XCTUnwrap(try PromptTune.parseAsRoot(["run", "--datasets", "dtd", "--methods", "probe-coop,coop,dapt", "--shots", "1",
                                                              "--seeds", "1"] + extra) as? Run)
            return try c.resolvedPlan()
        }
        let p = try plan(["--term", "probe.gain=9", "--term", "probe=0.5", "--term", "inter.tau=1"])
        XCTAssertEqual(p.overrides["probe-coop"], RecipeOverride(termWeights: ["probe": 0.5], termParameters: ["probe": ["gain": 9]]))
        XCTAssertEqual(p.overrides["dapt"], RecipeOverride(termParameters: ["inter": ["tau": 1]]))
        XCTAssertNil(p.overrides["coop"])
        func message(_ extra: [String]) -> String {
            do { _ = try plan(extra); return "" } catch { return PromptTune.message(for: error) }
        }
        let none = message(["--term", "prob=1"])
        for part in ["--term prob", "no method of the grid", "has a loss term 'prob'", "did you mean probe?"] { XCTAssertTrue(none.contains(part), none) }
        XCTAssertTrue(message(["--term", "probe.gian=1"]).contains("has no parameter 'gian'; did you mean gain?"))
        XCTAssertTrue(message(["--term", "probe.gain=101"]).contains("probe.gain must be a finite number of at least 0 and at most 100"))
        XCTAssertTrue(message(["--term", "probe"]).contains("must be KEY=WEIGHT or KEY.PARAM=VALUE"))
        XCTAssertEqual(PromptTune.exitCode(for: PromptTune.execute(["run", "--datasets", "dtd", "--methods", "coop", "--term", "kg=1", "--list"])!).rawValue, 64)
    }

    func testRunDeKgInAGrid() throws {
        let c = try XCTUnwrap(try PromptTune.parseAsRoot(["run", "--protocol", "base-to-novel", "--datasets", "dtd", "--methods", "kgcoop,dekg,dekg+npt",
                                                          "--shots", "1", "--seeds", "1", "--term", "hsic=2"]) as? Run)
        let p = try c.resolvedPlan()
        XCTAssertEqual(p.methods, ["kgcoop", "dekg", "dekg+npt"])
        XCTAssertEqual(p.overrides["dekg"], RecipeOverride(termWeights: ["hsic": 2]))
        XCTAssertEqual(p.overrides["dekg+npt"], RecipeOverride(termWeights: ["hsic": 2]))
        XCTAssertNil(p.overrides["kgcoop"])
        let train = try XCTUnwrap(try PromptTune.parseAsRoot(["train", "--model", "m.pt", "--features", "f.safetensors", "--method", "dekg",
                                                              "--term", "hsic=3", "--term", "kg=6"]) as? Train)
        XCTAssertEqual(try train.methodOptions.resolve().terms, [LossTerm("kg", weight: 6), LossTerm("hsic", weight: 3)])
    }

    func testTrainTermSetsAnyTermAndTheOldFlagsStillWork() throws {
        let base = ["train", "--model", "m.pt", "--features", "f.safetensors"]
        func method(_ args: [String]) throws -> Method {
            try XCTUnwrap(try PromptTune.parseAsRoot(base + args) as? Train).methodOptions.resolve()
        }
        XCTAssertEqual(try method(["--method", "probe-coop", "--term", "probe.gain=4", "--term", "probe.weight=2"]).terms,
                       [LossTerm("probe", weight: 2, parameters: ["gain": 4])])
        XCTAssertEqual(try method(["--method", "dapt-text", "--term", "inter.tau=1.5", "--term", "inter=0.3"]),
                       try method(["--method", "dapt-text", "--beta-t", "0.3", "--tau", "1.5"]))
        XCTAssertEqual(try method(["--method", "kgcoop+npt", "--term", "kg=4", "--lambda-mi", "0.5"]).terms.map(\.weight), [4, 1, 0.5])
        XCTAssertEqual(try method(["--method", "maple", "--prompt-depth", "3"]).maple, MaPLeConfig(promptDepth: 3))
        XCTAssertEqual(try method(["--method", "maple"]).maple, MaPLeConfig(promptDepth: 9))
        func message(_ args: [String]) -> String {
            do { _ = try PromptTune.parseAsRoot(base + args); return "" } catch { return PromptTune.message(for: error) }
        }
        for (args, says) in [(["--method", "coop", "--term", "kg=1"], "coop has no loss term 'kg' (it has no loss terms besides cross-entropy)"),
                             (["--method", "kgcoop", "--term", "kgg=1"], "did you mean kg?"),
                             (["--method", "dapt-text", "--term", "inter.tau=0"], "inter.tau must be a finite number above 0"),
                             (["--method", "probe-coop", "--term", "probe=-1"], "probe must be a finite number of at least 0"),
                             (["--method", "probe-coop", "--term", "probe.gain=x"], "'x' is not a number"),
                             (["--method", "probe-coop", "--term", "a.b.c=1"], "must be a term key or KEY.PARAM"),
                             (["--method", "coop", "--prompt-depth", "3"], "--prompt-depth applies to --method maple"),
                             (["--method", "maple", "--prompt-depth", "0"], "--prompt-depth must be at least 1")] {
            let m = message(args)
            XCTAssertTrue(m.contains(says), "\(args): \(m)")
        }
    }

    /// End to end: the test's term trains through `prompttune train` with the parameter `--term`
    /// gave, is in every step of the trace, and in the checkpoint's method.
    func testARegisteredTermTrainsFromTheCommandLine() throws {
        let dir = try makeTempDir(self)
        let features = repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path
        let out = dir.appendingPathComponent("run")
        let trace = dir.appendingPathComponent("trace.jsonl")
        var c = try PromptTune.parseAsRoot(["train", "--model", CLITests.tiny, "--features", features, "--method", "probe-coop", "--epochs", "1",
                                            "--batch-size", "8", "--out", out.path, "--trace", trace.path, "--term", "probe.gain=2.5"])
        try c.run()
        let steps = try TraceWriter.read(url: trace)
        XCTAssertFalse(steps.isEmpty)
        for s in steps { XCTAssertEqual(Set(s.terms.keys), ["ce", "probe"]) }
        let checkpoint = try ParameterCheckpoint.read(path: out.appendingPathComponent("prompt.safetensors").path)
        XCTAssertEqual(checkpoint.header.config.method.terms, [LossTerm("probe", weight: 1, parameters: ["gain": 2.5])])
    }
}
