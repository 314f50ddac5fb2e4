import Foundation

/// Why a file could not be read or written: the one error of PromptTune's file readers and writers
/// (TensorIO's zip, pickle, torch and safetensors readers, CLIP checkpoints, features files,
/// prompt checkpoints). `message` starts with the file, names the zip entry or tensor where there
/// is one, and says what to do; `kind` is what went wrong, for code that acts on it.
public struct FileError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// The path does not exist.
        case fileNotFound
        /// The path exists but cannot be opened or mapped (permissions, a folder, a FIFO, I/O error).
        case unreadable
        /// Not the format the reader expects (another file type, a safetensors file that is not a
        /// features file, a prompt checkpoint without its magic).
        case wrongFormat
        /// Written by a newer PromptTune.
        case newerVersion
        /// Well-formed, but uses a feature, dtype or model architecture PromptTune does not support.
        case unsupported
        /// The file ends before (or continues after) what it declares (a zip entry, a header, a context).
        case truncated
        /// Malformed content (a bad pickle, an invalid header).
        case corrupt
        /// A header that contradicts itself (a prompt checkpoint's shapes, progress, history, settings).
        case inconsistent
        /// A named zip entry or tensor is absent.
        case missingEntry
        /// A tensor of the wrong shape, or tensors whose shapes do not fit together.
        case badShape
        /// A label that is not an integer in 0..<K (NaN, infinite, fractional, negative, too large).
        case badLabel
        /// A NaN or infinite value.
        case nonFinite
        /// A finite value outside its bounds (a weight beyond fp16's range, the logit scale).
        case outOfRange
        /// A model config (Hugging Face config.json) that is unreadable or contradicts the weights.
        case invalidConfig
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
