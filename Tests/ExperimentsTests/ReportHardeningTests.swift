import Experiments
import Foundation
import TestSupport
import XCTest
@testable import Experiments

/// Hostile results folders (issue 17, item 6).
final class ReportHardeningTests: XCTestCase {
    func record(_ method: String, seed: Int, accuracy: Double, dataset: String = "dtd") -> RunRecord {
        var r = RunRecord(spec: RunSpec(protocolKind: .fewShot, dataset: dataset, shots: 1, seed: seed, method: method,
                                        recipe: Recipe(epochs: 1, learningRate: 0.002, batchSize: 2, views: 1)), status: .ok)
        r.accuracy = accuracy
        r.evaluations = [EvaluationSummary(name: "test", dataset: dataset, classes: 2, count: 4, accuracy: accuracy, macroF1: accuracy,
                                           perClassAccuracy: [:])]
        r.model = "model.pt"; r.digests["model"] = "0123456789abcdef"
        return r
    }

    /// Axes used to trap in niceTicks for spans past a double and sub-normal ranges.
    func testAxesHandleAnyFiniteRange() {
        for (lo, hi) in [(-1e308, 1e308), (0, 5e-324), (1e-310, 3e-310), (1e10, 1e10 + 1e-5), (-Double.greatestFiniteMagnitude, 0), (7, 7)] {
            let (ticks, _) = niceTicks(lo, hi)
            XCTAssertGreaterThanOrEqual(ticks.count, 2, "\(lo)...\(hi)")
            XCTAssertLessThanOrEqual(ticks.count, 102, "\(lo)...\(hi)")
            XCTAssertTrue(ticks.allSatisfy(\.isFinite), "\(lo)...\(hi)")
            XCTAssertLessThanOrEqual(ticks.first!, lo); XCTAssertGreaterThanOrEqual(ticks.last!, hi)
        }
    }

    /// One damaged record.json is listed with its path and the missing field; the report goes on.
    func testAnUnreadableRecordIsListedAndTheReportGoesOn() throws {
        let dir = try makeTempDir(self)
        for seed in 1...2 {
            let folder = dir.appendingPathComponent("runs/cell\(seed)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try writeJSON(record("coop", seed: seed, accuracy: 0.5 + 0.1 * Double(seed)), to: folder.appendingPathComponent("record.json"))
        }
        let bad = dir.appendingPathComponent("runs/bad/record.json")
        try FileManager.default.createDirectory(at: bad.deletingLastPathComponent(), withIntermediateDirectories: true)
        var json = try JSONSerialization.jsonObject(with: try encodeJSON(record("coop", seed: 3, accuracy: 0.9))) as! [String: Any]
        var spec = json["spec"] as! [String: Any]
        spec.removeValue(forKey: "dataset")
        json["spec"] = spec
        try JSONSerialization.data(withJSONObject: json).write(to: bad)
        // A record holding non-finite numbers (a failed NaN cell) round-trips.
        var nanRecord = record("kgcoop", seed: 1, accuracy: 0.5)
        nanRecord.recipe(termWeights: ["kg": .nan])
        let nanURL = dir.appendingPathComponent("runs/nan/record.json")
        try FileManager.default.createDirectory(at: nanURL.deletingLastPathComponent(), withIntermediateDirectories: true)
        try writeJSON(nanRecord, to: nanURL)

        let summary = try writeReport(directory: dir)
        XCTAssertEqual(summary.records, 3)
        XCTAssertEqual(summary.unreadable.map(\.url.path), [bad.path])
        XCTAssertEqual(summary.unreadable.first?.reason, "not a record: missing field 'spec.dataset'")
        let md = try String(contentsOf: dir.appendingPathComponent("results.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("## Unreadable records") && md.contains("runs/bad/record.json: not a record: missing field 'spec.dataset'"), md)
        XCTAssertTrue(md.contains("| coop | 65.00 ± 7.07 |") && md.contains("| kgcoop | 50.00 (n=1) |"), md)
    }

    /// Names from records are text in results.md, and never formulas in results.csv.
    func testNamesAreEscapedInMarkdownAndNeutralisedInCSV() throws {
        let evil = record("coop", seed: 1, accuracy: 0.5, dataset: "=HYPERLINK(\"x\")<script>*a*|b")
        let md = renderMarkdownTables(records: [evil])
        XCTAssertFalse(md.contains("<script>"), md)
        XCTAssertTrue(md.contains("&lt;script&gt;\\*a\\*\\|b"), md)
        let csv = resultRows(records: [evil]).isEmpty ? "" : renderCSV(resultRows(records: [evil]))
        let line = try XCTUnwrap(csv.split(separator: "\n").dropFirst().first)
        XCTAssertTrue(line.hasPrefix("few-shot,\"'=HYPERLINK(\"\"x\"\")"), String(line))
        for model in ["+cmd", "-1+2", "@SUM(A1)"] {
            var r = evil
            r.model = model
            let row = try XCTUnwrap(renderCSV(resultRows(records: [r])).split(separator: "\n").dropFirst().first)
            XCTAssertTrue(row.contains(",'\(model.prefix(1))"), String(row))
        }
    }
}

private extension RunRecord {
    mutating func recipe(termWeights: [String: Double]) { spec.recipe.termWeights = termWeights }
}
