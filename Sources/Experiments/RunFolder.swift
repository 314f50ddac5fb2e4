import Foundation
import TensorCore
import TensorIO

/// Where a results folder keeps things:
///
///     <out>/plan.yaml                       the grid as run (for the record)
///     <out>/features/<model digest>/<name>.safetensors   features shared by every cell that needs them
///     <out>/runs/<model>/<cell id>/spec.json        the cell's spec, written when it starts
///     <out>/runs/<model>/<cell id>/prompt.safetensors  checkpoint after every epoch (resume point;
///                                                   an earlier version's prompt.ptprompt is resumed too)
///     <out>/runs/<model>/<cell id>/initial.safetensors  the parameters training started from (replays)
///     <out>/runs/<model>/<cell id>/nc_history.json  neural-collapse measures over training
///     <out>/runs/<model>/<cell id>/record.json      the finished (or failed) cell's record
///     <out>/runs/<model>/<cell id>/record.superseded-<time>.json  a finished record replaced because
///                                                   the cell's inputs changed (kept, not reported)
///
/// `<model>` is ``CellInputs/folderName``: the model's file name and short digest (and `-bf16`), so
/// grids run with two models (or precisions) into one folder keep both results side by side.
///     <out>/results.md, results.csv, report.html   written by `prompttune report`
public struct ResultsFolder: Sendable {
    public let url: URL
    public init(_ url: URL) { self.url = url }

    public var features: URL { url.appendingPathComponent("features") }
    public var runs: URL { url.appendingPathComponent("runs") }
    public var plan: URL { url.appendingPathComponent("plan.yaml") }
    /// The folder of cell `spec` run with the model (and precision) that `modelFolder` names
    /// (``CellInputs/folderName``).
    public func cell(_ spec: RunSpec, model modelFolder: String) -> RunFolder {
        RunFolder(runs.appendingPathComponent(modelFolder).appendingPathComponent(spec.identifier))
    }
}

/// One training run's folder: the `train` command's `--out`, or a grid cell.
public struct RunFolder: Sendable {
    public let url: URL
    public init(_ url: URL) { self.url = url }

    /// The prompt checkpoint, written after every epoch (`ParameterCheckpoint`).
    public var checkpoint: URL { url.appendingPathComponent("prompt.safetensors") }
    /// The checkpoint earlier versions wrote for text-prompt runs: resumed when there is no
    /// `checkpoint`, and removed once the run has written its own.
    public var legacyCheckpoint: URL { url.appendingPathComponent("prompt.ptprompt") }
    /// The parameters a run started from, written when it starts (not when it resumes).
    public var initial: URL { url.appendingPathComponent("initial.safetensors") }
    public var config: URL { url.appendingPathComponent("config.json") }
    public var spec: URL { url.appendingPathComponent("spec.json") }
    public var history: URL { url.appendingPathComponent("history.json") }
    public var ncHistory: URL { url.appendingPathComponent("nc_history.json") }
    public var record: URL { url.appendingPathComponent("record.json") }

    public func create() throws {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The finished record of this cell, when there is one for exactly `spec` made from `inputs`.
    public func finishedRecord(for spec: RunSpec, inputs: CellInputs) -> RunRecord? {
        guard let record = try? readJSON(RunRecord.self, from: record), record.spec == spec, record.status == .ok,
              inputs.match(record) else { return nil }
        return record
    }

    /// Moves a finished record that is about to be replaced to `record.superseded-<finished at>.json`
    /// beside it (kept for the record; `loadRunRecords` reads only `record.json`). Failed records
    /// are simply replaced.
    public func supersedeRecord() throws {
        guard let old = try? readJSON(RunRecord.self, from: record), old.status == .ok else { return }
        let stamp = old.finishedAt.map { $0.isLetter || $0.isNumber ? $0 : "-" }
        var target = url.appendingPathComponent("record.superseded-\(String(stamp)).json")
        var n = 2
        while FileManager.default.fileExists(atPath: target.path) {
            target = url.appendingPathComponent("record.superseded-\(String(stamp))-\(n).json"); n += 1
        }
        try FileManager.default.moveItem(at: record, to: target)
    }
}

/// Moves a checkpoint that cannot be resumed out of the way, to `<name>.rejected` (replacing an
/// older one), so that the run starts over and the file stays for inspection; says what it did.
func setAside(_ url: URL) -> String {
    let rejected = URL(fileURLWithPath: url.path + ".rejected")
    try? FileManager.default.removeItem(at: rejected)
    if (try? FileManager.default.moveItem(at: url, to: rejected)) != nil { return "set aside as \(rejected.lastPathComponent)" }
    try? FileManager.default.removeItem(at: url)
    return "removed (it could not be moved aside)"
}

/// JSON as PromptTune writes it everywhere: sorted keys (byte-reproducible), written atomically.
public func encodeJSON<T: Encodable>(_ value: T, pretty: Bool = true) throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return try encoder.encode(value)
}

