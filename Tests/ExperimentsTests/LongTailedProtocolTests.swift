import Datasets
import Experiments
import Foundation
import TestSupport
import XCTest

/// The long-tailed protocol (issue 21, item 4) on synthetic layouts and the tiny model: every
/// training image (or a cap), the balanced test set, many / medium / few-shot accuracy by the
/// rule the spec names (LIFT's by default, OLTR's as an option), the plan's checks, the report.
final class LongTailedProtocolTests: XCTestCase {
    static let tiny = RunnerTests.tiny
    /// Places-LT's synthetic counts: LIFT puts 101 in many, 100 and 20 in medium, 5 in few; OLTR
    /// puts 101 and 100 in many, none in medium, 20 and 5 in few.
    static let counts = [101, 100, 20, 5]
    /// Test images of each class in its own colour (of 4; the others look like the next class), so
    /// that the linear probe, a colour classifier here, scores the classes 1, 0.75, 0.5, 0.25 and
    /// the groups of the two rules differ.
    static let ownColour = [4, 3, 2, 1]

    func mean(_ xs: [Double]) -> Double { xs.reduce(0, +) / Double(xs.count) }

    func testLongTailedGridOnPlacesLTGroupsClassesByLIFTsRule() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticPlacesLT(in: data, trainCounts: Self.counts, test: 4, ownColour: Self.ownColour)
        let plan = GridPlan(protocolKind: .longTailed, datasets: ["places_lt"], methods: ["zeroshot", "linear-probe", "coop"],
                            shots: [0], seeds: [1], all: RecipeOverride(epochs: 1, lr: 0.01, batchSize: 32, views: 1))
        let cells = try plan.cells()
        XCTAssertEqual(cells.map(\.shotRule), [.lift, .lift, .lift])
        XCTAssertEqual(cells[0].identifier, "long-tailed_places_lt_zeroshot_allshot_seed1")
        let records = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).run(cells)
        let names = ["airfield", "bakery-shop", "canyon", "dam"]
        for r in records {
            let m = r.spec.method
            XCTAssertEqual(r.status, .ok, "\(m): \(r.error ?? "")")
            XCTAssertEqual(r.evaluations.map(\.name), ["test"], m)
            XCTAssertEqual(r.trainCounts, Dictionary(uniqueKeysWithValues: zip(names, Self.counts)), m)
            let e = r.evaluations[0]
            XCTAssertEqual(e.count, 16, "the balanced test set, 4 per class")
            XCTAssertEqual(r.accuracy, e.accuracy, m)
            let a = names.map { e.perClassAccuracy[$0]! }
            XCTAssertEqual(try XCTUnwrap(e.manyShot), a[0], accuracy: 1e-12, m)
            XCTAssertEqual(try XCTUnwrap(e.mediumShot), mean([a[1], a[2]]), accuracy: 1e-12, m)
            XCTAssertEqual(try XCTUnwrap(e.fewShot), a[3], accuracy: 1e-12, m)
            XCTAssertEqual(r.shotGroupsRule, ShotRule.lift.description, m)
        }
        let probe = records.first { $0.spec.method == "linear-probe" }!
        // The probe tells the classes apart, so its groups check the rule: many 1, medium 0.625, few 0.25.
        XCTAssertEqual(["airfield", "bakery-shop", "canyon", "dam"].map { probe.evaluations[0].perClassAccuracy[$0]! }, [1, 0.75, 0.5, 0.25])
        XCTAssertEqual(probe.evaluations[0].mediumShot, 0.625)
        XCTAssertTrue(probe.warnings.contains { $0.contains("no val split") }, "\(probe.warnings)")
        XCTAssertGreaterThan(records.first { $0.spec.method == "coop" }!.history.count, 0, "coop trained")

        // The report: the many / medium / few table names the rule, and the per-class plot is drawn.
        _ = try writeReport(directory: out)
        let md = try String(contentsOf: out.appendingPathComponent("results.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("Many / medium / few, long-tailed, all training images: places_lt"), md)
        XCTAssertTrue(md.contains("LIFT / BALLAD (shot_rule lift)"), md)
        XCTAssertTrue(md.contains("| Method | Many | Medium | Few | All |"), "no tau column: \(md)")
        XCTAssertTrue(md.contains("| linear-probe | 100.00 | 62.50 | 25.00 | 62.50 |"), md)
        let html = try String(contentsOf: out.appendingPathComponent("report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("Long-tailed: accuracy by training count"))
        XCTAssertTrue(html.contains("id=\"long-tailed-places-lt-0shot\""), "the long-tailed plot is drawn")
        XCTAssertFalse(html.contains("No long-tailed run with per-class training counts"))
    }

    /// OLTR's rule moves 100 into many and 20 into few (no medium class here); a cap of 10 shots
    /// keeps at most 10 images of each class.
    func testOLTRRuleAndAShotsCap() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticPlacesLT(in: data, trainCounts: Self.counts, test: 4, ownColour: Self.ownColour)
        var plan = GridPlan(protocolKind: .longTailed, datasets: ["places_lt"], methods: ["linear-probe"], shots: [0, 10], seeds: [1])
        plan.shotRule = .oltr
        let cells = try plan.cells()
        XCTAssertEqual(cells.map(\.identifier), ["long-tailed_places_lt_linear-probe_allshot_seed1_rule-oltr",
                                                 "long-tailed_places_lt_linear-probe_10shot_seed1_rule-oltr"])
        let records = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).run(cells)
        let all = records[0], capped = records[1]
        XCTAssertEqual(all.status, .ok, all.error ?? "")
        let e = all.evaluations[0]
        let a = ["airfield", "bakery-shop", "canyon", "dam"].map { e.perClassAccuracy[$0]! }
        XCTAssertEqual(a, [1, 0.75, 0.5, 0.25])
        XCTAssertEqual(try XCTUnwrap(e.manyShot), mean([a[0], a[1]]), accuracy: 1e-12)
        XCTAssertNil(e.mediumShot, "no class has 21 to 99 images")
        XCTAssertEqual(try XCTUnwrap(e.fewShot), mean([a[2], a[3]]), accuracy: 1e-12)
        XCTAssertEqual(all.shotGroupsRule, ShotRule.oltr.description)
        XCTAssertEqual(capped.trainCounts?.values.sorted(), [5, 10, 10, 10])
        XCTAssertEqual(capped.evaluations[0].fewShot, capped.evaluations[0].accuracy, "every class has at most 20: all few")
    }

    /// CIFAR-100-LT (ratio 10) from the genuine-format fixture, through the runner: LIFT's counts.
    func testCIFAR100LTRunsFromThePickles() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeCIFARFixture(in: data)
        let cells = try GridPlan(protocolKind: .longTailed, datasets: ["cifar100_lt_r10"], methods: ["zeroshot"], shots: [0], seeds: [1]).cells()
        let r = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).run(cells)[0]
        XCTAssertEqual(r.status, .ok, r.error ?? "")
        let fixture = try JSONSerialization.jsonObject(with: Data(contentsOf: repoRoot.appendingPathComponent("Goldens/longtailed/cifar_fixture.json"))) as! [String: Any]
        let classes = fixture["classes"] as! [String]
        let counts = (fixture["cases"] as! [[String: Any]]).first { $0["factor"] as! Double == 0.1 }!["counts"] as! [Int]
        XCTAssertEqual(r.trainCounts, Dictionary(uniqueKeysWithValues: zip(classes, counts)))
        XCTAssertEqual(r.evaluations[0].count, 30)
        // LIFT's rule on 100 ... 10: no class above 100, so no many-shot group.
        XCTAssertNil(r.evaluations[0].manyShot)
        XCTAssertNotNil(r.evaluations[0].mediumShot)
        XCTAssertNotNil(r.evaluations[0].fewShot)
    }

    // MARK: - The plan

    func testPlanChecksOfTheLongTailedProtocol() throws {
        func error(_ plan: GridPlan) -> String {
            do { _ = try plan.cells(); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(error(GridPlan(protocolKind: .longTailed, datasets: ["dtd"], methods: ["zeroshot"], shots: [0], seeds: [1]))
            .contains("the long-tailed protocol trains on a long-tailed dataset (imagenet_lt, places_lt, cifar100_lt"))
        XCTAssertTrue(error(GridPlan(protocolKind: .longTailed, datasets: ["places_lt"], methods: ["zeroshot"], shots: [0], seeds: [1], imbalance: [0.5]))
            .contains("takes no imbalance tau"))
        XCTAssertTrue(error(GridPlan(protocolKind: .longTailed, datasets: ["places_lt"], methods: ["zeroshot"], shots: [-1], seeds: [1]))
            .contains("shots must be 0 (every training image)"))
        XCTAssertTrue(error(GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["zeroshot"], shots: [0], seeds: [1]))
            .contains("shots must be at least 1"))
        XCTAssertTrue(error(GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["zeroshot"], shots: [1], seeds: [1], shotRule: .oltr))
            .contains("shot_rule oltr (--shot-rule) applies to the long-tailed protocol only: drop it"))
        // Other protocols' cells carry no rule, so their specs and identities are as before.
        let few = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["zeroshot"], shots: [1], seeds: [1]).cells()[0]
        XCTAssertNil(few.shotRule)
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(few), as: UTF8.self).contains("shot_rule"))
    }

    func testPlanYAMLShotRuleAndDefaultShots() throws {
        let plan = try GridPlan.read(yaml: "protocol: long-tailed\ndatasets: [cifar100_lt]\nmethods: [zeroshot, coop]\nseeds: [1]\nshot_rule: oltr\n", source: "lt.yaml")
        XCTAssertEqual(plan.shots, [0], "every training image unless shots cap them")
        XCTAssertEqual(plan.shotRule, .oltr)
        XCTAssertEqual(try GridPlan.read(yaml: try plan.yaml(), source: "again"), plan)
        let cells = try plan.cells()
        XCTAssertEqual(cells.map(\.recipe.epochs), [0, Recipes.longTailedEpochs])
        XCTAssertTrue(cells.allSatisfy { $0.shotRule == .oltr })
        XCTAssertEqual(try JSONDecoder().decode(RunSpec.self, from: JSONEncoder().encode(cells[1])), cells[1])
        XCTAssertThrowsError(try GridPlan.read(yaml: "protocol: long-tailed\ndatasets: [places_lt]\nmethods: [coop]\nshot_rule: ballad\n", source: "bad.yaml")) { error in
            let m = "\(error)"
            XCTAssertTrue(m.contains("plan bad.yaml, line 4: 'shot_rule' is ballad, but it must be lift or oltr"), m)
        }
        XCTAssertThrowsError(try GridPlan.read(yaml: "protocol: long-tailed\nshot_rules: lift\n", source: "typo.yaml")) { error in
            XCTAssertTrue("\(error)".contains("did you mean shot_rule?"), "\(error)")
        }
    }
}
