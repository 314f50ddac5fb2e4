import Cluster
import Experiments
import Foundation
import TestSupport
import XCTest
@testable import prompttune

/// `run --slurm` without `--time` or `--mem` (issue 20): the limits come from the cells' estimates
/// (the cells run after the features job) with `CostEstimator`'s margins; a limit given is kept.
final class SlurmLimitsCLITests: XCTestCase {
    func testLimitsComeFromTheEstimates() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm-limits")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        let grid = SlurmCLITests.grid(data: data, out: out) + ["--slurm", "--cpus-per-task", "1", "--dry-run", "--executable", "/bin/true"]
        XCTAssertNil(PromptTune.execute(grid))
        let s = try readJSON(SlurmSubmission.self, from: out.appendingPathComponent("slurm/001/submission.json"))
        let e = try XCTUnwrap(s.estimate)
        XCTAssertEqual(e.derived, ["--time", "--mem"])
        XCTAssertGreaterThan(e.cellSeconds, 0)
        XCTAssertGreaterThan(e.featuresSeconds, 0, "the files are not cached: the features task encodes them")
        let cells = CostEstimator.slurmLimits(seconds: e.cellSeconds, peakBytes: e.cellPeakBytes)
        let features = CostEstimator.slurmLimits(seconds: e.featuresSeconds, peakBytes: e.featuresPeakBytes)
        XCTAssertEqual(s.resources.time, String(cells.timeMinutes))
        XCTAssertEqual(s.resources.memory, "\(cells.memoryMB)M")
        XCTAssertEqual(s.featuresResources?.time, String(features.timeMinutes))
        XCTAssertEqual(s.featuresResources?.memory, "\(features.memoryMB)M")
        XCTAssertGreaterThanOrEqual(cells.timeMinutes, 5, "the margin's 5 minutes")
        XCTAssertGreaterThan(cells.memoryMB, 512, "the margin's 512 MiB and the model")
        let folder = out.appendingPathComponent("slurm/001")
        let script = try String(contentsOf: folder.appendingPathComponent("cells.sbatch"), encoding: .utf8)
        XCTAssertTrue(script.contains("#SBATCH --time=\(cells.timeMinutes)\n") && script.contains("#SBATCH --mem=\(cells.memoryMB)M\n"), script)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("costs/rates.json").path))

        // A limit given is kept; only the other is derived.
        let again = dir.appendingPathComponent("again")
        XCTAssertNil(PromptTune.execute(SlurmCLITests.grid(data: data, out: again)
            + ["--slurm", "--cpus-per-task", "1", "--time", "90", "--dry-run", "--executable", "/bin/true"]))
        let t = try readJSON(SlurmSubmission.self, from: again.appendingPathComponent("slurm/001/submission.json"))
        XCTAssertEqual(t.estimate?.derived, ["--mem"])
        XCTAssertEqual(t.resources.time, "90")
        XCTAssertTrue(t.resources.memory.hasSuffix("M"), t.resources.memory)
    }
}
