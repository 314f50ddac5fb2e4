import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a file atomically: `body` writes to a temporary file in the destination folder, which is
/// then renamed over `url`. On any failure the temporary file is removed and `url` is untouched.
///
/// The temporary file is `.<name>.tmp-<pid>-<random>`. A process killed mid-write leaves it behind,
/// so each write first removes the temporaries of the same target whose writing process no longer
/// exists (`removeStaleTemporaries`). A temporary of a live process (a concurrent writer of the same
/// target, in this process or another) is never touched.
public func writeAtomically(to url: URL, _ body: (FileHandle) throws -> Void) throws {
    let path = url.path
    let directory = url.deletingLastPathComponent()
    let temp = directory.appendingPathComponent("\(temporaryPrefix(for: url))\(getpid())-\(UInt32.random(in: 0 ... .max))")
    removeStaleTemporaries(of: url)
    do {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: temp.path, contents: nil) else {
            throw TensorIOError(.writeFailed, path: path, "cannot create the temporary file \(temp.path); check that the folder is writable.")
        }
        let handle = try FileHandle(forWritingTo: temp)
        do {
            try body(handle)
            try handle.synchronize()
            try handle.close()
        } catch {
            try? handle.close()
            throw error
        }
        guard rename(temp.path, path) == 0 else {
            let reason = String(cString: strerror(errno))
            throw TensorIOError(.writeFailed, path: path, "cannot move the temporary file into place (\(reason)).")
        }
    } catch let e as TensorIOError {
        try? FileManager.default.removeItem(at: temp)
        throw e
    } catch {
        try? FileManager.default.removeItem(at: temp)
        throw TensorIOError(.writeFailed, path: path, "cannot write the file (\(error.localizedDescription)); check the folder and free space.")
    }
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
