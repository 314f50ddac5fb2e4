import Experiments
import Foundation
import XCTest

final class GridTests: XCTestCase {
    func testYAMLPlanWithOverrides() throws {
        let plan = try GridPlan.read(yaml: """
            protocol: base-to-novel
            datasets: [dtd, eurosat]
            methods: [zeroshot, coop, kgcoop+npt]
            shots: [16]
            seeds: [1, 2]
            imbalance: [1, 0.06]
            epochs: 7
            nc_every: 2
            overrides:
              kgcoop+npt: {lr: 0.01, batch_size: 4, term_weights: {lc: 0.5}}
            """, source: "test.yaml")
        let cells = try plan.cells()
        XCTAssertEqual(cells.count, 2 * 2 * 1 * 2 * 3)
        // Order: dataset, tau, shots, seed, method.
        XCTAssertEqual(cells[0].identifier, "base-to-novel_dtd_zeroshot_16shot_seed1")
        XCTAssertEqual(cells[1].identifier, "base-to-novel_dtd_coop_16shot_seed1")
        XCTAssertEqual(cells[3].identifier, "base-to-novel_dtd_zeroshot_16shot_seed2")
        XCTAssertEqual(cells[6].identifier, "base-to-novel_dtd_zeroshot_16shot_seed1_tau0.06")
        XCTAssertEqual(cells[12].dataset, "eurosat")
        let coop = cells[1].recipe, kg = cells[2].recipe, zs = cells[0].recipe
        XCTAssertEqual(coop, Recipe(epochs: 7, learningRate: 0.002, batchSize: 32, views: 4, ncEvery: 2))
        XCTAssertEqual(kg, Recipe(epochs: 7, learningRate: 0.01, batchSize: 4, views: 4, termWeights: ["lc": 0.5], ncEvery: 2))
        XCTAssertEqual(zs.epochs, 0, "baselines do not train, whatever the grid's epochs")
        XCTAssertEqual(zs.views, 1)
        // The plan survives a YAML round trip.
        XCTAssertEqual(try GridPlan.read(yaml: try plan.yaml(), source: "round trip"), plan)
    }

