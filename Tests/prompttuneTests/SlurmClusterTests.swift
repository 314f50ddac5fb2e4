import Cluster
import Experiments
import Foundation
import TestSupport
import XCTest

/// `run --slurm` on a real Slurm cluster: the one-node cluster of `.ci/slurm-up` (munged,
/// slurmctld, slurmd, slurmdbd for sacct), started here when it is not running. Where it cannot
/// be started (not root and no sudo) the tests skip saying so; under CI they fail instead.
final class SlurmClusterTests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path

    override func setUpWithError() throws {
        try Self.ensureCluster()
    }

    static var clusterChecked = false

    /// The cluster up: `sinfo` shows an idle (or busy) node, else `.ci/slurm-up` starts it.
    static func ensureCluster() throws {
        if clusterChecked { return }
        let up = try? shell("sinfo -h -o %T")
        if let up, up.status == 0, ["idle", "mixed", "allocated"].contains(where: { up.out.contains($0) }) {
            clusterChecked = true
            return
        }
        let r = try shell("bash \(repoRoot.appendingPathComponent(".ci/slurm-up").path)")
        guard r.status == 0 else {
            let why = "the test Slurm cluster cannot be started by .ci/slurm-up (status \(r.status)): \(r.out.suffix(1500))"
            if ProcessInfo.processInfo.environment["CI"] != nil { XCTFail(why); throw XCTSkip(why) }
            throw XCTSkip(why)
        }
        clusterChecked = true
    }

    @discardableResult
    static func shell(_ command: String) throws -> (status: Int32, out: String) {
        let r = try runProcess(URL(fileURLWithPath: "/bin/bash"), ["-c", command], mergingErrors: true)
        return (r.status, r.outText)
    }

    func binary() throws -> URL { try prompttuneBinary() }

    func prompttune(_ args: [String]) throws -> (status: Int32, out: String) {
        try Self.shell(([try binary().path] + args).map(shellWord).joined(separator: " "))
    }

    /// Waits until no job of `submission` is queued or running.
    func waitForJobs(_ submission: SlurmSubmission, timeout: TimeInterval = 600) throws {
        let start = Date()
        while try !SlurmClient().queue(jobs: submission.jobs).isEmpty {
            guard Date().timeIntervalSince(start) < timeout else {
                XCTFail("jobs \(submission.jobs) still queued after \(Int(timeout)) s:\n\(try Self.shell("squeue").out)")
                return
            }
            Thread.sleep(forTimeInterval: 1)
        }
    }

    func submission(_ out: URL, _ n: Int) throws -> SlurmSubmission {
        try readJSON(SlurmSubmission.self, from: out.appendingPathComponent(String(format: "slurm/%03d/submission.json", n)))
    }

    /// Accounting's view of a job's tasks (sacct), waiting for slurmdbd to have them all.
    func accounted(_ job: String, tasks: Int) throws -> [SlurmTask] {
        for _ in 0..<30 {
            let list = try SlurmClient().accounting(jobs: [job]) ?? []
            if list.filter({ $0.arrayIndex != nil && !$0.inFlight }).count >= tasks { return list }
            Thread.sleep(forTimeInterval: 1)
        }
        return try SlurmClient().accounting(jobs: [job]) ?? []
    }

    /// A base-to-novel grid of 8 cells as a job array: the features job first, the cells after it,
    /// the report after them; then one cell's record removed and the grid submitted again: only
    /// that cell runs (one array task), the others' records are untouched.
    func testGridRunsAsAJobArrayAndAResubmissionRunsOnlyTheMissingCell() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm-cluster")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        let grid = SlurmCLITests.grid(data: data, out: out) + SlurmCLITests.slurmFlags + ["--executable", try binary().path]
        let first = try prompttune(grid)
        XCTAssertEqual(first.status, 0, first.out)
        XCTAssertTrue(first.out.contains("submission 1 of \(out.path): 8 of 8 cells"), first.out)
        let s1 = try submission(out, 1)
        XCTAssertNotNil(s1.featuresJob)
        XCTAssertEqual(s1.arrays.count, 1)
        let cellsJob = try XCTUnwrap(s1.arrays[0].job)
        try waitForJobs(s1)
        // Accounting (slurmdbd) may lag the queue by a moment.
        let tasks = try accounted(cellsJob, tasks: 8)
        XCTAssertEqual(tasks.filter { $0.arrayIndex != nil }.map(\.state), Array(repeating: "COMPLETED", count: 8), "\(tasks)")

        let status = try GridStatus.read(results: out, slurm: SlurmClient())
        XCTAssertEqual(status.cells.map(\.state), Array(repeating: .done, count: 8), status.render())
        XCTAssertEqual(Set(status.cells.compactMap(\.job)), Set((0..<8).map { "\(cellsJob)_\($0)" }), status.render())
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("results.md").path), "the report job wrote the report")
        let shown = try prompttune(["status", out.path])
        XCTAssertEqual(shown.status, 0, shown.out)
        XCTAssertTrue(shown.out.contains("8 cells: 8 done"), shown.out)

        // One record removed: submitted again, only that cell runs; the features are all cached.
        let runs = try XCTUnwrap(try FileManager.default.contentsOfDirectory(at: ResultsFolder(out).runs, includingPropertiesForKeys: nil).first)
        let cells = status.cells.map { RunFolder(runs.appendingPathComponent($0.identifier)) }
        let before = try cells.map { try Data(contentsOf: $0.record) }
        try FileManager.default.removeItem(at: cells[5].record)
        let again = try prompttune(grid)
        XCTAssertEqual(again.status, 0, again.out)
        XCTAssertTrue(again.out.contains("1 of 8 cells (7 done"), again.out)
        let s2 = try submission(out, 2)
        XCTAssertEqual(s2.cells, [5])
        XCTAssertNil(s2.featuresJob, "every features file is cached")
        try waitForJobs(s2)
        let job2 = try XCTUnwrap(s2.arrays.first?.job)
        let tasks2 = try accounted(job2, tasks: 1)
        XCTAssertEqual(tasks2.filter { $0.arrayIndex != nil }.map(\.id), ["\(job2)_5"], "one array task, cell 5's")
        XCTAssertEqual(tasks2.first { $0.arrayIndex != nil }?.state, "COMPLETED")
        let after = try cells.map { try Data(contentsOf: $0.record) }
        for i in 0..<8 where i != 5 { XCTAssertEqual(after[i], before[i], "cell \(i)'s record is untouched") }
        let redone = try readJSON(RunRecord.self, from: cells[5].record)
        XCTAssertEqual(redone.status, .ok)
        let final = try GridStatus.read(results: out, slurm: SlurmClient())
        XCTAssertEqual(final.cells[5].job, "\(job2)_5")
        XCTAssertEqual(final.counts[.done], 8)

        // Nothing left: a third submission sends nothing.
        let third = try prompttune(grid)
        XCTAssertEqual(third.status, 0, third.out)
        XCTAssertTrue(third.out.contains("nothing to submit"), third.out)
    }

    /// A cell cancelled half way (as a time limit or a preemption kills it) shows as failed with its
    /// checkpoint; submitted again, it resumes from that checkpoint and finishes.
    func testCancelledCellResumesFromItsCheckpoint() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm-cluster")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        let epochs = 1500
        let grid = ["run", "--protocol", "few-shot", "--datasets", "dtd", "--methods", "coop", "--shots", "2", "--seeds", "1",
                    "--epochs", String(epochs), "--batch-size", "2", "--views", "1", "--nc-every", "0", "--model", Self.tiny,
                    "--root", data.path, "--out", out.path, "--slurm", "--time", "10", "--mem", "1G", "--cpus-per-task", "1",
                    "--executable", try binary().path]
        let first = try prompttune(grid)
        XCTAssertEqual(first.status, 0, first.out)
        let s1 = try submission(out, 1)
        let job = try XCTUnwrap(s1.arrays.first?.job)
        // Cancelled once its checkpoint holds a few epochs.
        let start = Date()
        var progress: String?
        while Date().timeIntervalSince(start) < 300 {
            progress = try GridStatus.read(results: out, slurm: nil).cells[0].checkpoint
            if let p = progress, let done = Int(p.split(separator: "/")[0]), done >= 5 { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        try Self.shell("scancel \(job)_0")
        try waitForJobs(s1)
        _ = try accounted(job, tasks: 1)
        let cancelled = try GridStatus.read(results: out, slurm: SlurmClient())
        let cell = cancelled.cells[0]
        guard cell.state != .done else {
            throw XCTSkip("the cell (\(epochs) epochs) finished before it could be cancelled; this machine is too fast for the test")
        }
        XCTAssertEqual(cell.state, .failed, cancelled.render())
        XCTAssertEqual(cell.slurmState, "CANCELLED", cancelled.render())
        let epochsDone = try XCTUnwrap(cell.checkpoint.flatMap { Int($0.split(separator: "/")[0]) })
        XCTAssertTrue(epochsDone >= 5 && epochsDone < epochs, "\(cell)")
        XCTAssertTrue(cell.detail?.contains("CANCELLED") == true && cell.detail?.contains("submit again to resume") == true, "\(cell)")

        let again = try prompttune(grid)
        XCTAssertEqual(again.status, 0, again.out)
        let s2 = try submission(out, 2)
        XCTAssertEqual(s2.cells, [0])
        try waitForJobs(s2)
        let record = try readJSON(RunRecord.self, from: ResultsFolder(out).runs.appendingPathComponent(cancelled.modelFolder!)
            .appendingPathComponent(cell.identifier).appendingPathComponent("record.json"))
        XCTAssertEqual(record.status, .ok)
        XCTAssertEqual(record.history.count, epochs)
        let log = try String(contentsOf: out.appendingPathComponent("slurm/002/logs/cell-0.out"), encoding: .utf8)
        let resumedAt = try XCTUnwrap(log.range(of: #"resumed from its checkpoint after epoch [0-9]+ of \#(epochs)"#, options: .regularExpression).map { String(log[$0]) }, log)
        let resumedEpoch = try XCTUnwrap(Int(resumedAt.split(separator: " ")[6]), resumedAt)
        XCTAssertEqual(resumedEpoch, epochsDone, "resumed from the checkpoint the cancelled task left")
    }

    /// A features job that fails cancels the cells waiting on it (afterok); `status` says why each
    /// cell did not run; submitted again with a working binary, the grid runs.
    func testFailedFeaturesJobStopsTheCellsAndStatusSaysWhy() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm-cluster")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        // A binary whose feature extraction fails (a node without the data, say) and which otherwise runs.
        let broken = dir.appendingPathComponent("prompttune-broken")
        try Data("""
            #!/usr/bin/env bash
            case " $* " in *" --features-only "*) echo "cannot read the dataset on this node" >&2; exit 1 ;; esac
            exec \(shellWord(try binary().path)) "$@"

            """.utf8).write(to: broken)
        chmod(broken.path, 0o755)
        let grid = ["run", "--protocol", "few-shot", "--datasets", "dtd", "--methods", "zeroshot,coop", "--shots", "2", "--seeds", "1",
                    "--epochs", "2", "--batch-size", "2", "--views", "1", "--model", Self.tiny, "--root", data.path, "--out", out.path,
                    "--slurm", "--time", "10", "--mem", "1G", "--cpus-per-task", "1"]
        let first = try prompttune(grid + ["--executable", broken.path])
        XCTAssertEqual(first.status, 0, first.out)
        let s1 = try submission(out, 1)
        try waitForJobs(s1)
        _ = try accounted(try XCTUnwrap(s1.featuresJob), tasks: 1)
        let status = try GridStatus.read(results: out, slurm: SlurmClient())
        XCTAssertEqual(status.cells.map(\.state), [.failed, .failed], status.render())
        for c in status.cells {
            XCTAssertTrue(c.detail?.contains("its features job \(s1.featuresJob!)_0 ended FAILED") == true, "\(c)")
        }
        XCTAssertTrue(try String(contentsOf: out.appendingPathComponent("slurm/001/logs/features-0.out"), encoding: .utf8)
            .contains("cannot read the dataset on this node"))

        let again = try prompttune(grid + ["--executable", try binary().path])
        XCTAssertEqual(again.status, 0, again.out)
        XCTAssertTrue(again.out.contains("2 of 2 cells"), again.out)
        let s2 = try submission(out, 2)
        try waitForJobs(s2)
        let fixed = try GridStatus.read(results: out, slurm: SlurmClient())
        XCTAssertEqual(fixed.cells.map(\.state), [.done, .done], fixed.render())
    }
}
