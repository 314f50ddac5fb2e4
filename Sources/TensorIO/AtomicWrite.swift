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
public func writeAtomically(to url: URL, _ body: (FileHandle) throws -> Void) throws {
    let path = url.path
    let directory = url.deletingLastPathComponent()
    let temp = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))")
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
