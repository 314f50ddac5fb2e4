import ArgumentParser
import Cluster
import Experiments
import Foundation
import TensorCore

/// `run --slurm` and its options: the grid as Slurm job arrays.
struct SlurmOptions: ParsableArguments {
    @Flag(help: ArgumentHelp("Submit the grid to Slurm instead of running it here: the plan and sbatch scripts go to <out>/slurm/<NNN>/; a features array (one task per training dataset), then one array task per cell (`prompttune run --plan <saved plan> --cell $SLURM_ARRAY_TASK_ID`, after the features: afterok), then `prompttune report` (afterany). Finished cells and cells already queued or running are not sent again. See docs/CLUSTER.md."))
    var slurm = false
    @Option(help: "Slurm partition (default: the cluster's default).") var partition: String?
    @Option(help: ArgumentHelp("Time limit of each cell task, in Slurm's syntax (90, 1:30:00, 1-00:00:00). Default: the largest cell's estimate with a margin (see --list).", valueName: "TIME"))
    var time: String?
    @Option(help: ArgumentHelp("Memory of each cell task, in Slurm's syntax (4096, 4G). Default: the largest cell's estimated peak with a margin.", valueName: "SIZE"))
    var mem: String?
    @Option(name: .customLong("cpus-per-task"), parsing: .unconditional, help: "CPUs of each task; each task runs with as many threads.")
    var cpusPerTask: Int = 4
    @Option(name: .customLong("max-parallel"), parsing: .unconditional, help: "Most cell tasks running at once (the array's %N).")
    var maxParallel: Int?
    @Option(name: .customLong("sbatch-arg"), parsing: .unconditionalSingleValue,
            help: ArgumentHelp("A further sbatch option for every job, written as an #SBATCH line (repeatable), e.g. --sbatch-arg=--account=lab.", valueName: "OPTION"))
    var sbatchArg: [String] = []
    @Flag(name: .customLong("dry-run"), help: "With --slurm: write the plan and scripts and print them; submit nothing.")
    var dryRun = false
    @Option(help: ArgumentHelp("The prompttune binary the jobs run (default: this one). It must be reachable from every node.", valueName: "PATH"))
    var executable: String?

    func validate() throws {
        if !slurm {
            let given: [(String, Bool)] = [("--partition", partition != nil), ("--time", time != nil), ("--mem", mem != nil),
                                           ("--max-parallel", maxParallel != nil), ("--sbatch-arg", !sbatchArg.isEmpty),
                                           ("--dry-run", dryRun), ("--executable", executable != nil)]
            if let flag = given.first(where: \.1) { throw ValidationError("\(flag.0) is an option of --slurm; add --slurm to submit the grid to Slurm") }
        }
        try OptionLimits.range("--cpus-per-task", cpusPerTask, 1...OptionLimits.maxThreads)
        if let m = maxParallel { try OptionLimits.range("--max-parallel", m, 1...1_000_000) }
    }

    /// The binary the jobs run: `--executable`, else this process's own file.
    func binary() throws -> String {
        if let executable {
            let path = URL(fileURLWithPath: executable).standardizedFileURL.path
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw ValidationError("--executable \(executable) is not an executable file; give the path of the prompttune binary")
            }
            return path
        }
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        guard URL(fileURLWithPath: me).lastPathComponent == "prompttune" else {
            throw ValidationError("this process (\(me)) is not the prompttune binary; give the binary the jobs should run with --executable")
        }
        return URL(fileURLWithPath: me).standardizedFileURL.path
    }
}

extension Run {
    /// The flags every task passes on besides the plan and its cells: what decides the numbers or
    /// where they go but is not in the plan.
    func taskFlags() -> [String] {
        var flags = ["--precision", precision.rawValue]
        if noCoopCache { flags.append("--no-coop-cache") }
        if let n = imageOptions.maxImagePixels { flags += ["--max-image-pixels", String(n)] }
        if let tensorboard { flags += ["--tensorboard", URL(fileURLWithPath: tensorboard).standardizedFileURL.path] }
        return flags
    }

    /// `--features-only`: the features files of the cells, each made once; no training.
    func prepareFeaturesOnly(_ runner: ExperimentRunner, cells: [RunSpec], only: [Int]) throws {
        for i in only where !cells.indices.contains(i) { throw PlanError("the grid has cells 0...\(cells.count - 1); there is no cell \(i)") }
        let chosen = only.isEmpty ? cells : only.map { cells[$0] }
        let start = Date()
        let (made, cached) = try runner.prepareFeatures(chosen)
        FileHandle.standardError.write(Data("features: \(made) files made, \(cached) already cached, for \(chosen.count) cells, in \(ProgressBar.clock(Date().timeIntervalSince(start))); under \(runner.store.directory.path)\n".utf8))
    }

