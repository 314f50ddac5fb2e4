import Foundation

/// Slurm's own tools, run as processes: `sbatch` submits, `squeue` says what is queued or running,
/// `sacct` what ended and how. Nothing here schedules: Slurm does.
public struct SlurmClient: Sendable {
    public init() {}

    /// Whether a Slurm tool is on the PATH.
    public static func has(_ tool: String) -> Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
    }

    /// Runs `tool args` from the PATH; its exit status, standard output and standard error.
    public func run(_ tool: String, _ args: [String], directory: URL? = nil) throws -> (status: Int32, out: String, err: String) {
        guard Self.has(tool) else {
            throw ClusterError(.slurmMissing, "\(tool) is not on the PATH: run this on a machine of the Slurm cluster (a login node), or give --dry-run to only write the scripts")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        if let directory { p.currentDirectoryURL = directory }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Read both pipes before waiting, so a chatty tool never blocks on a full pipe.
        let errData = ReadInBackground(err.fileHandleForReading)
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData.wait(), as: UTF8.self))
    }

    /// The tasks of `jobs` still known to the controller (queued, running, completing), one per
    /// array task (`squeue -r`). Empty when none is (a job that ended leaves the queue).
    public func queue(jobs: [String]) throws -> [SlurmTask] {
        guard !jobs.isEmpty else { return [] }
        // Only this user's jobs, filtered by id here: squeue refuses a list naming a job it has forgotten.
        let r = try run("squeue", ["-h", "-r", "--me", "-o", "%A|%a|%T|%M|%R"])
        guard r.status == 0 else { throw ClusterError(.slurmFailed, "squeue failed (status \(r.status)): \(r.err.trimmingCharacters(in: .whitespacesAndNewlines))") }
        let wanted = Set(jobs)
        return r.out.split(separator: "\n").compactMap { line in
            let f = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 5, wanted.contains(f[0]) else { return nil }
            return SlurmTask(job: f[0], arrayIndex: Int(f[1]), state: f[2], elapsed: f[3], reason: f[4])
        }
    }

    /// How every task of `jobs` ended or stands, from Slurm's accounting (`sacct`): state, exit
    /// code, elapsed time and the batch step's peak memory. Nil where accounting is off.
    public func accounting(jobs: [String]) throws -> [SlurmTask]? {
        guard !jobs.isEmpty, Self.has("sacct") else { return nil }
        let r = try run("sacct", ["-n", "-P", "-j", jobs.joined(separator: ","),
                                  "-o", "JobID,JobIDRaw,State,ExitCode,Elapsed,MaxRSS,NodeList"])
        guard r.status == 0 else {
            // "Slurm accounting storage is disabled": no history to read, which is not an error here.
            if r.err.contains("accounting storage is disabled") { return nil }
            throw ClusterError(.slurmFailed, "sacct failed (status \(r.status)): \(r.err.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        var tasks: [String: SlurmTask] = [:]
        var order: [String] = []
        for line in r.out.split(separator: "\n") {
            let f = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 7 else { continue }
            // JobID is "<job>_<index>" for array tasks (or "<job>_[0-7]" while pending), with
            // ".batch" / ".extern" for steps; the batch step carries the peak memory.
            let parts = f[0].split(separator: ".", maxSplits: 1).map(String.init)
            let id = parts[0]
            let step = parts.count > 1 ? parts[1] : nil
            if step == nil {
                let (job, index) = Self.split(id)
                guard jobs.contains(job) else { continue }
                if tasks[id] == nil { order.append(id) }
                var t = tasks[id] ?? SlurmTask(job: job, arrayIndex: index, state: "", elapsed: "", reason: "")
                t.state = f[2].split(separator: " ").first.map(String.init) ?? f[2]   // "CANCELLED by 0" -> CANCELLED
                t.exitCode = f[3]
                t.elapsed = f[4]
                t.node = f[6]
                tasks[id] = t
            } else if step == "batch", !f[5].isEmpty, var t = tasks[id] {
                t.maxRSS = f[5]
                tasks[id] = t
            }
        }
        return order.compactMap { tasks[$0] }
    }

    /// "123_4" -> ("123", 4); "123" -> ("123", nil); "123_[0-7]" -> ("123", nil).
    static func split(_ id: String) -> (String, Int?) {
        let p = id.split(separator: "_", maxSplits: 1).map(String.init)
        return (p[0], p.count > 1 ? Int(p[1]) : nil)
    }

    /// Submits `script` (`sbatch --parsable`, with `args` before it); the job id.
    public func submit(_ script: URL, args: [String] = []) throws -> String {
        let r = try run("sbatch", ["--parsable"] + args + [script.path], directory: script.deletingLastPathComponent())
        guard r.status == 0 else {
            throw ClusterError(.slurmFailed, "sbatch \(script.lastPathComponent) was refused (status \(r.status)): \(r.err.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        // --parsable prints "<job id>" or "<job id>;<cluster>".
        guard let id = r.out.split(separator: "\n").last?.split(separator: ";").first.map(String.init), Int(id) != nil else {
            throw ClusterError(.slurmFailed, "sbatch \(script.lastPathComponent) printed no job id: \(r.out)")
        }
        return id
    }

    /// The controller's largest array index plus one (`MaxArraySize`; Slurm's default is 1001).
    public func maxArraySize() -> Int {
        guard let r = try? run("scontrol", ["show", "config"]), r.status == 0 else { return 1001 }
        for line in r.out.split(separator: "\n") where line.hasPrefix("MaxArraySize") {
            if let v = line.split(separator: "=").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) { return v }
        }
        return 1001
    }
}

/// One job or array task as Slurm reports it.
public struct SlurmTask: Codable, Equatable, Sendable {
    /// The job id (of the array, for an array task).
    public var job: String
    public var arrayIndex: Int?
    /// Slurm's state name: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, OUT_OF_MEMORY, ...
    public var state: String
    public var elapsed: String
    /// squeue's reason (pending) or node list (running).
    public var reason: String
    public var exitCode: String?
    /// Peak resident memory of the batch step, as sacct writes it (e.g. "812344K").
    public var maxRSS: String?
    public var node: String?

    public init(job: String, arrayIndex: Int?, state: String, elapsed: String, reason: String) {
        self.job = job; self.arrayIndex = arrayIndex; self.state = state; self.elapsed = elapsed; self.reason = reason
    }

    /// "123_4", or "123".
    public var id: String { arrayIndex.map { "\(job)_\($0)" } ?? job }

    /// Queued or running: it will still write.
    public var inFlight: Bool {
        ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
         "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT"].contains(state)
    }

    /// Ended without success (a time limit, memory, a node, a cancel, or a failing exit status).
    public var endedBadly: Bool {
        ["FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"].contains(state)
    }
}

/// Errors of cluster work, with what to do.
public struct ClusterError: Error, CustomStringConvertible, LocalizedError, Equatable {
    public enum Kind: String, Sendable {
        /// A Slurm tool is not installed here.
        case slurmMissing
        /// A Slurm tool refused or failed.
        case slurmFailed
        /// An option (time, memory, executable) cannot be used.
        case invalidOption
        /// A submission's files cannot be read.
        case unreadableSubmission
    }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
    public var errorDescription: String? { message }
}

/// A file handle read to its end on another thread (a pipe that must not fill while the other is read).
final class ReadInBackground: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        DispatchQueue.global().async { self.data = handle.readDataToEndOfFile(); self.done.signal() }
    }
    func wait() -> Data { done.wait(); return data }
}
