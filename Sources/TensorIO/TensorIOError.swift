import Foundation

/// Every failure of TensorIO's readers and writers. The message names the file and, where relevant,
/// the zip entry or tensor, and says what to do about it.
public struct TensorIOError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public enum Kind: String, Sendable {
        /// The path does not exist.
        case fileNotFound
        /// The path exists but cannot be opened or mapped (permissions, a directory, I/O error).
        case unreadable
        /// The content is not the format the reader expects.
        case unknownFormat
        /// The file ends before a structure it declares (an entry, a header, a central directory).
        case truncated
        /// The content is malformed (a bad pickle, an inconsistent header).
        case corrupt
        /// A valid file that uses a feature or dtype this reader does not support.
        case unsupported
        /// A named entry or tensor is absent.
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

extension TensorIOError {
    static let redownload = "The file is incomplete or damaged; download or copy it again."
}
