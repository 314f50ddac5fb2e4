import Datasets
import Experiments
import Foundation
import TestSupport
import XCTest

/// Candle's imbalanced base-to-new protocol beside the tau protocol: a plan key and a flag, cells
/// and features keyed apart, the record's spec saying which, many/medium/few by the rule that fits.
final class CandleProtocolTests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path

    func testPlanKeyCellsAndErrors() throws {
        let plan = try GridPlan.read(yaml: "protocol: base-to-novel\ndatasets: [dtd]\nmethods: [coop]\nshots: [0, 4]\nseeds: [1]\nimbalance: [1, 0.25]\nimbalance_profile: candle\n", source: "p")
        let cells = try plan.cells()
        XCTAssertEqual(cells.map(\.identifier), ["base-to-novel_dtd_coop_allshot_seed1", "base-to-novel_dtd_coop_4shot_seed1",
                                                 "base-to-novel_dtd_coop_allshot_seed1_candle0.25", "base-to-novel_dtd_coop_4shot_seed1_candle0.25"])
        XCTAssertEqual(cells.filter { $0.imbalance != 1 }.map(\.imbalanceProfile), [.candle, .candle])
        XCTAssertEqual(cells.filter { $0.imbalance == 1 }.map(\.imbalanceProfile), [nil, nil], "ratio 1 thins nothing: no profile")
        // The saved plan keeps the key.
        XCTAssertEqual(try GridPlan.read(yaml: try plan.yaml(), source: "saved").imbalanceProfile, .candle)
        for (yaml, fragment) in [
            ("protocol: few-shot\ndatasets: [dtd]\nmethods: [coop]\nimbalance_profile: candel\n", "tau or candle"),
            ("protocol: few-shot\ndatasets: [dtd]\nmethods: [coop]\nshots: [0]\n", "shots must be at least 1"),
            ("protocol: long-tailed\ndatasets: [places_lt]\nmethods: [coop]\nimbalance_profile: candle\n", "imbalance_profile"),
        ] {
            XCTAssertThrowsError(try GridPlan.read(yaml: yaml, source: "p").cells(), yaml) { XCTAssertTrue("\($0)".contains(fragment), "\($0)") }
        }
    }

    /// A Candle cell on whole splits: its draw ranks the classes by count, its features file and
    /// identifier say candle, and its many/medium/few follow the tau rule (every class <= 16 images).
    func testCandleCellRuns() throws {
        let dir = try makeTempDir(self)
        try makeSyntheticDTD(in: dir.appendingPathComponent("data"), train: 8)
        let plan = GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["zeroshot"], shots: [0], seeds: [1], imbalance: [0.25],
                            all: RecipeOverride(epochs: 1))
        var candle = plan
        candle.imbalanceProfile = .candle
        let cells = try candle.cells()
        XCTAssertEqual(cells.map(\.identifier), ["few-shot_dtd_zeroshot_allshot_seed1_candle0.25"])
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("data"), out: dir.appendingPathComponent("out"))
        let record = try XCTUnwrap(try runner.run(cells).first)
        XCTAssertEqual(record.status, .ok, record.error ?? "")
        XCTAssertEqual(record.spec.imbalanceProfile, .candle)
        // 4 classes of 8 training images: int(max(8 * 0.25^(i/3), 1)) = 8, 5, 3, 2 by rank (ties in label order).
        XCTAssertEqual(record.trainCounts, ["banded": 8, "blotchy": 5, "braided": 3, "bubbly": 2])
        XCTAssertEqual(record.shotGroupsRule, ShotGroups.rule)
        XCTAssertNotNil(record.evaluations.first?.manyShot)
        let files = try FileManager.default.subpathsOfDirectory(atPath: dir.appendingPathComponent("out/features").path)
        XCTAssertTrue(files.contains { $0.hasSuffix("dtd-train-candle0.25.safetensors") }, "\(files)")
    }

    /// Where a class has more than 16 training images the thirds of the tau protocol give way to
    /// LIFT's thresholds, and the record names them.
    func testLargerClassesUseLIFTsRule() throws {
        let dir = try makeTempDir(self)
        try makeSyntheticDTD(in: dir.appendingPathComponent("data"), train: 20)
        var plan = GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["zeroshot"], shots: [0], seeds: [1], imbalance: [0.25])
        plan.imbalanceProfile = .candle
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: dir.appendingPathComponent("data"), out: dir.appendingPathComponent("out"))
        let record = try XCTUnwrap(try runner.run(try plan.cells()).first)
        XCTAssertEqual(record.trainCounts, ["banded": 20, "blotchy": 12, "braided": 7, "bubbly": 5])
        XCTAssertEqual(record.shotGroupsRule, ShotRule.lift.description)
        // LIFT: 20 is medium (20...100), 12, 7 and 5 are few; no class is many-shot.
        let test = try XCTUnwrap(record.evaluations.first)
        XCTAssertNil(test.manyShot)
        XCTAssertEqual(test.mediumShot, test.perClassAccuracy["banded"])
        XCTAssertNotNil(test.fewShot)
    }

    /// A group's mean sums its classes in name order, so it does not depend on a dictionary's
    /// order (which changes with each process's hash seed).
    func testShotGroupMeansSumInClassNameOrder() {
        let names = (0..<60).map { String(format: "class%02d", $0) }
        let perClass = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, 1 / Double(3 + 7 * $0)) })
        let groups = Dictionary(uniqueKeysWithValues: names.map { ($0, ShotGroup.medium) })
        let inOrder = names.reduce(0.0) { $0 + perClass[$1]! } / 60
        XCTAssertEqual(ShotGroups.accuracies(perClass: perClass, groups: groups)[.medium], inOrder)
    }
}
