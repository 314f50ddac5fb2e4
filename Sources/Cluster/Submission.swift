import Experiments
import Foundation
import TensorIO

/// One submission of a grid to Slurm, as `<out>/slurm/<NNN>/submission.json` keeps it: which
/// cells went, which were skipped and why, the jobs, and what they asked for.
public struct SlurmSubmission: Codable, Equatable, Sendable {
    /// One array of cells: task id + offset = cell number.
    public struct CellsArray: Codable, Equatable, Sendable {
        public var offset: Int
        public var cells: [Int]
        public var job: String?
        public init(offset: Int, cells: [Int], job: String?) { self.offset = offset; self.cells = cells; self.job = job }
    }

    /// What the estimates said and what was derived from them.
    public struct Estimate: Codable, Equatable, Sendable {
        /// The longest cell and the largest peak memory of the cells submitted (seconds, bytes).
        public var cellSeconds: Double
        public var cellPeakBytes: Int
        /// One features task (the longest) and its peak memory.
        public var featuresSeconds: Double
        public var featuresPeakBytes: Int
        /// The limits taken from the estimates rather than the options ("time", "mem").
        public var derived: [String]
        /// The margin applied, in words.
        public var margin: String

        public init(cellSeconds: Double, cellPeakBytes: Int, featuresSeconds: Double, featuresPeakBytes: Int, derived: [String], margin: String) {
            self.cellSeconds = cellSeconds; self.cellPeakBytes = cellPeakBytes; self.featuresSeconds = featuresSeconds
            self.featuresPeakBytes = featuresPeakBytes; self.derived = derived; self.margin = margin
        }
    }

    public var number: Int
    public var submittedAt: String
    public var dryRun: Bool
    /// The runs sub-folder the cells write to (model, digest, precision).
    public var modelFolder: String
    /// The saved plan the tasks read.
    public var plan: String
    public var executable: String
    /// The cells submitted, and those left out: finished, or queued or running from an earlier submission.
    public var cells: [Int]
    public var done: [Int]
    public var inFlight: [Int]
    /// The cells of each features task (empty: every features file was cached, no features job).
    public var featureTasks: [[Int]]
    public var featuresJob: String?
    public var arrays: [CellsArray]
    public var reportJob: String?
    public var resources: SlurmResources
    public var featuresResources: SlurmResources?
    public var estimate: Estimate?

    enum CodingKeys: String, CodingKey {
        case number, submittedAt = "submitted_at", dryRun = "dry_run", modelFolder = "model_folder", plan, executable, cells, done
        case inFlight = "in_flight", featureTasks = "feature_tasks", featuresJob = "features_job", arrays, reportJob = "report_job"
        case resources, featuresResources = "features_resources", estimate
    }

    /// The script of cells array `index` of `count`: `cells.sbatch`, or `cells-<index>.sbatch` when
    /// the grid needs several arrays.
    public static func cellsScript(_ index: Int, of count: Int) -> String {
        count == 1 ? "cells.sbatch" : "cells-\(index).sbatch"
    }

    /// Every job id of the submission.
    public var jobs: [String] { ([featuresJob] + arrays.map(\.job) + [reportJob]).compactMap { $0 } }

    /// The cell a task of this submission runs (nil for the features and report jobs).
    public func cell(job: String, arrayIndex: Int?) -> Int? {
        guard let i = arrayIndex, let a = arrays.first(where: { $0.job == job }) else { return nil }
        return i + a.offset
    }
}

/// The Slurm side of a results folder: `<out>/slurm/<NNN>/` per submission.
public struct SlurmFolder: Sendable {
    public let url: URL
    public init(results: URL) { url = results.appendingPathComponent("slurm") }

