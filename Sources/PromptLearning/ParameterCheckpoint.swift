import Foundation
import TensorCore
import TensorIO

/// A prompt checkpoint of the general trainer: a safetensors file whose tensors are the named
/// parameters (`param.<name>`) and their momentum buffers (`momentum.<name>`), and whose metadata
/// holds the run's header as JSON (`prompttune.header`), so any safetensors reader can open it.
/// The one prompt checkpoint format every method trains into; the `.ptprompt` files of earlier
/// versions (one text context) are still read (`read(path:)` picks by content).
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
    /// The Gaussian prompt aggregate so far (`aggregate.<name>`), for methods with one
    /// (`Method.aggregation`, PromptSRC) after their first epoch; empty otherwise.
    public var aggregate: ParameterSet

    public init(header: Header, parameters: ParameterSet, momentum: ParameterSet, aggregate: ParameterSet = ParameterSet()) {
        self.header = header; self.parameters = parameters; self.momentum = momentum; self.aggregate = aggregate
    }

    public func write(to url: URL) throws {
        var tensors: [String: Tensor] = [:]
        for n in parameters.names { tensors["param.\(n)"] = parameters[n]! }
        for n in momentum.names { tensors["momentum.\(n)"] = momentum[n]! }
        for n in aggregate.names { tensors["aggregate.\(n)"] = aggregate[n]! }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(header), as: UTF8.self)
        try Safetensors.write(tensors: tensors, metadata: ["format": Self.format, "version": String(Self.version),
                                                           "prompttune.header": json,
                                                           "parameter_order": parameters.names.joined(separator: ",")], to: url)
    }

    /// Reads a prompt checkpoint: PromptTune's safetensors file, or a `.ptprompt` written by earlier
    /// versions (its context becomes `text.context`), told apart by content. Every refusal is a
    /// `FileError` naming the file and its kind: the header is checked against itself
    /// (settings the trainer would refuse, the parameters and shapes the method learns, progress
    /// against the epochs, one finite history record per finished epoch, the generator state) and
    /// every tensor against the header (present, its declared shape, finite; momentum only for
    /// learned parameters, of their shapes, finite). Shapes against a model are checked where one is
    /// at hand (`PromptArchitecture`, `restore`).
    public static func read(path: String) throws -> ParameterCheckpoint {
        func fail(_ kind: FileError.Kind, _ why: String) -> FileError {
            FileError(kind, path: path, why)
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw fail(.fileNotFound, "no such prompt checkpoint (training writes one, prompt.safetensors in its output folder)")
        }
        guard !isDirectory.boolValue else {
            throw fail(.unreadable, "is a folder, not a prompt checkpoint (training writes prompt.safetensors inside its output folder)")
        }
        if let kind = nonRegularFileKind(path) {
            throw fail(.unreadable, "is \(kind), not a regular file; give the prompt checkpoint's path")
        }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw fail(.unreadable, "cannot read the file; check its permissions") }
        let magic = (try? handle.read(upToCount: 8)) ?? Data()
        try? handle.close()
        if Array(magic) == PromptCheckpoint.magic { return try legacy(PromptCheckpoint.read(path: path)) }
        let tensors: [String: Tensor], meta: [String: String]
        do { (tensors, meta) = try Safetensors.read(path: path) } catch let e as FileError {
            throw fail(e.kind == .truncated ? .truncated : .wrongFormat,
                       "not a PromptTune prompt checkpoint (\(e.message.hasPrefix(path + ": ") ? String(e.message.dropFirst(path.count + 2)) : e.message))")
        }
        guard meta["format"] == format, let json = meta["prompttune.header"] else {
            throw fail(.wrongFormat, "not a PromptTune prompt checkpoint (no '\(format)' header in its metadata)")
        }
        if let v = Int(meta["version"] ?? ""), v > version {
            throw fail(.newerVersion, "format version \(v) is newer than this PromptTune reads (\(version)); upgrade PromptTune")
        }
        let header: Header
        do { header = try JSONDecoder().decode(Header.self, from: Data(json.utf8)) } catch let e as DecodingError {
            throw fail(.corrupt, "corrupt header (\(describeDecodingError(e))); the file is damaged: train again or restore it from a copy")
        } catch {
            throw fail(.corrupt, "corrupt header (not JSON); the file is damaged: train again or restore it from a copy")
        }
        if let problem = headerProblem(header) {
            throw fail(.inconsistent, "\(problem); the file is damaged or was edited: train again or restore it from a copy")
        }
        let learned = header.config.method.architecture.parameterNames(header.config.method)
        var params = ParameterSet(), momentum = ParameterSet()
        for n in learned {
            guard let t = tensors["param.\(n)"], t.shape == header.shapes[n] else {
                throw fail(.inconsistent, "parameter '\(n)' is missing or has another shape than its header says (\(header.shapes[n] ?? []))")
            }
            if let bad = t.data.firstIndex(where: { !$0.isFinite }) {
                throw fail(.nonFinite, "parameter '\(n)' holds a non-finite value (\(t.data[bad]) at element \(bad)); this prompt cannot be used: train it again")
            }
            params[n] = t
            if let m = tensors["momentum.\(n)"] {
                guard m.shape == t.shape else { throw fail(.inconsistent, "the momentum of '\(n)' has shape \(m.shape), the parameter \(t.shape)") }
                if let bad = m.data.firstIndex(where: { !$0.isFinite }) {
                    throw fail(.nonFinite, "the momentum of '\(n)' holds a non-finite value (\(m.data[bad]) at element \(bad)); it cannot be resumed: train again")
                }
                momentum[n] = m
            }
        }
        // The Gaussian prompt aggregate: every learned tensor's, for a method with one after its
        // first epoch; none otherwise.
        var aggregate = ParameterSet()
        let keepsAggregate = header.config.method.aggregation != nil && header.epochsDone > 0
        if keepsAggregate {
            for n in learned {
                guard let a = tensors["aggregate.\(n)"], a.shape == header.shapes[n] else {
                    throw fail(.inconsistent, "the prompt aggregate of '\(n)' is missing or has another shape than its header says (\(header.shapes[n] ?? [])); method \(header.config.method.name) keeps one after every epoch")
                }
                if let bad = a.data.firstIndex(where: { !$0.isFinite }) {
                    throw fail(.nonFinite, "the prompt aggregate of '\(n)' holds a non-finite value (\(a.data[bad]) at element \(bad)); it cannot be resumed: train again")
                }
                aggregate[n] = a
            }
        }
        let known = Set(learned.flatMap { ["param.\($0)", "momentum.\($0)"] + (keepsAggregate ? ["aggregate.\($0)"] : []) })
        if let extra = tensors.keys.sorted().first(where: { !known.contains($0) }) {
            throw fail(.inconsistent, "it holds tensor '\(extra)', which method \(header.config.method.name) does not learn")
        }
        if !momentum.isEmpty && header.steps == 0 { throw fail(.inconsistent, "it holds momentum before any step") }
        return ParameterCheckpoint(header: header, parameters: params, momentum: momentum, aggregate: aggregate)
    }

    /// A `.ptprompt` of earlier versions as a parameter checkpoint (its reader checked it as strictly).
    static func legacy(_ old: PromptCheckpoint) -> ParameterCheckpoint {
        let h = old.header
        var momentum = ParameterSet()
        if let m = old.momentum { momentum[ParameterName.textContext] = m }
        return ParameterCheckpoint(
            header: Header(config: h.config, classNames: h.classNames, shapes: [ParameterName.textContext: h.contextShape],
                           epochsDone: h.epochsDone, steps: h.steps, rngState: h.rngState, history: h.history,
                           modelDigest: h.modelDigest, dataDigest: h.featuresDigest),
            parameters: ParameterSet([(ParameterName.textContext, old.context)]), momentum: momentum)
    }

    /// What makes a header impossible, or nil: settings the trainer refuses, no class names, other
    /// parameters or shapes than the method learns, progress outside the run's epochs, a history
    /// that is not one finished epoch with finite numbers per epoch done, a generator state that is
    /// not a 64-bit integer.
    static func headerProblem(_ h: Header) -> String? {
        if let problem = h.config.problem { return "its training settings are invalid: \(problem)" }
        guard !h.classNames.isEmpty else { return "it lists no class names" }
        let method = h.config.method
        let learned = method.architecture.parameterNames(method)
        guard Set(h.shapes.keys) == Set(learned) else {
            return "it records parameters \(h.shapes.keys.sorted()) but method \(method.name) learns \(learned.sorted())"
        }
        let expected = method.architecture.expectedShapes(method, classes: h.classNames.count, textWidth: nil, imageWidth: nil)
        for n in learned {
            let shape = h.shapes[n]!, want = expected[n] ?? []
            guard shape.count == want.count, shape.allSatisfy({ $0 >= 1 }),
                  zip(shape, want).allSatisfy({ $1 == nil || $0 == $1! }) else {
                let described = want.map { $0.map(String.init) ?? "width" }.joined(separator: ", ")
                return "parameter '\(n)' has shape \(shape.prefix(8)), but method \(method.name) learns [\(described)]"
            }
        }
        guard h.epochsDone >= 0, h.epochsDone <= h.config.epochs else {
            return "epochs done (\(h.epochsDone)) must lie in 0...\(h.config.epochs) (the run's epochs)"
        }
        guard h.history.count == h.epochsDone else { return "it records \(h.epochsDone) finished epochs but a history of \(h.history.count)" }
        for (i, r) in h.history.enumerated() {
            guard r.epoch == i, r.loss.isFinite, r.accuracy.isFinite, r.learningRate.isFinite, r.terms.values.allSatisfy(\.isFinite) else {
                return "history record \(i) is not a finished epoch with finite numbers"
            }
        }
        guard h.steps >= 0, h.epochsDone > 0 || h.steps == 0 else { return "step count \(h.steps) is impossible after \(h.epochsDone) epochs" }
        guard UInt64(h.rngState) != nil else { return "generator state '\(h.rngState.prefix(40))' is not a 64-bit integer" }
        return nil
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
