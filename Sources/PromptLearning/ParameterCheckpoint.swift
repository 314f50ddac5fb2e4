import Foundation
import TensorCore
import TensorIO

/// A prompt checkpoint of the general trainer: a safetensors file whose tensors are the named
/// parameters (`param.<name>`) and their momentum buffers (`momentum.<name>`), and whose metadata
/// holds the run's header as JSON (`prompttune.header`), so any safetensors reader can open it.
/// Today's `.ptprompt` files (one text context) are read too (`read(path:)` picks by magic).
public struct ParameterCheckpoint: Equatable, Sendable {
    public static let format = "prompttune.parameters"
    public static let version = 2

    public struct Header: Codable, Equatable, Sendable {
        public var config: TrainConfig
        public var classNames: [String]
        public var shapes: [String: [Int]]
        public var epochsDone: Int
        public var steps: Int
        public var rngState: String
        public var history: [EpochRecord]
        public var modelDigest: String
        public var dataDigest: String
    }

    public var header: Header
    public var parameters: ParameterSet
    public var momentum: ParameterSet

    public init(header: Header, parameters: ParameterSet, momentum: ParameterSet) {
        self.header = header; self.parameters = parameters; self.momentum = momentum
    }

    public func write(to url: URL) throws {
        var tensors: [String: Tensor] = [:]
        for n in parameters.names { tensors["param.\(n)"] = parameters[n]! }
        for n in momentum.names { tensors["momentum.\(n)"] = momentum[n]! }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(header), as: UTF8.self)
        try Safetensors.write(tensors: tensors, metadata: ["format": Self.format, "version": String(Self.version),
                                                           "prompttune.header": json,
                                                           "parameter_order": parameters.names.joined(separator: ",")], to: url)
    }

    /// Reads a safetensors prompt checkpoint, or a `.ptprompt` (its context becomes `text.context`).
    public static func read(path: String) throws -> ParameterCheckpoint {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw PromptError("\(path): no such prompt checkpoint (training writes one in its output folder)")
        }
        let magic = (try? handle.read(upToCount: 8)) ?? Data()
        try? handle.close()
        if Array(magic) == PromptCheckpoint.magic {
            let old = try PromptCheckpoint.read(path: path)
            let h = old.header
            var momentum = ParameterSet()
            if let m = old.momentum { momentum[ParameterName.textContext] = m }
            return ParameterCheckpoint(
                header: Header(config: h.config, classNames: h.classNames, shapes: [ParameterName.textContext: h.contextShape],
                               epochsDone: h.epochsDone, steps: h.steps, rngState: h.rngState, history: h.history,
                               modelDigest: h.modelDigest, dataDigest: h.featuresDigest),
                parameters: ParameterSet([(ParameterName.textContext, old.context)]), momentum: momentum)
        }
        let (tensors, meta) = try Safetensors.read(path: path)
        guard meta["format"] == format, let json = meta["prompttune.header"] else {
            throw PromptError("\(path): not a PromptTune prompt checkpoint (no '\(format)' header in its metadata)")
        }
        if let v = Int(meta["version"] ?? ""), v > version {
            throw PromptError("\(path): format version \(v) is newer than this PromptTune reads (\(version)); upgrade PromptTune")
        }
        let header: Header
        do { header = try JSONDecoder().decode(Header.self, from: Data(json.utf8)) } catch {
            throw PromptError("\(path): corrupt header (\(error))")
        }
        let order = (meta["parameter_order"] ?? "").split(separator: ",").map(String.init)
        var params = ParameterSet(), momentum = ParameterSet()
        for n in order.isEmpty ? header.shapes.keys.sorted() : order {
            guard let t = tensors["param.\(n)"], t.shape == header.shapes[n] else {
                throw PromptError("\(path): parameter '\(n)' is missing or has another shape than its header says")
            }
            params[n] = t
            if let m = tensors["momentum.\(n)"] { momentum[n] = m }
        }
        return ParameterCheckpoint(header: header, parameters: params, momentum: momentum)
    }

    /// The parameters alone (a run's `initial.safetensors`).
    public static func writeParameters(_ p: ParameterSet, to url: URL, metadata: [String: String] = [:]) throws {
        var tensors: [String: Tensor] = [:]
        for n in p.names { tensors[n] = p[n]! }
        var meta = metadata
        meta["parameter_order"] = p.names.joined(separator: ",")
        try Safetensors.write(tensors: tensors, metadata: meta, to: url)
    }

    public static func readParameters(path: String) throws -> ParameterSet {
        let (tensors, meta) = try Safetensors.read(path: path)
        let order = (meta["parameter_order"] ?? "").split(separator: ",").map(String.init)
        return ParameterSet((order.isEmpty ? tensors.keys.sorted() : order).compactMap { n in tensors[n].map { (n, $0) } })
    }
}
