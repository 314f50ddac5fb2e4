import Experiments
import Foundation
import TensorIO

/// Where one cell of a grid stands (`prompttune status`).
public struct CellStatus: Codable, Equatable, Sendable {
    public enum State: String, Codable, Sendable, CaseIterable {
        case done, running, pending, failed, interrupted
        case notStarted = "not-started"
    }
    public var cell: Int
    public var identifier: String
    public var state: State
    /// The error of a failed cell, Slurm's reason of a pending one, the checkpoint of an interrupted one.
    public var detail: String?
    /// The Slurm job (array task) that ran it last, its state, elapsed time and peak memory.
    public var job: String?
    public var slurmState: String?
    public var elapsed: String?
    public var maxRSS: String?
    /// The headline accuracy of a finished cell.
    public var accuracy: Double?
    /// Epochs done by the cell's checkpoint, of its epochs.
    public var checkpoint: String?

    enum CodingKeys: String, CodingKey {
        case cell, identifier, state, detail, job, slurmState = "slurm_state", elapsed, maxRSS = "max_rss", accuracy, checkpoint
    }
}

/// A results folder's grid, cell by cell, with its Slurm jobs.
public struct GridStatus: Codable, Equatable, Sendable {
    public struct Job: Codable, Equatable, Sendable {
        public var submission: Int
        public var kind: String
        public var id: String
        /// Its tasks by Slurm state, e.g. ["COMPLETED": 7, "FAILED": 1].
        public var states: [String: Int]
    }
    public var results: String
    public var plan: String
    public var modelFolder: String?
    public var cells: [CellStatus]
    public var jobs: [Job]
    public var warnings: [String]

    public var counts: [CellStatus.State: Int] {
        Dictionary(grouping: cells, by: \.state).mapValues(\.count)
    }

    /// Reads the grid of `results` (its latest submission's plan, else `plan.yaml`), its records,
    /// checkpoints and cell locks, and, where `slurm` is given, what Slurm says of its jobs.
    public static func read(results: URL, slurm: SlurmClient?) throws -> GridStatus {
        let (submissions, unreadable) = SlurmFolder(results: results).submissions()
        var warnings = unreadable.map { "unreadable submission: \($0)" }
        let latest = submissions.last(where: { !$0.dryRun }) ?? submissions.last
        let planPath = latest?.plan ?? ResultsFolder(results).plan.path
        guard let text = try? String(contentsOfFile: planPath, encoding: .utf8) else {
            throw ClusterError(.unreadableSubmission, "no grid in \(results.path): it has no plan.yaml (or its submission's plan \(planPath) is gone); give the --out of `prompttune run`")
        }
        let cells = try GridPlan.read(yaml: text, source: planPath).cells()
        // The model folder: the latest submission's, else the one under runs/ holding most of the grid's cells.
        let runs = ResultsFolder(results).runs
        var modelFolder = latest?.modelFolder
        if modelFolder == nil {
            let folders = ((try? FileManager.default.contentsOfDirectory(atPath: runs.path)) ?? []).sorted()
            let ids = cells.map(\.identifier)
            let held = folders.map { f in (f, ids.filter { FileManager.default.fileExists(atPath: runs.appendingPathComponent(f).appendingPathComponent($0).path) }.count) }
            modelFolder = held.filter { $0.1 > 0 }.max { $0.1 < $1.1 }?.0
            if held.filter({ $0.1 > 0 }).count > 1 {
                warnings.append("cells of this grid were run with \(held.filter { $0.1 > 0 }.count) models or precisions (\(held.filter { $0.1 > 0 }.map(\.0).joined(separator: ", "))); shown: \(modelFolder!)")
            }
        }

        // Slurm: each cell's latest task (queued ones from squeue, ended ones from sacct).
        let live = submissions.filter { !$0.dryRun && $0.modelFolder == modelFolder }
        var tasks: [String: (SlurmSubmission, SlurmTask)] = [:]   // cell identifier -> latest task
        var blocked: [String: String] = [:]   // cell identifier -> why its submission's features job stopped it
        var jobs: [Job] = []
        if let slurm, !live.isEmpty {
            let ids = live.flatMap(\.jobs)
            var all: [SlurmTask] = []
            do {
                let queued = try slurm.queue(jobs: ids)
                let accounted = (try slurm.accounting(jobs: ids)) ?? []
                // The queue knows a task's present state; accounting its end (and memory).
                let queuedIDs = Set(queued.map(\.id))
                all = queued.map { q in
                    var t = q
                    if let a = accounted.first(where: { $0.id == q.id }) { t.maxRSS = a.maxRSS; t.node = a.node }
                    return t
                } + accounted.filter { !queuedIDs.contains($0.id) }
            } catch {
                warnings.append("Slurm could not be asked: \(error)")
            }
            for s in live {
                let specs = (try? String(contentsOfFile: s.plan, encoding: .utf8)).flatMap { try? GridPlan.read(yaml: $0, source: s.plan).cells() }
                // A failed features job cancels the cells waiting on it (afterok): they never ran.
                if let f = s.featuresJob, let bad = all.first(where: { $0.job == f && $0.endedBadly }), let specs {
                    let log = URL(fileURLWithPath: s.plan).deletingLastPathComponent().appendingPathComponent("logs/features-\(bad.arrayIndex ?? 0).out").path
                    for c in s.cells where specs.indices.contains(c) {
                        blocked[specs[c].identifier] = "not run: its features job \(bad.id) ended \(bad.state) (log: \(log)); fix that and submit again"
                        tasks[specs[c].identifier] = nil
                    }
                }
                for (kind, id) in [("features", s.featuresJob)] + s.arrays.map { ("cells", $0.job) } + [("report", s.reportJob)] {
                    guard let id else { continue }
                    let mine = all.filter { $0.job == id }
                    jobs.append(Job(submission: s.number, kind: kind, id: id, states: Dictionary(grouping: mine, by: \.state).mapValues(\.count)))
                    guard kind == "cells", let specs else { continue }
                    for t in mine {
                        if let c = s.cell(job: t.job, arrayIndex: t.arrayIndex), specs.indices.contains(c) {
                            tasks[specs[c].identifier] = (s, t)
                            blocked[specs[c].identifier] = nil
                        }
                    }
                }
            }
        }

        var out: [CellStatus] = []
        for (i, spec) in cells.enumerated() {
            var s = CellStatus(cell: i, identifier: spec.identifier, state: .notStarted)
            let folder = modelFolder.map { RunFolder(runs.appendingPathComponent($0).appendingPathComponent(spec.identifier)) }
            let record = folder.flatMap { try? readJSON(RunRecord.self, from: $0.record) }
            let task = tasks[spec.identifier]?.1
            s.job = task?.id
            s.slurmState = task?.state
            s.elapsed = task?.elapsed
            s.maxRSS = task?.maxRSS
            if let folder { s.checkpoint = checkpointProgress(folder) }
            if let r = record, r.spec == spec, r.status == .ok {
                s.state = .done
                s.accuracy = r.accuracy
            } else if let t = task, t.inFlight {
                s.state = t.state == "PENDING" ? .pending : .running
                if t.state == "PENDING" { s.detail = t.reason }
            } else if let folder, isLocked(folder) {
                s.state = .running
                s.detail = "running here (outside Slurm)"
            } else if let r = record, r.spec == spec, r.status == .failed {
                s.state = .failed
                s.detail = r.error
            } else if let t = task, t.endedBadly {
                s.state = .failed
                s.detail = "\(t.state) (job \(t.id)\(t.elapsed.isEmpty ? "" : " after \(t.elapsed)")\(t.exitCode.map { ", exit \($0)" } ?? ""))"
                    + (s.checkpoint.map { "; its checkpoint is at epoch \($0): submit again to resume" } ?? "; submit again to run it")
            } else if task == nil, let why = blocked[spec.identifier] {
                s.state = .failed
                s.detail = why
            } else if s.checkpoint != nil {
                s.state = .interrupted
                s.detail = "stopped at epoch \(s.checkpoint!); run or submit again to resume"
            }
            out.append(s)
        }
        return GridStatus(results: results.path, plan: planPath, modelFolder: modelFolder, cells: out, jobs: jobs, warnings: warnings)
    }

