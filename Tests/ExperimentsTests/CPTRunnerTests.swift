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

        // The report shows the measure for the CPT cell only ("–" for dekg) and plots it over epochs.
        let tables = renderMarkdownTables(records: records)
        let row = try XCTUnwrap(tables.split(separator: "\n").first { $0.hasPrefix("| dekg |") && $0.contains("–") }, tables)
        XCTAssertTrue(tables.contains("text within-cluster ETF error"), String(row))
        _ = try writeReport(records: records, directory: dir.appendingPathComponent("report"))
        let html = try String(contentsOf: dir.appendingPathComponent("report/report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("text within-cluster ETF error on train features"), "the over-epochs plot")
        let plain = renderMarkdownTables(records: [dekg])
        XCTAssertFalse(plain.contains("within-cluster"), "no column without CPT")
    }
}