    /// `--slurm`: writes the submission and submits it (or, with --dry-run, prints it).
    func submitToSlurm(_ plan: GridPlan, only: [Int]) throws {
        if trace != nil {
            throw ValidationError("--trace writes one file from one process; with --slurm many tasks would write it at once: trace a cell run with --cell N instead")
        }
        let executable = try slurm.binary()
        // Before anything is loaded or written: without Slurm's tools there is nothing to submit to.
        if !slurm.dryRun, let missing = ["sbatch", "squeue"].first(where: { !SlurmClient.has($0) }) {
            throw ClusterError(.slurmMissing, "\(missing) is not on the PATH: submit from a machine of the Slurm cluster (a login node), or give --dry-run to write the scripts and submit them there with submit.sh")
        }
        // Every path absolute: tasks start wherever Slurm starts them.
        let located = locations(plan)
        let modelPath = URL(fileURLWithPath: located.model).standardizedFileURL.path
        let root = located.root.standardizedFileURL, out = located.out.standardizedFileURL
        var plan = plan
        plan.model = modelPath
        plan.root = root.path
        plan.out = out.path
        let runner = try ExperimentRunner(modelPath: modelPath, root: root, out: out, trainingPrecision: precision.training,
                                          backend: try computeBackend(precision.compute))
        runner.useCoOpCache = !noCoopCache
        let submitter = try SlurmGridSubmitter(runner: runner, plan: plan, out: out)
        let client = SlurmClient()
        let selection = try submitter.select(only: only, checkQueue: !slurm.dryRun || SlurmClient.has("squeue"))
        let total = only.isEmpty ? submitter.cells.count : only.count
        guard !selection.cells.isEmpty else {
            print("nothing to submit: of \(total) cells, \(selection.done.count) are done and \(selection.inFlight.count) queued or running (`prompttune status \(out.path)`)")
            return
        }
        var cellsResources = SlurmResources(partition: slurm.partition, time: slurm.time ?? "", memory: slurm.mem ?? "",
                                            cpusPerTask: slurm.cpusPerTask, maxParallel: slurm.maxParallel, extra: slurm.sbatchArg)
        var featuresResources = cellsResources
        featuresResources.maxParallel = nil
        var estimate: SlurmSubmission.Estimate?
        if slurm.time == nil || slurm.mem == nil {
            estimate = try estimatedLimits(runner, cells: submitter.cells, selection: selection,
                                           cellsResources: &cellsResources, featuresResources: &featuresResources)
        }
        let maxArray = slurm.dryRun && !SlurmClient.has("scontrol") ? 1001 : client.maxArraySize()
        let (submission, folder) = try submitter.submit(selection, resources: cellsResources, featuresResources: featuresResources,
                                                        estimate: estimate, executable: executable, runFlags: taskFlags(),
                                                        dryRun: slurm.dryRun, maxArraySize: maxArray)
        cellsResources = submission.resources
        var lines = ["submission \(submission.number) of \(out.path): \(selection.cells.count) of \(total) cells (\(selection.done.count) done, \(selection.inFlight.count) queued or running, left out)",
                     "  folder: \(folder.path)",
                     "  cells: --array=\(submission.arrays.map { a in CellNumbers.compact(a.cells.map { $0 - a.offset }) }.joined(separator: " | ")), --time=\(cellsResources.time), --mem=\(cellsResources.memory), --cpus-per-task=\(cellsResources.cpusPerTask)"]
        if !selection.featureTasks.isEmpty {
            lines.append("  features: \(selection.featureTasks.count) task(s) before the cells, --time=\(featuresResources.time), --mem=\(featuresResources.memory)")
        } else {
            lines.append("  features: every file is cached; no features job")
        }
        if let e = submission.estimate, !e.derived.isEmpty {
            lines.append("  \(e.derived.joined(separator: " and ")) from the estimates (longest cell \(ProgressBar.clock(e.cellSeconds)), largest peak \(Self.memory(e.cellPeakBytes))), \(e.margin)")
        }
        if slurm.dryRun {
            lines.append("  dry run: nothing submitted; submit with: bash \(folder.appendingPathComponent("submit.sh").path)")
            print(lines.joined(separator: "\n"))
            for name in ["features.sbatch"] + submission.arrays.indices.map { SlurmSubmission.cellsScript($0, of: submission.arrays.count) } + ["report.sbatch", "submit.sh"] {
                let url = folder.appendingPathComponent(name)
                guard let text = try? String(contentsOf: url, encoding: .utf8) else { continue }
                print("\n# \(url.path)\n\(text)", terminator: "")
            }
        } else {
            lines.append("  jobs: " + ([submission.featuresJob.map { "features \($0)" }] + submission.arrays.map { $0.job.map { "cells \($0)" } } + [submission.reportJob.map { "report \($0)" }]).compactMap { $0 }.joined(separator: ", "))
            lines.append("  follow it with: prompttune status \(out.path)")
            print(lines.joined(separator: "\n"))
        }
    }
}

/// `prompttune status DIR`: a grid's cells, done, running, pending, failed (with their error), and
/// its Slurm jobs.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where a grid stands: each cell done, running, pending, failed (with its error) or not started, and its Slurm jobs.",
        discussion: """
            Reads the results folder (its latest Slurm submission's plan, else plan.yaml), the cells' records and checkpoints, \
            and, where Slurm is installed, what squeue and sacct say of the submissions' jobs (state, elapsed time, peak memory). \
            Exit status: 0 every cell done, 3 some failed, 2 some still to run (pending, running, interrupted or not started).
            """)

    @Argument(help: ArgumentHelp("Results folder: the --out of `prompttune run`.", valueName: "DIR")) var directory: String
    @Flag(help: "Print the status as JSON.") var json = false

    func run() throws {
        let url = URL(fileURLWithPath: directory)
        let status = try GridStatus.read(results: url, slurm: SlurmClient.has("squeue") ? SlurmClient() : nil)
        if json { print(String(decoding: try encodeJSON(status), as: UTF8.self)) } else { print(status.render(), terminator: "") }
        let c = status.counts
        if (c[.failed] ?? 0) > 0 { throw ExitCode(3) }
        if (c[.done] ?? 0) < status.cells.count { throw ExitCode(2) }
    }
}