    /// "3/10" from a cell's checkpoint header, or nil.
    static func checkpointProgress(_ folder: RunFolder) -> String? {
        guard FileManager.default.fileExists(atPath: folder.checkpoint.path),
              let file = try? SafetensorsFile(path: folder.checkpoint.path),
              let json = file.metadata["prompttune.header"],
              let header = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let done = header["epochsDone"] as? Int else { return nil }
        let epochs = (header["config"] as? [String: Any])?["epochs"] as? Int
        return epochs.map { "\(done)/\($0)" } ?? "\(done)"
    }

    /// Whether a process on this machine holds the cell's lock (it is running).
    static func isLocked(_ folder: RunFolder) -> Bool {
        guard FileManager.default.fileExists(atPath: folder.url.path + ".lock") else { return false }
        guard let lock = try? FileLock.acquire(folder.url, wait: false) else { return true }
        lock.release()
        return false
    }

    /// The status as a person reads it: a summary line, a table of the cells, the failed cells'
    /// errors, and the Slurm jobs.
    public func render() -> String {
        let c = counts
        var lines = ["\(results): \(cells.count) cells: \(c[.done] ?? 0) done, \(c[.running] ?? 0) running, \(c[.pending] ?? 0) pending, \(c[.failed] ?? 0) failed, \(c[.interrupted] ?? 0) interrupted, \(c[.notStarted] ?? 0) not started"]
        if let modelFolder { lines.append("model: runs/\(modelFolder)") }
        let rows = cells.map { s in
            [String(s.cell), s.state.rawValue, s.accuracy.map { String(format: "%.2f", 100 * $0) } ?? "-", s.job ?? "-",
             s.slurmState ?? "-", s.elapsed ?? "-", s.maxRSS ?? "-", s.checkpoint ?? "-", s.identifier]
        }
        let head = ["cell", "state", "acc%", "slurm job", "slurm state", "elapsed", "max rss", "epochs", "identifier"]
        let widths = head.indices.map { i in ([head[i]] + rows.map { $0[i] }).map(\.count).max()! }
        func line(_ r: [String]) -> String { r.enumerated().map { $0.offset == r.count - 1 ? $0.element : $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
        lines.append(line(head))
        lines += rows.map(line)
        let failed = cells.filter { $0.state == .failed || $0.state == .interrupted || $0.state == .pending }
        if !failed.isEmpty {
            lines.append("")
            for s in failed { lines.append("cell \(s.cell) \(s.state.rawValue): \(s.detail ?? "no detail")") }
        }
        if !jobs.isEmpty {
            lines.append("")
            lines.append("slurm jobs:")
            for j in jobs {
                let states = j.states.isEmpty ? "not known to Slurm any more" : j.states.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
                lines.append("  submission \(j.submission) \(j.kind) \(j.id): \(states)")
            }
        }
        lines += warnings.map { "warning: \($0)" }
        return lines.joined(separator: "\n") + "\n"
    }
}
