import CLIP
import Cluster
import Experiments
import Foundation
import TensorCore

extension Run {
    /// The model, results folder and data root of a plan (its fields, else the defaults).
    func locations(_ plan: GridPlan) -> (model: String, out: URL, root: URL) {
        (plan.model ?? CLIPModel.defaultModelLocation(),
         URL(fileURLWithPath: plan.out ?? "results/\(plan.name ?? plan.protocolKind.rawValue)"),
         URL(fileURLWithPath: plan.root ?? ProcessInfo.processInfo.environment["DATA"] ?? FileManager.default.currentDirectoryPath))
    }

    /// `--list`: one line per cell, `number TAB identifier`, then, where the model and the datasets
    /// can be read, TAB estimated time TAB peak memory TAB features ("cached" or "N files to
    /// encode") on this machine (`CostEstimator`; the first list on a machine measures its rates
    /// into <out>/costs/rates.json and says so). The total and Slurm's limits go to standard
    /// error, so standard output stays one line per cell.
    func listCells(_ cells: [RunSpec], plan: GridPlan) {
        let (modelPath, out, root) = locations(plan)
        var estimates: [CellEstimate]?
        var job: (seconds: Double, peakBytes: Int)?
        do {
            let runner = try ExperimentRunner(modelPath: modelPath, root: root, out: out, trainingPrecision: precision.training,
                                              backend: try computeBackend(precision.compute))
            runner.useCoOpCache = !noCoopCache
            let estimator = CostEstimator(runner: runner, rates: CostEstimator.defaultRatesURL(results: runner.results))
            estimates = try estimator.estimate(cells)
            if !estimator.measured.isEmpty {
                say("costs: measured \(estimator.measured.joined(separator: ", ")) on this machine in \(String(format: "%.1f", estimator.calibrationSeconds)) s; saved in \(estimator.ratesURL.path)")
            }
            job = try estimator.featuresJob(cells)
        } catch {
            let why = "\(error)".split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
            say("no estimate of time and memory: \(why.replacingOccurrences(of: "; nothing ran:", with: ":"))")
        }
        for (i, c) in cells.enumerated() {
            guard let e = estimates?[i] else { print("\(i)\t\(c.identifier)"); continue }
            let files = e.uncachedFeatureFiles == 0 ? "cached" : "\(e.uncachedFeatureFiles) file\(e.uncachedFeatureFiles == 1 ? "" : "s") to encode"
            print("\(i)\t\(c.identifier)\t\(ProgressBar.clock(e.seconds))\t\(Self.memory(e.peakBytes))\t\(files)")
        }
        fflush(stdout)
        guard let estimates, let job, !estimates.isEmpty else { return }
        let serial = job.seconds + estimates.reduce(0) { $0 + $1.trainSeconds + $1.evaluationSeconds }
        let peak = max(job.peakBytes, estimates.map(\.peakBytes).max() ?? 0)
        let limits = CostEstimator.slurmLimits(for: estimates)
        say("total: \(estimates.count) cells, \(ProgressBar.clock(serial)) one after another (encoding features once: \(ProgressBar.clock(job.seconds))), peak \(Self.memory(peak)); per cell \(CostEstimator.marginDescription): --time \(limits.timeMinutes) --mem \(limits.memoryMB)M")
    }

    /// `--slurm` without `--time` or `--mem`: the limits of the selected cells (which run after
    /// the features job, so they encode nothing) and of the longest features task, from
    /// `CostEstimator` with its margins, measured with the tasks' thread count (`--cpus-per-task`)
    /// on this machine.
    func estimatedLimits(_ runner: ExperimentRunner, cells: [RunSpec], selection: SubmissionSelection,
                         cellsResources: inout SlurmResources, featuresResources: inout SlurmResources) throws -> SlurmSubmission.Estimate {
        let threads = Compute.threads
        Compute.threads = slurm.cpusPerTask
        defer { Compute.threads = threads }
        let estimator = CostEstimator(runner: runner, rates: CostEstimator.defaultRatesURL(results: runner.results))
        let estimates = try estimator.estimate(selection.cells.map { cells[$0] }, afterFeaturesJob: !selection.featureTasks.isEmpty)
        if !estimator.measured.isEmpty {
            say("costs: measured \(estimator.measured.joined(separator: ", ")) on this machine with \(slurm.cpusPerTask) threads in \(String(format: "%.1f", estimator.calibrationSeconds)) s; saved in \(estimator.ratesURL.path)")
        }
        var features = (seconds: 0.0, peakBytes: 0)
        for task in selection.featureTasks {
            let job = try estimator.featuresJob(task.map { cells[$0] })
            features = (max(features.seconds, job.seconds), max(features.peakBytes, job.peakBytes))
        }
        let cellLimits = CostEstimator.slurmLimits(for: estimates)
        let featureLimits = CostEstimator.slurmLimits(seconds: features.seconds, peakBytes: features.peakBytes)
        var derived: [String] = []
        if slurm.time == nil {
            cellsResources.time = String(cellLimits.timeMinutes)
            featuresResources.time = String(featureLimits.timeMinutes)
            derived.append("--time")
        }
        if slurm.mem == nil {
            cellsResources.memory = "\(cellLimits.memoryMB)M"
            featuresResources.memory = "\(featureLimits.memoryMB)M"
            derived.append("--mem")
        }
        return SlurmSubmission.Estimate(cellSeconds: estimates.map(\.seconds).max() ?? 0, cellPeakBytes: estimates.map(\.peakBytes).max() ?? 0,
                                        featuresSeconds: features.seconds, featuresPeakBytes: features.peakBytes, derived: derived,
                                        margin: CostEstimator.marginDescription)
    }

    /// Bytes as MiB below a GiB, else GiB with one decimal.
    static func memory(_ bytes: Int) -> String {
        let mib = Double(bytes) / 1_048_576
        return mib < 1024 ? String(format: "%.0f MiB", mib) : String(format: "%.1f GiB", mib / 1024)
    }

    private func say(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
}
