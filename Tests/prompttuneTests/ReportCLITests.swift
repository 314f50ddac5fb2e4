import Experiments
import Foundation
import TestSupport
import XCTest

/// `prompttune report DIR` as a user sees it, standard output and error in one stream.
final class ReportCLITests: XCTestCase {
    /// The printed Markdown ends with a newline and a blank line, so the summary on standard error
    /// never joins the last table (Markdown would read it as one more row); stdout comes first.
    func testPrintedMarkdownEndsBeforeTheSummary() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("report-cli-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let spec = RunSpec(protocolKind: .fewShot, dataset: "dtd", shots: 1, seed: 1, method: "coop",
                           recipe: Recipe(epochs: 1, learningRate: 0.002, batchSize: 32, views: 1))
        var record = RunRecord(spec: spec, status: .ok)
        record.accuracy = 0.5
        record.evaluations = [EvaluationSummary(name: "test", dataset: "dtd", classes: 2, count: 4, accuracy: 0.5, macroF1: 0.5,
                                                perClassAccuracy: [:])]
        let folder = dir.appendingPathComponent("runs/cell")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try JSONEncoder().encode(record).write(to: folder.appendingPathComponent("record.json"))

        let r = try runProcess(try prompttuneBinary(), ["report", dir.path], mergingErrors: true)
        let output = r.outText
        XCTAssertEqual(r.status, 0, output)
        XCTAssertTrue(output.hasPrefix("# PromptTune results\n"), output)
        XCTAssertTrue(output.contains("| coop | 50.00 |\n\n1 records (1 finished, 0 failed)\n"), output)
    }
}
