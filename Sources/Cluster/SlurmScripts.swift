import Experiments
import Foundation

/// What every job of a grid asks Slurm for: the `#SBATCH` lines.
public struct SlurmResources: Codable, Equatable, Sendable {
    public var partition: String?
    /// Wall-clock limit in Slurm's syntax (minutes, HH:MM:SS, D-HH:MM, ...).
    public var time: String
    /// Memory per task in Slurm's syntax (megabytes, or with K/M/G/T).
    public var memory: String
    public var cpusPerTask: Int
    /// Most array tasks running at once (the array's `%N`); nil: as many as Slurm allows.
    public var maxParallel: Int?
    /// Further `sbatch` options, written as they were given (`--sbatch-arg`).
    public var extra: [String]

    public init(partition: String? = nil, time: String, memory: String, cpusPerTask: Int, maxParallel: Int? = nil, extra: [String] = []) {
        self.partition = partition; self.time = time; self.memory = memory; self.cpusPerTask = cpusPerTask
        self.maxParallel = maxParallel; self.extra = extra
    }

    enum CodingKeys: String, CodingKey {
        case partition, time, memory = "mem", cpusPerTask = "cpus_per_task", maxParallel = "max_parallel", extra = "sbatch_args"
    }

    /// Checks the values before anything is written, naming the option.
    public func validate() throws {
        let time = #"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$"#
        guard self.time.range(of: time, options: .regularExpression) != nil else {
            throw ClusterError(.invalidOption, "--time \(self.time) is not a Slurm time: give minutes (90), HH:MM:SS (1:30:00) or D-HH:MM:SS (1-12:00:00)")
        }
        guard memory.range(of: #"^[0-9]+[KMGTkmgt]?$"#, options: .regularExpression) != nil else {
            throw ClusterError(.invalidOption, "--mem \(memory) is not a Slurm memory size: give megabytes (4096) or a number with K, M, G or T (4G)")
        }
        guard cpusPerTask >= 1 else { throw ClusterError(.invalidOption, "--cpus-per-task must be at least 1 (got \(cpusPerTask))") }
        if let m = maxParallel, m < 1 { throw ClusterError(.invalidOption, "--max-parallel must be at least 1 (got \(m))") }
        for a in extra where !a.hasPrefix("-") {
            throw ClusterError(.invalidOption, "--sbatch-arg '\(a)' is not an sbatch option: give it whole, e.g. --sbatch-arg=--account=lab or --sbatch-arg='--qos high'")
        }
    }

    /// Minutes as Slurm's D-HH:MM:SS (or HH:MM:SS under a day).
    public static func time(minutes: Int) -> String {
        let d = minutes / 1440, h = minutes % 1440 / 60, m = minutes % 60
        return d > 0 ? String(format: "%d-%02d:%02d:00", d, h, m) : String(format: "%02d:%02d:00", h, m)
    }
}

/// The scripts of one submission of a grid: a features array (one task per training dataset),
/// the cells arrays (one task per cell; the task id is the cell's number, less the array's offset
/// on a grid larger than the cluster's `MaxArraySize`), and the report job; `submit.sh` chains them.
public struct SlurmGridScripts: Sendable {
    /// The prompttune binary every job runs.
    public var executable: String
    /// The saved plan the tasks read (absolute).
    public var plan: URL
    /// The results folder (absolute).
    public var out: URL
    /// The submission's folder, where the scripts and logs go.
    public var folder: URL
    /// Flags every task passes to `prompttune run` besides the plan and cells (precision, ...).
    public var runFlags: [String]
    public var jobName: String

    public init(executable: String, plan: URL, out: URL, folder: URL, runFlags: [String], jobName: String) {
        self.executable = executable; self.plan = plan; self.out = out; self.folder = folder; self.runFlags = runFlags; self.jobName = jobName
    }

    public var logs: URL { folder.appendingPathComponent("logs") }

    func header(_ name: String, _ r: SlurmResources, array: String?, output: String) -> [String] {
        var lines = ["#!/usr/bin/env bash", "#SBATCH --job-name=\(shellWord("\(jobName)-\(name)"))"]
        if let array { lines.append("#SBATCH --array=\(array)") }
        if let p = r.partition { lines.append("#SBATCH --partition=\(shellWord(p))") }
        lines += ["#SBATCH --time=\(r.time)", "#SBATCH --mem=\(r.memory)", "#SBATCH --cpus-per-task=\(r.cpusPerTask)",
                  "#SBATCH --ntasks=1", "#SBATCH --output=\(logs.appendingPathComponent(output).path)",
                  // A requeued task (node failure, preemption) appends to its log and resumes its cell.
                  "#SBATCH --open-mode=append", "#SBATCH --requeue"]
        lines += r.extra.map { "#SBATCH \($0)" }
        return lines
    }

