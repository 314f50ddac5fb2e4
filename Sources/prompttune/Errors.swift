import ArgumentParser
import Cluster
import Experiments
import Foundation

/// The CLI's one error presentation. Every command's error reaches the user through `present`:
/// library errors already name their file, tensor or value and say what to do; Foundation's file
/// errors become plain words naming the path; encoder and decoder errors name the field. No Swift
/// type dumps, `Error Domain=` texts or `Optional(...)` reach the terminal.
enum ErrorPresenter {
    /// What the user reads for `error` (argument-parser prefixes it with "Error: ").
    static func present(_ error: Error) -> String {
        if let e = error as? EncodingError { return encoding(e) }
        if let e = error as? DecodingError { return "invalid JSON: \(decoding(e))" }
        let ns = error as NSError
        if ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain { return file(ns) }
        return clean((error as? LocalizedError)?.errorDescription ?? String(describing: error))
    }

    /// The error argument-parser should print: its own errors (parsing, validation, help, exit
    /// codes) as they are; every other error as its presentation.
    static func presentable(_ error: Error) -> Error {
        if error is ValidationError || error is ExitCode || error is CleanExit || error is PresentedError { return error }
        // A plan, option or dataset error of a grid: nothing ran; exit 64 (EX_USAGE) as other usage errors.
        if let e = error as? PlanError { return ValidationError(e.description) }
        if let e = error as? ClusterError, e.kind == .invalidOption { return ValidationError(e.message) }
        if String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") { return error }
        return PresentedError(message: present(error))
    }

    /// Foundation's file errors: what happened to which path, and what to do.
    static func file(_ ns: NSError) -> String {
        let path = (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
        let underlying = (ns.userInfo[NSUnderlyingErrorKey] as? Error).map { $0 as NSError }
        let posix = ns.domain == NSPOSIXErrorDomain ? ns.code : (underlying?.domain == NSPOSIXErrorDomain ? underlying!.code : nil)
        let subject = path ?? "a file"
        switch (posix, ns.code) {
        case (Int(ENOTDIR), _):
            if let path, let blocker = firstNonFolder(above: path) {
                return "\(path): \(blocker) is a file, not a folder; choose a path whose folders are folders (or move that file away)"
            }
            return "\(subject): a part of this path is a file, not a folder; choose another path"
        case (Int(EEXIST), _), (_, CocoaError.fileWriteFileExists.rawValue):
            var isDir: ObjCBool = false
            if let path, FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
                return "\(path) is a file, but a folder is needed there; choose another path or move the file away"
            }
            return "\(subject) already exists; choose another path or remove it"
        case (Int(EACCES), _), (Int(EPERM), _), (_, CocoaError.fileWriteNoPermission.rawValue), (_, CocoaError.fileReadNoPermission.rawValue):
            return "\(subject): permission denied; choose a folder you can write to (or read from), or change its permissions"
        case (Int(EROFS), _), (_, CocoaError.fileWriteVolumeReadOnly.rawValue):
            return "\(subject): the file system is read-only; write to another folder"
        case (Int(ENOSPC), _), (Int(EDQUOT), _), (_, CocoaError.fileWriteOutOfSpace.rawValue):
            return "\(subject): the disk is full; free some space or write elsewhere, then run again (finished work is kept)"
        case (Int(ENOENT), _), (_, CocoaError.fileNoSuchFile.rawValue), (_, CocoaError.fileReadNoSuchFile.rawValue):
            return "\(subject): no such file or folder; check the path (relative paths start at \(FileManager.default.currentDirectoryPath))"
        case (Int(EISDIR), _):
            return "\(subject) is a folder, but a file is needed; give the file's path"
        case (_, CocoaError.fileReadCorruptFile.rawValue), (_, CocoaError.fileReadInapplicableStringEncoding.rawValue):
            return "\(subject): the file is not readable text (wrong encoding or damaged)"
        default:
            let reason = underlying.map { $0.localizedDescription } ?? "an input/output error (code \(ns.code))"
            return clean("\(subject): \(reason); check the path, its permissions and free space")
        }
    }

    /// The nearest existing ancestor of `path` that is not a folder (what makes "Not a directory").
    static func firstNonFolder(above path: String) -> String? {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        while url.path != "/" {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), !isDir.boolValue { return url.path }
            url.deleteLastPathComponent()
        }
        return nil
    }

    static func encoding(_ e: EncodingError) -> String {
        switch e {
        case .invalidValue(let value, let ctx):
            let field = ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            let shown = (value as? Double).map { "\($0)" } ?? (value as? Float).map { "\($0)" } ?? "a value"
            return "cannot write \(field.isEmpty ? "a value" : "'\(field)'") as JSON: \(shown) is not a finite number; check the numeric options (they must be finite)"
        @unknown default:
            return "cannot write the output as JSON"
        }
    }

    static func decoding(_ e: DecodingError) -> String {
        func path(_ c: [CodingKey]) -> String { c.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") }
        switch e {
        case .keyNotFound(let key, let ctx): return "missing field '\(path(ctx.codingPath + [key]))'"
        case .typeMismatch(_, let ctx): return "field '\(path(ctx.codingPath))' has the wrong type"
        case .valueNotFound(_, let ctx): return "field '\(path(ctx.codingPath))' has no value"
        case .dataCorrupted(let ctx): return ctx.codingPath.isEmpty ? "not valid JSON" : "field '\(path(ctx.codingPath))' holds an invalid value"
        @unknown default: return "invalid content"
        }
    }

    /// Last line of defence: strips what must never reach the user.
    static func clean(_ text: String) -> String {
        var t = text
        for (dump, plain) in [("Optional(\"", "\""), ("Optional(", "("), ("Swift.", "")] { t = t.replacingOccurrences(of: dump, with: plain) }
        if let r = t.range(of: "Error Domain=") { t = String(t[..<r.lowerBound]) + "(a system error)" }
        return t
    }
}

/// An error already in the user's words.
struct PresentedError: Error, LocalizedError, CustomStringConvertible {
    var message: String
    var description: String { message }
    var errorDescription: String? { message }
}

extension PromptTune {
    /// Parses and runs `arguments` (nil: the process's); returns the error to print, if any.
    /// `main` and the CLI tests share it, so the tests see exactly what users see.
    static func execute(_ arguments: [String]?) -> Error? {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            return nil
        } catch {
            return ErrorPresenter.presentable(error)
        }
    }

    static func main() {
        if let error = execute(nil) { exit(withError: error) }
    }
}