    /// Every submission, oldest first; unreadable ones are skipped (with the reason).
    public func submissions() -> (submissions: [SlurmSubmission], unreadable: [String]) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: url.path) else { return ([], []) }
        var list: [SlurmSubmission] = [], unreadable: [String] = []
        for name in names.sorted() where Int(name) != nil {
            let file = url.appendingPathComponent(name).appendingPathComponent("submission.json")
            guard FileManager.default.fileExists(atPath: file.path) else { continue }
            do { list.append(try readJSON(SlurmSubmission.self, from: file)) } catch { unreadable.append("\(file.path): \(error)") }
        }
        return (list.sorted { $0.number < $1.number }, unreadable)
    }

    /// A new submission's folder, numbered after the last (under a lock, so two submissions at once
    /// never share one).
    func newSubmission() throws -> (number: Int, folder: URL) {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        let lock = try FileLock.acquire(url.appendingPathComponent("submissions"), wait: true)!
        defer { lock.release() }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        let number = (names.compactMap { Int($0) }.max() ?? 0) + 1
        let folder = url.appendingPathComponent(String(format: "%03d", number))
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("logs"), withIntermediateDirectories: true)
        return (number, folder)
    }
}

/// Which cells a submission sends, and which it leaves out.
public struct SubmissionSelection: Sendable {
    public var cells: [Int]
    public var done: [Int]
    public var inFlight: [Int]
    /// The cells of each features task, one per training dataset (empty when every file is cached).
    public var featureTasks: [[Int]]
}

/// Submits a grid as Slurm job arrays: its saved plan, a features array, the cells arrays and a
/// report job (`prompttune run --slurm`). Finished cells, and cells queued or running from an
/// earlier submission, are not sent again.
public final class SlurmGridSubmitter {
    public let runner: ExperimentRunner
    /// The plan, its model, root and out absolute (tasks may start in any folder).
    public let plan: GridPlan
    public let cells: [RunSpec]
    public let out: URL
    public var client = SlurmClient()

    public init(runner: ExperimentRunner, plan: GridPlan, out: URL) throws {
        self.runner = runner
        self.plan = plan
        self.cells = try plan.cells()
        self.out = out
    }

    /// The cells of `only` (all when empty) that need running: not finished with these inputs and
    /// not queued or running (`squeue`) from an earlier submission into this folder.
    public func select(only: [Int], checkQueue: Bool) throws -> SubmissionSelection {
        for i in only where !cells.indices.contains(i) {
            throw PlanError("the grid has cells 0...\(cells.count - 1); there is no cell \(i)")
        }
        let wanted = only.isEmpty ? Array(cells.indices) : only
        try runner.checkDatasets(wanted.map { cells[$0] })
        let flying = checkQueue ? try inFlightIdentifiers() : []
        var selection = SubmissionSelection(cells: [], done: [], inFlight: [], featureTasks: [])
        for i in wanted {
            let spec = cells[i]
            if runner.finishedRecord(spec) != nil {
                selection.done.append(i)
            } else if flying.contains(spec.identifier) {
                selection.inFlight.append(i)
            } else {
                selection.cells.append(i)
            }
        }
        // One features task per training dataset with a file not in the cache yet.
        var byDataset: [String: [Int]] = [:], order: [String] = []
        for i in selection.cells {
            let spec = cells[i]
            guard try runner.featureRequests(spec).contains(where: { !runner.store.isCached($0.request) }) else { continue }
            if byDataset[spec.dataset] == nil { order.append(spec.dataset) }
            byDataset[spec.dataset, default: []].append(i)
        }
        selection.featureTasks = order.map { byDataset[$0]! }
        return selection
    }

    /// The identifiers of this model's cells queued or running in an earlier submission.
    func inFlightIdentifiers() throws -> Set<String> {
        let earlier = SlurmFolder(results: out).submissions().submissions.filter { !$0.dryRun && $0.modelFolder == runner.modelFolder }
        let jobs = earlier.flatMap { $0.arrays.compactMap(\.job) }
        guard !jobs.isEmpty else { return [] }
        var ids = Set<String>()
        let tasks = try client.queue(jobs: jobs)
        for s in earlier {
            let flying = tasks.filter { t in t.inFlight && s.arrays.contains { $0.job == t.job } }
            guard !flying.isEmpty else { continue }
            let specs = try GridPlan.read(yaml: String(contentsOfFile: s.plan, encoding: .utf8), source: s.plan).cells()
            for t in flying {
                if let c = s.cell(job: t.job, arrayIndex: t.arrayIndex), specs.indices.contains(c) { ids.insert(specs[c].identifier) }
            }
        }
        return ids
    }

