import Analysis
import Experiments
import Foundation
import PromptLearning
import TestSupport
import XCTest

/// DeKg and CPT cells in a base-to-novel grid: their terms in the history, and CPT's
/// within-cluster ETF error in the neural-collapse measures (only where the method has clusters).
final class CPTRunnerTests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path

    func testDeKgAndCPTCells() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data)
        // Two base classes: one cluster of both (the default, ceil(sqrt(2)) = 2, would leave two singletons).
        let plan = GridPlan(protocolKind: .baseToNovel, datasets: ["dtd"], methods: ["dekg", "coop+cpt"], shots: [2], seeds: [1],
                            all: RecipeOverride(epochs: 2, batchSize: 2, views: 1, ncEvery: 1),
                            overrides: ["coop+cpt": RecipeOverride(termParameters: ["tetf": ["clusters": 1]])])
        let records = try ExperimentRunner(modelPath: Self.tiny, root: data, out: dir.appendingPathComponent("out")).run(try plan.cells())
        XCTAssertEqual(records.map(\.status), [.ok, .ok], records.compactMap(\.error).joined(separator: "; "))
        let (dekg, cpt) = (records[0], records[1])
        XCTAssertEqual(Set(dekg.history.last?.terms.keys.map { $0 } ?? []), ["ce", "kg", "hsic"])
        XCTAssertEqual(Set(cpt.history.last?.terms.keys.map { $0 } ?? []), ["ce", "tetf", "cc", "rs"])
        for set in ["train", "base", "novel"] {
            XCTAssertNil(try XCTUnwrap(dekg.nc[set]).clusterETFError, "dekg has no clusters")
            let e = try XCTUnwrap(try XCTUnwrap(cpt.nc[set], set).clusterETFError, set)
            XCTAssertTrue(e.isFinite && e > 0, "\(set): \(e)")
        }
        XCTAssertNotNil(cpt.ncHistory.first?.measures["train"]?.clusterETFError)
    }
}