public func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
    let data = try encodeJSON(value)
    try writeAtomically(data + Data("\n".utf8), to: url)
}

public func readJSON<T: Decodable>(_ type: T.Type, from url: URL) throws -> T {
    let data: Data
    if let kind = nonRegularFileKind(url.path) {
        throw ExperimentError(.unreadableFile, "\(url.path) is \(kind), not a regular file; give the path of the file itself")
    }
    do { data = try Data(contentsOf: url) } catch {
        throw ExperimentError(.unreadableFile, "cannot read \(url.path): \(error.localizedDescription)")
    }
    do { return try decodeJSON(type, from: data) } catch let e as DecodingError {
        throw ExperimentError(.unreadableFile, "\(url.path) is not a valid \(T.self) file: \(describe(e))")
    }
}

/// JSON as `encodeJSON` writes it: non-finite numbers as "inf", "-inf" and "nan".
func decodeJSON<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
    let decoder = JSONDecoder()
    decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return try decoder.decode(type, from: data)
}

/// An exclusive lock on `<path>.lock` held while `body` runs, so that parallel cells (`--cell N`
/// under a scheduler) never build the same features file twice at once.
public func withFileLock<T>(_ url: URL, _ body: () throws -> T) throws -> T {
    let lock = try FileLock.acquire(url, wait: true)!
    defer { lock.release() }
    return try body()
}

/// An exclusive `flock` on `<path>.lock`, between processes.
///
/// The holder removes the lock file before unlocking, so none is left behind. That is safe because
/// a waiter that then gets its lock checks that the file it locked is still the one at the path
/// (same device and inode); if it was removed meanwhile, the waiter opens the path again. Every
/// holder thus holds the lock of the file at the path, and there is only one.
public final class FileLock {
    let fd: Int32
    let lockPath: String

    private init(fd: Int32, lockPath: String) { self.fd = fd; self.lockPath = lockPath }

    /// The lock of `url`; with `wait` false, nil when another holder has it.
    public static func acquire(_ url: URL, wait: Bool) throws -> FileLock? {
        let lockPath = url.path + ".lock"
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        while true {
            let fd = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ExperimentError(.lockFailed, "cannot create the lock file \(lockPath): \(String(cString: strerror(errno)))") }
            while flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0 {
                if errno == EWOULDBLOCK && !wait { close(fd); return nil }
                guard errno == EINTR else {
                    let reason = String(cString: strerror(errno))
                    close(fd)
                    throw ExperimentError(.lockFailed, "cannot lock \(lockPath): \(reason)")
                }
            }
            var held = stat(), current = stat()
            if fstat(fd, &held) == 0, stat(lockPath, &current) == 0, held.st_ino == current.st_ino, held.st_dev == current.st_dev {
                return FileLock(fd: fd, lockPath: lockPath)
            }
            close(fd)  // the file was removed by the holder before us: lock the one at the path now
        }
    }

    /// Removes the lock file while still held (a later caller creates a fresh one), then unlocks.
    public func release() {
        unlink(lockPath)
        flock(fd, LOCK_UN)
        close(fd)
    }
}