    /// Writes the submission's folder (plan, scripts, `submission.json`) and, unless `dryRun`,
    /// submits it with `submit.sh`; returns the submission with its job ids.
    public func submit(_ selection: SubmissionSelection, resources: SlurmResources, featuresResources: SlurmResources,
                       estimate: SlurmSubmission.Estimate?, executable: String, runFlags: [String], dryRun: Bool,
                       maxArraySize: Int) throws -> (submission: SlurmSubmission, folder: URL) {
        try resources.validate()
        try featuresResources.validate()
        let (number, folder) = try SlurmFolder(results: out).newSubmission()
        // The plan the tasks read: the cells must number the same as here.
        let planURL = folder.appendingPathComponent("plan.yaml")
        let yaml = try plan.yaml()
        guard try GridPlan.read(yaml: yaml, source: planURL.path).cells() == cells else {
            throw ClusterError(.invalidOption, "the saved plan does not give back the grid's cells; nothing was submitted (a bug: please report it with the plan)")
        }
        try writeAtomically(Data(yaml.utf8), to: planURL)
        try writeAtomically(Data(yaml.utf8), to: ResultsFolder(out).plan)

        let scripts = SlurmGridScripts(executable: executable, plan: planURL, out: out, folder: folder, runFlags: runFlags,
                                       jobName: "pt-\(plan.name ?? plan.protocolKind.rawValue)")
        // Arrays of task ids below the cluster's MaxArraySize: cell numbers [k M, (k+1) M) go to array k, offset k M.
        var arrays: [SlurmSubmission.CellsArray] = []
        for c in selection.cells {
            let offset = c / maxArraySize * maxArraySize
            if arrays.last?.offset == offset { arrays[arrays.count - 1].cells.append(c) } else { arrays.append(.init(offset: offset, cells: [c], job: nil)) }
        }
        var names: [String] = []
        for (i, a) in arrays.enumerated() {
            let name = SlurmSubmission.cellsScript(i, of: arrays.count)
            try writeScript(scripts.cells(a.cells, offset: a.offset, resources: resources), to: folder.appendingPathComponent(name))
            names.append(name)
        }
        let features = !selection.featureTasks.isEmpty
        if features {
            try writeScript(scripts.features(tasks: selection.featureTasks, resources: featuresResources), to: folder.appendingPathComponent("features.sbatch"))
        }
        var reportResources = featuresResources
        reportResources.maxParallel = nil
        try writeScript(scripts.report(resources: reportResources), to: folder.appendingPathComponent("report.sbatch"))
        let submitScript = folder.appendingPathComponent("submit.sh")
        try writeScript(scripts.submit(features: features, cellsScripts: names), to: submitScript)

        var submission = SlurmSubmission(
            number: number, submittedAt: ISO8601DateFormatter().string(from: Date()), dryRun: dryRun, modelFolder: runner.modelFolder,
            plan: planURL.path, executable: executable, cells: selection.cells, done: selection.done, inFlight: selection.inFlight,
            featureTasks: selection.featureTasks, featuresJob: nil, arrays: arrays, reportJob: nil, resources: resources,
            featuresResources: features ? featuresResources : nil, estimate: estimate)
        let record = folder.appendingPathComponent("submission.json")
        if !dryRun {
            // The record first (so `status` knows the folder even if sbatch fails half way), then the jobs.
            try writeJSON(submission, to: record)
            let r = try client.run("bash", [submitScript.path])
            for line in r.out.split(separator: "\n") {
                let f = line.split(separator: " ").map(String.init)
                guard f.count == 2 else { continue }
                switch f[0] {
                case "features": submission.featuresJob = f[1]
                case "cells": if let i = submission.arrays.firstIndex(where: { $0.job == nil }) { submission.arrays[i].job = f[1] }
                case "report": submission.reportJob = f[1]
                default: break
                }
            }
            try writeJSON(submission, to: record)
            guard r.status == 0 else {
                throw ClusterError(.slurmFailed, "submitting \(submitScript.path) failed (status \(r.status)) after jobs \(submission.jobs.isEmpty ? "none" : submission.jobs.joined(separator: ", ")): \(r.err.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
        } else {
            try writeJSON(submission, to: record)
        }
        return (submission, folder)
    }

    func writeScript(_ text: String, to url: URL) throws {
        try writeAtomically(Data(text.utf8), to: url)
        chmod(url.path, 0o755)
    }
}
