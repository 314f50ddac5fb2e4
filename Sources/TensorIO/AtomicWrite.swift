import Foundation
import TensorCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// `write(2)`, named apart from `OutputFile.write(_:)`.
#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Musl)
private let systemWrite = Musl.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif

/// What is at an output path before PromptTune writes there.
public enum OutputTarget: Equatable, Sendable {
    /// Nothing yet, or a regular file: written by atomic replace.
    case replaceable
    /// A character device the user named on purpose (`/dev/null`, `/dev/stdout`, a terminal):
    /// written in place, never replaced (an atomic rename over `/dev/null` used to replace the
    /// system's `/dev/null` with a regular file when run as root).
    case characterDevice

    /// Checks the path itself (not following a final symbolic link): a symbolic link, FIFO,
    /// socket, block device or folder there is refused with a message naming the path, since
    /// replacing it would destroy it and writing through it would block or land elsewhere.
    public static func check(_ url: URL) throws -> OutputTarget {
        var st = stat()
        guard lstat(url.path, &st) == 0 else {
            if errno == ENOENT { return .replaceable }
            let reason = String(cString: strerror(errno))
            throw FileError(.writeFailed, path: url.path, "cannot inspect the output path (\(reason)); choose another path.")
        }
        func refuse(_ what: String) -> FileError {
            FileError(.writeFailed, path: url.path, "is \(what), not a regular file; PromptTune writes its outputs by replacing a regular file, so choose a new file name (or remove what is there).")
        }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .replaceable
        case S_IFCHR: return .characterDevice
        default: throw refuse(fileKindName(st.st_mode) ?? "a special file")
        }
    }
}

/// The file an atomic write is filling: every write throws (Foundation's `FileHandle.write(_:)`
/// cannot, and trapped when the disk filled), with a message that names the destination and, for a
/// full disk, says so.
public final class OutputFile {
    let fd: Int32
    /// The destination named in messages (not the temporary file).
    public let path: String
    /// Whether `deinit` closes `fd` (files opened by `appending(to:truncate:)`).
    private let owned: Bool

    /// Writes to `fd`, which the caller keeps open and closes.
    public init(fd: Int32, path: String) { self.fd = fd; self.path = path; self.owned = false }

    private init(owning fd: Int32, path: String) { self.fd = fd; self.path = path; self.owned = true }

    deinit { if owned { close(fd) } }

    /// A log file written a record at a time (traces, TensorBoard events), checked as every output
    /// is (`OutputTarget.check`): a regular file is created or continued with O_APPEND (emptied
    /// first with `truncate`), so that each `write` lands whole at the end even when several
    /// processes share it; a character device is written in place; anything else is refused.
    public static func appending(to url: URL, truncate: Bool = false) throws -> OutputFile {
        var flags = O_WRONLY | O_CLOEXEC
        if try OutputTarget.check(url) == .replaceable { flags |= O_CREAT | O_APPEND | (truncate ? O_TRUNC : 0) }
        let fd = open(url.path, flags, 0o644)
        guard fd >= 0 else {
            throw FileError(.writeFailed, path: url.path, "cannot open the file for writing (\(String(cString: strerror(errno)))); choose a path in a folder you can write to.")
        }
        return OutputFile(owning: fd, path: url.path)
    }

    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            guard var p = raw.baseAddress else { return }
            var left = raw.count
            while left > 0 {
                let n = systemWrite(fd, p, left)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw OutputFile.error(errno: errno, path: path)
                }
                p += n
                left -= n
            }
        }
    }

    /// Foundation's spelling, so that writers read as before.
    public func write(contentsOf data: Data) throws { try write(data) }

    static func error(errno code: Int32, path: String) -> FileError {
        switch code {
        case ENOSPC, EDQUOT:
            return FileError(.writeFailed, path: path, "the disk is full; free some space or write elsewhere, then run again (finished work is kept).")
        case EFBIG:
            return FileError(.writeFailed, path: path, "the file grew past the file size limit of this system or file system; write elsewhere.")
        default:
            return FileError(.writeFailed, path: path, "cannot write the file (\(String(cString: strerror(code)))); check the folder and free space.")
        }
    }
}

/// Writes a file atomically: `body` writes to a temporary file in the destination folder, which is
/// then renamed over `url`. On any failure the temporary file is removed and `url` is untouched.
/// A character device at `url` is written in place instead; a symbolic link, FIFO, socket, block
/// device or folder there is refused (`OutputTarget.check`).
///
/// The temporary file is `.<name>.tmp-<pid>-<random>`. A process killed mid-write leaves it behind,
/// so each write first removes the temporaries of the same target whose writing process no longer
/// exists (`removeStaleTemporaries`). A temporary of a live process (a concurrent writer of the same
/// target, in this process or another) is never touched.
public func writeAtomically(to url: URL, _ body: (OutputFile) throws -> Void) throws {
    let path = url.path
    if try OutputTarget.check(url) == .characterDevice {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw FileError(.writeFailed, path: path, "cannot open the device for writing (\(String(cString: strerror(errno)))).")
        }
        defer { close(fd) }
        try body(OutputFile(fd: fd, path: path))
        return
    }
    let directory = url.deletingLastPathComponent()
    let temp = directory.appendingPathComponent("\(temporaryPrefix(for: url))\(getpid())-\(UInt32.random(in: 0 ... .max))")
    removeStaleTemporaries(of: url)
    do {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let fd = open(temp.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FileError(.writeFailed, path: path, "cannot create the temporary file \(temp.path) (\(String(cString: strerror(errno)))); check that the folder is writable.")
        }
        do {
            try body(OutputFile(fd: fd, path: path))
            guard fsync(fd) == 0 else { throw OutputFile.error(errno: errno, path: path) }
            guard close(fd) == 0 else { throw OutputFile.error(errno: errno, path: path) }
        } catch {
            close(fd)
            throw error
        }
        guard rename(temp.path, path) == 0 else {
            let reason = String(cString: strerror(errno))
            throw FileError(.writeFailed, path: path, "cannot move the temporary file into place (\(reason)).")
        }
    } catch let e as FileError {
        try? FileManager.default.removeItem(at: temp)
        throw e
    } catch {
        try? FileManager.default.removeItem(at: temp)
        throw FileError(.writeFailed, path: path, "cannot write the file (\(error.localizedDescription)); check the folder and free space.")
    }
}

/// `data` written atomically to `url` (see `writeAtomically(to:_:)`).
public func writeAtomically(_ data: Data, to url: URL) throws {
    try writeAtomically(to: url) { try $0.write(data) }
}

/// `.<name>.tmp-`: the start of every temporary file name `writeAtomically` uses for `url`.
func temporaryPrefix(for url: URL) -> String { ".\(url.lastPathComponent).tmp-" }

/// Removes the temporary files an interrupted `writeAtomically(to: url)` left: those named
/// `.<name>.tmp-<pid>-<random>` whose process `<pid>` no longer exists. Returns the names removed.
/// Names that do not parse, and temporaries of live processes, are kept. (A pid reused by an
/// unrelated live process only delays the clean-up to a later write.)
@discardableResult
public func removeStaleTemporaries(of url: URL) -> [String] {
    let directory = url.deletingLastPathComponent()
    let prefix = temporaryPrefix(for: url)
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return [] }
    var removed: [String] = []
    for name in names where name.hasPrefix(prefix) {
        let rest = name.dropFirst(prefix.count)
        let parts = rest.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, UInt32(parts[1]) != nil else { continue }
        guard pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
        if (try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))) != nil { removed.append(name) }
    }
    return removed
}
