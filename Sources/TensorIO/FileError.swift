import Foundation

/// Why a file could not be read or written: every failure of TensorIO's readers and writers.
/// `message` starts with the file, names the zip entry or tensor where there is one, and says what
/// to do; `kind` is what went wrong, for code that acts on it.
public struct FileError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// The path does not exist.
        case fileNotFound
        /// The path exists but cannot be opened or mapped (permissions, a folder, a FIFO, I/O error).
        case unreadable
        /// Not the format the reader expects.
        case wrongFormat
        /// Well-formed, but uses a feature or dtype PromptTune does not support.
        case unsupported
        /// The file ends before a structure it declares (an entry, a header, a central directory).
        case truncated
        /// Malformed content (a bad pickle, an invalid header).
        case corrupt
        /// A named zip entry or tensor is absent.
        case missingEntry
        /// Writing failed.
        case writeFailed
    }

    public var kind: Kind
    /// The file the error is about.
    public var path: String
    /// The full, human-readable message (starts with the path).
    public var message: String

    public init(_ kind: Kind, path: String, _ message: String) {
        self.kind = kind
        self.path = path
        self.message = message.hasPrefix(path) ? message : "\(path): \(message)"
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}

extension FileError {
    static let redownload = "The file is incomplete or damaged; download or copy it again."
}
