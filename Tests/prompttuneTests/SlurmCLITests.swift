import ArgumentParser
import Cluster
import Experiments
import Foundation
import TestSupport
import XCTest
@testable import prompttune

/// `run --slurm --dry-run` and `prompttune status` without a cluster: the submission's plan and
/// scripts, the cells a resubmission leaves out, option errors, and the status of a local grid.
final class SlurmCLITests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path

    /// A base-to-novel grid of 8 cells on the tiny model (4 methods x 2 seeds).
    static func grid(data: URL, out: URL) -> [String] {
        ["run", "--protocol", "base-to-novel", "--datasets", "dtd", "--methods", "zeroshot,coop,kgcoop,coop+npt", "--shots", "2",
         "--seeds", "1,2", "--epochs", "2", "--batch-size", "2", "--views", "2", "--model", tiny, "--root", data.path, "--out", out.path,
         "--threads", "1"]
    }

    static let slurmFlags = ["--slurm", "--time", "10", "--mem", "1G", "--cpus-per-task", "1", "--max-parallel", "2"]

    func submission(_ out: URL, _ n: Int) throws -> SlurmSubmission {
        try readJSON(SlurmSubmission.self, from: out.appendingPathComponent(String(format: "slurm/%03d/submission.json", n)))
    }

    func text(_ url: URL) throws -> String { try String(contentsOf: url, encoding: .utf8) }

    func testDryRunWritesThePlanAndScriptsAndSubmitsNothing() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        XCTAssertNil(PromptTune.execute(Self.grid(data: data, out: out) + Self.slurmFlags + ["--dry-run", "--executable", "/bin/true",
                                                                                           "--sbatch-arg=--account=lab", "--partition", "cpu"]))
        let s = try submission(out, 1)
        XCTAssertTrue(s.dryRun)
        XCTAssertEqual(s.cells, Array(0..<8))
        XCTAssertEqual(s.done, [])
        XCTAssertEqual(s.featureTasks, [Array(0..<8)], "one features task for the one training dataset")
        XCTAssertEqual(s.arrays, [SlurmSubmission.CellsArray(offset: 0, cells: Array(0..<8), job: nil)])
        XCTAssertTrue(s.jobs.isEmpty, "a dry run submits nothing")
        XCTAssertEqual(s.resources, SlurmResources(partition: "cpu", time: "10", memory: "1G", cpusPerTask: 1, maxParallel: 2, extra: ["--account=lab"]))

        // The saved plan numbers the cells as the grid does, with absolute paths.
        let folder = out.appendingPathComponent("slurm/001")
        let plan = try GridPlan.read(yaml: try text(folder.appendingPathComponent("plan.yaml")), source: "saved")
        let command = try XCTUnwrap(try PromptTune.parseAsRoot(Self.grid(data: data, out: out)) as? Run)
        XCTAssertEqual(try plan.cells(), try command.resolvedPlan().cells())
        XCTAssertEqual(plan.model, Self.tiny)
        XCTAssertEqual(plan.root, data.path)
        XCTAssertEqual(plan.out, out.path)

        let cells = try text(folder.appendingPathComponent("cells.sbatch"))
        for line in ["#SBATCH --array=0-7%2", "#SBATCH --time=10", "#SBATCH --mem=1G", "#SBATCH --cpus-per-task=1", "#SBATCH --partition=cpu",
                     "#SBATCH --account=lab", "#SBATCH --requeue", "#SBATCH --output=\(folder.path)/logs/cell-%a.out", "cell=$SLURM_ARRAY_TASK_ID",
                     "exec /bin/true run --plan \(folder.path)/plan.yaml --precision fp32 --cell \"$cell\" --threads \"${SLURM_CPUS_PER_TASK:-1}\""] {
            XCTAssertTrue(cells.contains(line + "\n"), "\(line) in\n\(cells)")
        }
        let features = try text(folder.appendingPathComponent("features.sbatch"))
        XCTAssertTrue(features.contains("#SBATCH --array=0-0\n"), features)
        XCTAssertTrue(features.contains("    0) cells=0-7 ;;\n"), features)
        XCTAssertTrue(features.contains("--features-only --cell \"$cells\""), features)
        XCTAssertTrue(try text(folder.appendingPathComponent("report.sbatch")).contains("exec /bin/true report \(out.path)\n"))
        let submit = try text(folder.appendingPathComponent("submit.sh"))
        XCTAssertTrue(submit.contains("sbatch --parsable --dependency=afterok:$features --kill-on-invalid-dep=yes cells.sbatch"), submit)
        XCTAssertTrue(submit.contains("sbatch --parsable --dependency=afterany:$cells0 report.sbatch"), submit)
        // The plan is also the results folder's, as a local run writes it.
        XCTAssertEqual(try text(ResultsFolder(out).plan), try text(folder.appendingPathComponent("plan.yaml")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: ResultsFolder(out).runs.path), "nothing ran")
    }

    /// After a local run, a resubmission sends nothing; with one record removed, only that cell,
    /// and no features job (every file is cached). `status` tells done, failed and not started.
    func testResubmissionSendsOnlyUnfinishedCellsAndStatusTellsThem() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        XCTAssertNil(PromptTune.execute(Self.grid(data: data, out: out) + ["--no-report"]))
        XCTAssertNil(PromptTune.execute(Self.grid(data: data, out: out) + Self.slurmFlags + ["--dry-run", "--executable", "/bin/true"]))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("slurm/001").path), "nothing to submit, nothing written")

        let cells = try XCTUnwrap(try PromptTune.parseAsRoot(Self.grid(data: data, out: out)) as? Run).resolvedPlan().cells()
        let runs = try XCTUnwrap(try FileManager.default.contentsOfDirectory(at: ResultsFolder(out).runs, includingPropertiesForKeys: nil).first)
        func folder(_ i: Int) -> RunFolder { RunFolder(runs.appendingPathComponent(cells[i].identifier)) }
        try FileManager.default.removeItem(at: folder(6).record)
        XCTAssertNil(PromptTune.execute(Self.grid(data: data, out: out) + Self.slurmFlags + ["--dry-run", "--executable", "/bin/true"]))
        let s = try submission(out, 1)
        XCTAssertEqual(s.cells, [6])
        XCTAssertEqual(s.done, [0, 1, 2, 3, 4, 5, 7])
        XCTAssertEqual(s.featureTasks, [], "every features file is cached")
        let folder1 = out.appendingPathComponent("slurm/001")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder1.appendingPathComponent("features.sbatch").path))
        XCTAssertTrue(try text(folder1.appendingPathComponent("cells.sbatch")).contains("#SBATCH --array=6%2\n"))
        XCTAssertFalse(try text(folder1.appendingPathComponent("submit.sh")).contains("features.sbatch"))

        // Status: cell 6 has its checkpoint (2/2) but no record: interrupted; a failed record is
        // failed with its error; a zero-shot cell without a record has not started.
        var failed = try readJSON(RunRecord.self, from: folder(1).record)
        failed.status = .failed
        failed.error = "the loss became NaN at epoch 2"
        try writeJSON(failed, to: folder(1).record)
        try FileManager.default.removeItem(at: folder(4).url)
        let status = try GridStatus.read(results: out, slurm: nil)
        XCTAssertEqual(status.cells.map(\.state), [.done, .failed, .done, .done, .notStarted, .done, .interrupted, .done])
        XCTAssertEqual(status.cells[1].detail, "the loss became NaN at epoch 2")
        XCTAssertEqual(status.cells[6].checkpoint, "2/2")
        XCTAssertNotNil(status.cells[0].accuracy)
        let shown = status.render()
        XCTAssertTrue(shown.contains("8 cells: 5 done, 0 running, 0 pending, 1 failed, 1 interrupted, 1 not started"), shown)
        XCTAssertTrue(shown.contains("cell 1 failed: the loss became NaN at epoch 2"), shown)
        let error = try XCTUnwrap(PromptTune.execute(["status", out.path]))
        XCTAssertEqual(PromptTune.exitCode(for: error).rawValue, 3, "some cells failed")
    }

    func testSlurmOptionErrorsNameTheOption() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        let base = Self.grid(data: data, out: out)
        let cases: [([String], String)] = [
            (["--time", "10"], "--time is an option of --slurm"),
            (["--slurm", "--dry-run", "--executable", "/bin/true", "--time", "1:2:3:4", "--mem", "1G"], "--time 1:2:3:4 is not a Slurm time"),
            (["--slurm", "--dry-run", "--executable", "/bin/true", "--time", "10", "--mem", "lots"], "--mem lots is not a Slurm memory size"),
            (["--slurm", "--dry-run", "--executable", "/bin/true", "--time", "10", "--mem", "1G", "--sbatch-arg", "account=lab"], "--sbatch-arg 'account=lab'"),
            (["--slurm", "--dry-run", "--executable", "/nonexistent/prompttune"], "--executable /nonexistent/prompttune"),
            (["--slurm", "--dry-run", "--executable", "/bin/true", "--trace", dir.appendingPathComponent("t.jsonl").path], "--trace"),
            (["--slurm", "--features-only", "--executable", "/bin/true"], "--features-only"),
            (["--slurm", "--dry-run", "--executable", "/bin/true", "--cell", "9"], "there is no cell 9"),
        ]
        for (flags, fragment) in cases {
            let error = try XCTUnwrap(PromptTune.execute(base + flags), "\(flags)")
            XCTAssertEqual(PromptTune.exitCode(for: error).rawValue, 64, "\(flags): \(PromptTune.message(for: error))")
            XCTAssertTrue(PromptTune.message(for: error).contains(fragment), "\(fragment) in \(PromptTune.message(for: error))")
        }
        XCTAssertTrue(SlurmFolder(results: out).submissions().submissions.isEmpty, "a refused submission writes no submission")
    }

    /// `--features-only` makes each features file of the cells once and trains nothing; the cells
    /// then find them all cached.
    func testFeaturesOnlyMakesTheCellsFilesOnce() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        XCTAssertNil(PromptTune.execute(Self.grid(data: data, out: out) + ["--features-only", "--cell", "0-3"]))
        let features = try XCTUnwrap(try FileManager.default.contentsOfDirectory(at: ResultsFolder(out).features, includingPropertiesForKeys: nil).first)
        let files = try FileManager.default.contentsOfDirectory(atPath: features.path).filter { $0.hasSuffix(".safetensors") }.sorted()
        // Seed 1's draw: one view for zero-shot, 2 views for the trained ones; base and novel test sets.
        XCTAssertEqual(files, ["dtd-test-base.safetensors", "dtd-test-new.safetensors", "dtd-train-base-2shot-seed1-2views.safetensors",
                               "dtd-train-base-2shot-seed1.safetensors"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: ResultsFolder(out).runs.path), "no cell ran")
    }

    /// Without Slurm's tools on the PATH a submission says so before anything is written.
    func testSubmittingWithoutSlurmSaysSoAndWritesNothing() throws {
        let dir = try makeTempDir(self, prefix: "ptslurm")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        setenv("PATH", dir.path, 1)
        defer { setenv("PATH", path, 1) }
        let error = try XCTUnwrap(PromptTune.execute(Self.grid(data: data, out: out) + Self.slurmFlags + ["--executable", "/bin/true"]))
        XCTAssertTrue(PromptTune.message(for: error).contains("sbatch is not on the PATH"), PromptTune.message(for: error))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "nothing written")
    }
}