    var run: String { ([executable, "run", "--plan", plan.path] + runFlags).map(shellWord).joined(separator: " ") }

    /// One task per group of cells (a training dataset's): makes their features files once.
    public func features(tasks: [[Int]], resources: SlurmResources) -> String {
        var lines = header("features", resources, array: "0-\(tasks.count - 1)", output: "features-%a.out")
        lines += ["# The features every cell reads, made once per training dataset before any cell runs (the cells",
                  "# array waits for this one: --dependency=afterok); files already in the cache are checked, not made again.",
                  "set -euo pipefail",
                  "case \"$SLURM_ARRAY_TASK_ID\" in"]
        for (i, cells) in tasks.enumerated() { lines.append("    \(i)) cells=\(CellNumbers.compact(cells)) ;;") }
        lines += ["    *) echo \"no features task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;", "esac",
                  "echo \"features of cells $cells on $(hostname), job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}, $(date -u +%FT%TZ)\"",
                  "exec \(run) --features-only --cell \"$cells\" --threads \"${SLURM_CPUS_PER_TASK:-1}\""]
        return lines.joined(separator: "\n") + "\n"
    }

    /// The cells `cells` (numbers `offset` and up, as task ids from 0) as one array.
    public func cells(_ cells: [Int], offset: Int, resources: SlurmResources) -> String {
        let ids = CellNumbers.compact(cells.map { $0 - offset })
        var lines = header("cells", resources, array: ids + (resources.maxParallel.map { "%\($0)" } ?? ""), output: "cell-%a.out")
        let cell = offset == 0 ? "$SLURM_ARRAY_TASK_ID" : "$((SLURM_ARRAY_TASK_ID + \(offset)))"
        lines += ["# One task per cell: the task runs cell number \(offset == 0 ? "$SLURM_ARRAY_TASK_ID" : "$SLURM_ARRAY_TASK_ID + \(offset)") of the saved plan.",
                  "# A finished cell is skipped; an interrupted one (time limit, requeue) resumes from its last epoch's checkpoint.",
                  "set -euo pipefail",
                  "cell=\(cell)",
                  "echo \"cell $cell on $(hostname), job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}, $(date -u +%FT%TZ)\"",
                  "exec \(run) --cell \"$cell\" --threads \"${SLURM_CPUS_PER_TASK:-1}\""]
        return lines.joined(separator: "\n") + "\n"
    }

    /// The report of the whole results folder, once the cells have ended (however they ended).
    public func report(resources: SlurmResources) -> String {
        var lines = header("report", resources, array: nil, output: "report.out")
        lines += ["# The tables and report of every record in the results folder, after the cells (--dependency=afterany).",
                  "# The grid's state first, into this log (status exits 2 or 3 while cells are unfinished or failed).",
                  "set -euo pipefail",
                  "\([executable, "status", out.path].map(shellWord).joined(separator: " ")) || true",
                  "exec \([executable, "report", out.path].map(shellWord).joined(separator: " "))"]
        return lines.joined(separator: "\n") + "\n"
    }

    /// `submit.sh`: the sbatch calls in order, each waiting on the one before (what `run --slurm`
    /// runs; a user of `--dry-run` may run it by hand). Prints "<kind> <job id>" per job.
    public func submit(features: Bool, cellsScripts: [String]) -> String {
        var lines = ["#!/usr/bin/env bash",
                     "# Submits this grid: the features array, then the cells (afterok: only once every features file is",
                     "# made; --kill-on-invalid-dep cancels them if that failed), then the report (afterany: however the cells ended).",
                     "set -euo pipefail", "cd \"$(dirname \"$0\")\""]
        var after = ""
        if features {
            lines += ["features=$(sbatch --parsable features.sbatch)", "features=${features%%;*}", "echo \"features $features\""]
            after = " --dependency=afterok:$features --kill-on-invalid-dep=yes"
        }
        var all: [String] = []
        for (i, s) in cellsScripts.enumerated() {
            lines += ["cells\(i)=$(sbatch --parsable\(after) \(s))", "cells\(i)=${cells\(i)%%;*}", "echo \"cells $cells\(i)\""]
            all.append("$cells\(i)")
        }
        lines += ["report=$(sbatch --parsable --dependency=afterany:\(all.joined(separator: ":")) report.sbatch)",
                  "report=${report%%;*}", "echo \"report $report\""]
        return lines.joined(separator: "\n") + "\n"
    }
}

/// `s` as one word for bash: as is when it holds only safe characters, else single-quoted.
public func shellWord(_ s: String) -> String {
    if !s.isEmpty, s.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:,+%@".contains($0) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
