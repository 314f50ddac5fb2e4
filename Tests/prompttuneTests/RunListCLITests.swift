import Foundation
import TestSupport
import XCTest

/// `prompttune run --list` with estimates (issue 20): number, identifier, time, peak memory and
/// features state per cell; the first list on a machine measures and says so, the next does not;
/// without the datasets it lists the cells as before and says why there is no estimate.
final class RunListCLITests: XCTestCase {
    func binary() throws -> URL { try prompttuneBinary() }

    func run(_ args: [String]) throws -> (out: String, err: String) {
        let r = try runProcess(try binary(), args)
        XCTAssertEqual(r.status, 0, r.errText)
        return (r.outText, r.errText)
    }

    func testListShowsEachCellsCost() throws {
        let dir = try makeTempDir(self, prefix: "ptcli-list")
        let root = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("results")
        try makeSyntheticDTD(in: root)
        let args = ["run", "--datasets", "dtd", "--methods", "zeroshot,coop", "--shots", "2", "--seeds", "1,2", "--epochs", "2",
                    "--batch-size", "2", "--model", CLITests.tiny, "--root", root.path, "--out", out.path, "--threads", "1", "--list"]
        let first = try run(args)
        let lines = first.out.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        XCTAssertEqual(lines.count, 4, first.out)
        for (i, columns) in lines.enumerated() {
            XCTAssertEqual(columns.count, 5, "\(columns)")
            XCTAssertEqual(columns[0], String(i))
            XCTAssertTrue(columns[1].hasPrefix("few-shot_dtd_"), columns[1])
            XCTAssertNotNil(columns[2].range(of: #"^(\d+:)?\d+:\d\d$"#, options: .regularExpression), columns[2])
            XCTAssertTrue(columns[3].hasSuffix(" MiB") || columns[3].hasSuffix(" GiB"), columns[3])
            XCTAssertEqual(columns[4], "2 files to encode")
        }
        XCTAssertTrue(first.err.contains("costs: measured"), first.err)
        XCTAssertTrue(first.err.contains("total: 4 cells"), first.err)
        XCTAssertTrue(first.err.contains("--time ") && first.err.contains("--mem "), first.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("costs/rates.json").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("runs").path), "listing runs nothing")

        let second = try run(args)
        XCTAssertFalse(second.err.contains("costs: measured"), "the rates are reused: \(second.err)")
        XCTAssertEqual(second.out.split(separator: "\n").map { $0.split(separator: "\t").prefix(2) },
                       first.out.split(separator: "\n").map { $0.split(separator: "\t").prefix(2) })

        // No datasets under the root: the cells as before, and why there is no estimate.
        let bare = try run(["run", "--datasets", "dtd", "--methods", "coop", "--shots", "2", "--seeds", "1", "--model", CLITests.tiny,
                            "--root", dir.appendingPathComponent("empty").path, "--out", dir.appendingPathComponent("other").path, "--list"])
        XCTAssertEqual(bare.out, "0\tfew-shot_dtd_coop_2shot_seed1\n")
        XCTAssertTrue(bare.err.hasPrefix("no estimate of time and memory: "), bare.err)
        XCTAssertEqual(bare.err.split(separator: "\n").count, 1, bare.err)
    }
}