    func testRecipesFollowThePapers() throws {
        XCTAssertEqual(Recipes.coopEpochs(shots: 1, dataset: "dtd"), 50)
        XCTAssertEqual(Recipes.coopEpochs(shots: 2, dataset: "dtd"), 100)
        XCTAssertEqual(Recipes.coopEpochs(shots: 4, dataset: "dtd"), 100)
        XCTAssertEqual(Recipes.coopEpochs(shots: 8, dataset: "dtd"), 200)
        XCTAssertEqual(Recipes.coopEpochs(shots: 16, dataset: "dtd"), 200)
        XCTAssertEqual(Recipes.coopEpochs(shots: 16, dataset: "imagenet"), 50)
        let kg = Recipes.recipe(method: "kgcoop+npt", dataset: "dtd", shots: 16, protocolKind: .baseToNovel)
        XCTAssertEqual(kg.epochs, 100)
        XCTAssertEqual(kg.batchSize, 128)
        // DeKg's one config (vit_b16_ep100_ctxv1) in every protocol; its weights are the method's.
        for (method, kind) in [("dekg", ProtocolKind.baseToNovel), ("dekg", .fewShot), ("dekg+npt", .crossDataset)] {
            let r = Recipes.recipe(method: method, dataset: "dtd", shots: 4, protocolKind: kind)
            XCTAssertEqual([r.epochs, r.batchSize], [100, 128], "\(method) \(kind)")
            XCTAssertEqual(r.learningRate, 0.002)
            XCTAssertEqual(r.termWeights, [:])
        }
        let lt = Recipes.recipe(method: "dekg", dataset: "imagenet_lt", shots: 0, protocolKind: .longTailed)
        XCTAssertEqual([lt.epochs, lt.batchSize], [Recipes.longTailedEpochs, 128], "whole long-tailed splits keep the protocol's epochs")
        let dapt = Recipes.recipe(method: "dapt-text", dataset: "eurosat", shots: 16, protocolKind: .fewShot)
        XCTAssertEqual(dapt.learningRate, 20)
        XCTAssertEqual(dapt.termWeights, ["inter": 10])
        let maple = Recipes.recipe(method: "maple", dataset: "dtd", shots: 16, protocolKind: .baseToNovel)
        XCTAssertEqual([maple.epochs, maple.batchSize, maple.views], [5, 4, 1])
        XCTAssertEqual(maple.learningRate, 0.0035)
        XCTAssertNil(maple.promptDepth, "depth 9, the method's own")
        for kind in [ProtocolKind.crossDataset, .domainGeneralization] {
            let transfer = Recipes.recipe(method: "maple", dataset: "imagenet", shots: 16, protocolKind: kind)
            XCTAssertEqual([transfer.epochs, transfer.batchSize], [2, 4])
            XCTAssertEqual(transfer.learningRate, 0.0026)
            XCTAssertEqual(transfer.promptDepth, 3)
        }
        // Written only when set: other recipes encode as before.
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(kg), as: UTF8.self).contains("prompt_depth"))
        let transfer = Recipes.recipe(method: "maple", dataset: "imagenet", shots: 16, protocolKind: .crossDataset)
        XCTAssertEqual(try JSONDecoder().decode(Recipe.self, from: try JSONEncoder().encode(transfer)), transfer)
    }

    func testBuiltInPlansAreThePapersGrids() throws {
        for name in BuiltInPlans.all.keys { XCTAssertNoThrow(try BuiltInPlans.plan(named: name).cells(), name) }
        XCTAssertEqual(try BuiltInPlans.plan(named: "coop-few-shot").cells().count, 11 * 5 * 3 * 3)
        let dg = try BuiltInPlans.plan(named: "domain-generalization").cells()
        XCTAssertEqual(dg.first?.targets, ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"])
        let cross = try BuiltInPlans.plan(named: "cross-dataset").cells()
        XCTAssertEqual(cross.first?.targets.count, 10)
        XCTAssertFalse(cross.first?.targets.contains("imagenet") ?? true)
        XCTAssertEqual(Set(try BuiltInPlans.plan(named: "npt-imbalance").cells().map(\.imbalance)), [1, 0.25, 0.06])
        XCTAssertThrowsError(try BuiltInPlans.plan(named: "nope")) { XCTAssertTrue("\($0)".contains("coop-few-shot"), "\($0)") }
    }

    func testInvalidPlansNameTheField() throws {
        func message(_ yaml: String) -> String {
            do { _ = try GridPlan.read(yaml: yaml, source: "p.yaml").cells(); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(message("datasets: [dtd]\n").contains("methods"))
        XCTAssertTrue(message("datasets: [dtd]\nmethods: [coop]\nimbalance: [0]\n").contains("imbalance tau must lie in (0, 1] (got 0.0)"))
        XCTAssertTrue(message("datasets: [dtd]\nmethods: [cop]\n").contains("unknown method 'cop'"))
        XCTAssertTrue(message("datasets: [dtd]\nmethods: [coop]\nshots: [0]\n").contains("shots must be at least 1"))
        let override = message("datasets: [dtd]\nmethods: [coop]\noverrides:\n  kgcop: {lr: 1}\n")
        XCTAssertTrue(override.contains("'kgcop', which is not a method; did you mean kgcoop?"), override)
        XCTAssertEqual(message("datasets: [dtd]\nmethods: [coop]\noverrides:\n  kgcoop: {lr: 1}\n"), "", "a recipe may cover methods the grid does not run")
        XCTAssertTrue(message("protocol: sideways\ndatasets: [dtd]\nmethods: [coop]\n").contains("p.yaml"))
    }

    /// An unknown key anywhere in a plan is an error naming the key, its line and the closest
    /// valid key (today `epochz: 3` and `overrides: {coop: {epoch: 3}}` silently trained 50 epochs).
    func testUnknownKeysAreErrorsWithTheirLineAndTheClosestKey() throws {
        func message(_ yaml: String) -> String {
            do { _ = try GridPlan.read(yaml: yaml, source: "p.yaml"); return "" } catch {
                XCTAssertTrue(error is PlanError, "\(type(of: error))")
                return "\(error)"
            }
        }
        let top = message("datasets: [dtd]\nmethods: [coop]\nepochz: 3\n")
        for part in ["p.yaml", "line 3", "unknown key 'epochz'", "did you mean epochs?"] { XCTAssertTrue(top.contains(part), top) }
        let flow = message("datasets: [dtd]\nmethods: [coop]\noverrides:\n  coop: {epoch: 3}\n")
        for part in ["line 4", "unknown key 'epoch'", "overrides of coop", "did you mean epochs?"] { XCTAssertTrue(flow.contains(part), flow) }
        let block = message("datasets: [dtd]\nmethods: [kgcoop]\noverrides:\n  kgcoop:\n    lr: 0.01\n    term_weights:\n      kgg: 4\n")
        for part in ["line 7", "kgcoop has no loss term 'kgg'", "did you mean kg?", "its terms: kg"] { XCTAssertTrue(block.contains(part), block) }
        let none = message("datasets: [dtd]\nmethods: [coop]\noverrides:\n  coop: {term_weights: {kg: 8}}\n")
        for part in ["line 4", "coop has no loss term 'kg'", "no loss terms besides cross-entropy"] { XCTAssertTrue(none.contains(part), none) }
        let far = message("datasets: [dtd]\nmethods: [coop]\ncolour: red\n")
        XCTAssertFalse(far.contains("did you mean"), far)
        XCTAssertTrue(far.contains("valid keys: name, protocol"), far)
        // Valid keys pass: DAPT's terms and its temperature.
        let dapt = try GridPlan.read(yaml: "datasets: [dtd]\nmethods: [dapt]\noverrides:\n  dapt: {epochs: 3, term_weights: {tau: 1, intra: 5}}\n",
                                     source: "p.yaml")
        XCTAssertEqual(try dapt.cells()[0].recipe.epochs, 3)
        XCTAssertEqual(try dapt.cells()[0].recipe.termWeights["intra"], 5)
        // Plans built in code are held to the same terms.
        let coded = GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["coop"], shots: [1], seeds: [1],
                             overrides: ["coop": RecipeOverride(termWeights: ["kgg": 8])])
        XCTAssertThrowsError(try coded.cells()) { XCTAssertTrue("\($0)".contains("no loss term 'kgg'"), "\($0)") }
    }

    /// A plan of only a recipe reads; the datasets and methods come from elsewhere (flags).
    func testRecipeOnlyPlan() throws {
        var plan = try GridPlan.read(yaml: "epochs: 3\nlr: 0.01\noverrides:\n  kgcoop: {batch_size: 4}\n", source: "recipe.yaml")
        XCTAssertThrowsError(try plan.cells()) { XCTAssertTrue("\($0)".contains("--datasets"), "\($0)") }
        plan.datasets = ["dtd"]
        plan.methods = ["coop", "kgcoop"]
        plan.seeds = [1]
        let cells = try plan.cells()
        XCTAssertEqual(cells.map(\.recipe.epochs), [3, 3])
        XCTAssertEqual(cells.map(\.recipe.learningRate), [0.01, 0.01])
        XCTAssertEqual(cells.map(\.recipe.batchSize), [32, 4])
    }

    /// The plan saved into a results folder writes numbers as a person does, and reads back equal.
    func testSavedPlanWritesNumbersAsWritten() throws {
        let plan = try GridPlan.read(yaml: """
            protocol: base-to-novel
            datasets: [dtd]
            methods: [coop, kgcoop+npt]
            shots: [16]
            seeds: [1, 2]
            imbalance: [1, 0.25, 0.06]
            lr: 0.002
            overrides:
              kgcoop+npt: {lr: 0.00001, term_weights: {lc: 0.5, kg: 8}}
            """, source: "p.yaml")
        let yaml = try plan.yaml()
        for part in ["imbalance: [1, 0.25, 0.06]", "lr: 0.002", "lc: 0.5", "kg: 8", "seeds: [1, 2]"] { XCTAssertTrue(yaml.contains(part), yaml) }
        XCTAssertFalse(yaml.contains("e-1") || yaml.contains("e-3") || yaml.contains("e+"), yaml)
        XCTAssertEqual(try GridPlan.read(yaml: yaml, source: "round trip"), plan)
        XCTAssertEqual(try GridPlan.read(yaml: yaml, source: "round trip").overrides["kgcoop+npt"]?.lr, 0.00001)
    }

    /// Targets are evaluated, and recorded, in the papers' order whatever order a plan gives.
    func testTargetsFollowThePapersOrder() throws {
        XCTAssertEqual(GridPlan.papersOrder(["imagenet_r", "imagenet_a", "imagenetv2", "imagenet_sketch"]),
                       ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"])
        XCTAssertEqual(GridPlan.papersOrder(["ucf101", "mine", "dtd", "caltech101"]), ["caltech101", "dtd", "ucf101", "mine"])
        let plan = GridPlan(protocolKind: .domainGeneralization, datasets: ["imagenet"], targets: ["imagenet_r", "imagenetv2"],
                            methods: ["zeroshot"], shots: [1], seeds: [1])
        XCTAssertEqual(try plan.cells()[0].targets, ["imagenetv2", "imagenet_r"])
    }

    func testRecordRoundTripsThroughJSON() throws {
        let spec = RunSpec(protocolKind: .fewShot, dataset: "dtd", shots: 4, seed: 1, method: "coop",
                           recipe: Recipe(epochs: 2, learningRate: 0.002, batchSize: 32, views: 4))
        var record = RunRecord(spec: spec, status: .ok)
        record.accuracy = 0.5
        record.macroF1 = 0.4
        record.evaluations = [EvaluationSummary(name: "test", dataset: "dtd", classes: 2, count: 4, accuracy: 0.5, macroF1: 0.4,
                                                perClassAccuracy: ["a": 1, "b": 0])]
        record.digests = ["model": "abc"]
        let data = try encodeJSON(record)
        let back = try JSONDecoder().decode(RunRecord.self, from: data)
        XCTAssertEqual(back, record)
        // Sorted keys: the same record encodes to the same bytes.
        XCTAssertEqual(try encodeJSON(back), data)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        for key in ["version", "spec", "status", "accuracy", "macro_f1", "evaluations", "nc", "nc_history", "history", "timings", "digests"] {
            XCTAssertNotNil(object[key], key)
        }
    }
}
