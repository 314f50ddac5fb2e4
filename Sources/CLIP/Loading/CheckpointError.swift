import Foundation

/// A CLIP-level problem with a checkpoint that was read successfully: a missing tensor, a tensor of
/// the wrong shape, an architecture PromptTune does not implement, a config.json that contradicts
/// the weights. (File-level problems, a missing or truncated file, an unknown format, are `FileError`s.)
public struct CLIPCheckpointError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public enum Kind: String, Sendable {
        case missingTensor
        case shapeMismatch
        case unsupportedArchitecture
        case invalidConfig
        /// Weights that hold NaN or infinite values.
        case invalidWeights
    }

    public var kind: Kind
    public var path: String
    public var message: String

    public init(_ kind: Kind, path: String, _ message: String) {
        self.kind = kind
        self.path = path
        self.message = message.hasPrefix(path) ? message : "\(path): \(message)"
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}
