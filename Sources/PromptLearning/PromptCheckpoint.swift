import Foundation
import TensorCore
import TensorIO

/// What a run is: the method, the optimiser, and the data-independent settings.
public struct TrainConfig: Codable, Equatable, Sendable {
    public var method: Method
    public var optimizer: OptimizerConfig
    public var epochs: Int
    public var batchSize: Int
    public var seed: UInt64
    /// Hand template for zero-shot features (KgCoOp, aligned NPT anchors), `{}` = class name.
    public var template: String
    /// fp32, or the references' fp16 approached (`TrainingPrecision`). Written only when not fp32,
    /// so fp32 configs and checkpoints read and write the bytes they always had.
    public var precision: TrainingPrecision = .fp32

    public init(method: Method, optimizer: OptimizerConfig = OptimizerConfig(), epochs: Int, batchSize: Int = 32,
                seed: UInt64 = 1, template: String = "a photo of a {}.", precision: TrainingPrecision = .fp32) {
        self.method = method; self.optimizer = optimizer; self.epochs = epochs; self.batchSize = batchSize
        self.seed = seed; self.template = template; self.precision = precision
    }

    private enum CodingKeys: String, CodingKey { case method, optimizer, epochs, batchSize, seed, template, precision }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        method = try c.decode(Method.self, forKey: .method)
        optimizer = try c.decode(OptimizerConfig.self, forKey: .optimizer)
        epochs = try c.decode(Int.self, forKey: .epochs)
        batchSize = try c.decode(Int.self, forKey: .batchSize)
        seed = try c.decode(UInt64.self, forKey: .seed)
        template = try c.decode(String.self, forKey: .template)
        precision = try c.decodeIfPresent(TrainingPrecision.self, forKey: .precision) ?? .fp32
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(method, forKey: .method)
        try c.encode(optimizer, forKey: .optimizer)
        try c.encode(epochs, forKey: .epochs)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(seed, forKey: .seed)
        try c.encode(template, forKey: .template)
        if precision != .fp32 { try c.encode(precision, forKey: .precision) }
    }
}

/// One finished epoch's averages.
public struct EpochRecord: Codable, Equatable, Sendable {
    public var epoch: Int
    public var learningRate: Double
    public var loss: Double
    public var terms: [String: Double]
    public var accuracy: Double

    public init(epoch: Int, learningRate: Double, loss: Double, terms: [String: Double], accuracy: Double) {
        self.epoch = epoch; self.learningRate = learningRate; self.loss = loss; self.terms = terms; self.accuracy = accuracy
    }
}

/// The prompt checkpoint format of earlier versions (one text context), still read: by
/// `ParameterCheckpoint.read`, which turns it into today's named parameters, so `eval`, `analyze`,
/// `export` and resumes take such files. Nothing writes it any more except tests of the reader.
///
///     "PTPROMPT" | UInt32 version | UInt64 header length | header JSON | float32 context | float32 momentum
///
/// The header holds the run's configuration, the class names, progress (epochs done, steps, the
/// generator's state) and provenance, so `--resume` continues exactly where the run stopped.
public struct PromptCheckpoint: Equatable, Sendable {
    public static let magic = Array("PTPROMPT".utf8)
    public static let version: UInt32 = 1

    public struct Header: Codable, Equatable, Sendable {
        public var config: TrainConfig
        public var classNames: [String]
        public var contextShape: [Int]
        public var hasMomentum: Bool
        public var epochsDone: Int
        public var steps: Int
        public var rngState: String
        public var history: [EpochRecord]
        /// Digests of the checkpoint and features the run used, checked on resume.
        public var modelDigest: String
        public var featuresDigest: String
    }

    public var header: Header
    public var context: Tensor
    public var momentum: Tensor?

    public init(header: Header, context: Tensor, momentum: Tensor?) {
        self.header = header; self.context = context; self.momentum = momentum
    }

    /// Writes the format (tests of the reader and of resuming from it; PromptTune writes safetensors).
    func write(to url: URL) throws {
        // Sorted keys: the same run writes the same bytes (byte-reproducible files, stable digests).
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json: Data
        do { json = try encoder.encode(header) } catch {
            throw FileError(.nonFinite, path: url.path,
                            "the header holds a value JSON cannot store (a NaN or infinite setting or loss); nothing was written")
        }
        var data = Data(Self.magic)
        withUnsafeBytes(of: Self.version.littleEndian) { data.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(json)
        for t in [context] + (momentum.map { [$0] } ?? []) {
            t.data.withUnsafeBufferPointer { data.append(UnsafeBufferPointer(start: UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: UInt8.self), count: $0.count * 4)) }
        }
        try writeAtomically(to: url) { try $0.write(contentsOf: data) }
    }

    public static func read(path: String) throws -> PromptCheckpoint {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FileError(.fileNotFound, path: path, "no such prompt checkpoint (training writes one, prompt.ptprompt in its output folder)")
        }
        guard !isDirectory.boolValue else {
            throw FileError(.unreadable, path: path, "is a folder, not a prompt checkpoint (training writes prompt.ptprompt inside its output folder)")
        }
        if let kind = nonRegularFileKind(path) {
            throw FileError(.unreadable, path: path, "is \(kind), not a regular file; give the prompt checkpoint's path")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FileError(.unreadable, path: path, "cannot read the file; check its permissions")
        }
        return try decode(data, path: path)
    }

    /// Decodes and validates a checkpoint's bytes; `path` names it in errors. Every count is checked
    /// against the file's size before anything is allocated, and the header against itself (context
    /// shape against the method, progress against the epochs, history, generator state), so a
    /// damaged or hand-made file is a `FileError`, never a crash or a silent resume.
    public static func decode(_ data: Data, path: String) throws -> PromptCheckpoint {
        func fail(_ kind: FileError.Kind, _ why: String) -> FileError {
            FileError(kind, path: path, why)
        }
        let bytes = [UInt8](data)
        guard bytes.count >= 20, Array(bytes[0..<8]) == magic else {
            throw fail(.wrongFormat, "not a PromptTune prompt checkpoint (it does not start with 'PTPROMPT', or is shorter than its 20-byte preamble)")
        }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * $1) } }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[o + $1]) << (8 * $1) } }
        let version = u32(8)
        guard version >= 1 else { throw fail(.corrupt, "format version 0 is not a version PromptTune writes; the file is damaged") }
        guard version <= Self.version else { throw fail(.newerVersion, "format version \(version) is newer than this PromptTune reads (\(Self.version)); upgrade PromptTune") }
        let headerLength = u64(12)
        guard headerLength <= UInt64(bytes.count - 20) else {
            throw fail(.truncated, "truncated: the header says \(headerLength) bytes but the file has \(bytes.count)")
        }
        let start = 20 + Int(headerLength)
        let header: Header
        do {
            let decoder = JSONDecoder()
            header = try decoder.decode(Header.self, from: Data(bytes[20..<start]))
        } catch let e as DecodingError {
            throw fail(.corrupt, "corrupt header (\(describeDecodingError(e))); the file is damaged: train again or restore it from a copy")
        } catch {
            throw fail(.corrupt, "corrupt header (not JSON); the file is damaged: train again or restore it from a copy")
        }
        try validate(header, path: path)
        // The context's size, bounded by the bytes that follow the header before anything is allocated.
        let shape = header.contextShape
        var n = 1
        for s in shape {
            let (p, overflow) = n.multipliedReportingOverflow(by: s)
            guard !overflow, p <= bytes.count else {
                throw fail(.truncated, "context shape \(shape) needs more bytes than the file's \(bytes.count)")
            }
            n = p
        }
        let tensors = header.hasMomentum ? 2 : 1
        let need = start + 4 * n * tensors   // no overflow: n <= bytes.count
        guard bytes.count == need else {
            throw fail(.truncated, "truncated or padded: expected \(need) bytes for context \(shape)\(header.hasMomentum ? " and its momentum" : ""), found \(bytes.count)")
        }
        func floats(_ offset: Int) -> [Float] {
            bytes.withUnsafeBytes { raw in (0..<n).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: offset + 4 * $0, as: UInt32.self).littleEndian) } }
        }
        let context = Tensor(shape: shape, data: floats(start))
        if let bad = context.data.firstIndex(where: { !$0.isFinite }) {
            throw fail(.nonFinite, "the context holds a non-finite value (\(context.data[bad]) at element \(bad)); this prompt cannot be used: train it again")
        }
        let momentum = header.hasMomentum ? Tensor(shape: shape, data: floats(start + 4 * n)) : nil
        if let m = momentum, let bad = m.data.firstIndex(where: { !$0.isFinite }) {
            throw fail(.nonFinite, "the momentum buffer holds a non-finite value (\(m.data[bad]) at element \(bad)); it cannot be resumed: train again")
        }
        return PromptCheckpoint(header: header, context: context, momentum: momentum)
    }

    /// The header's internal consistency: settings in range, the context shape the method implies,
    /// progress within the epochs, one history record per finished epoch, a generator state.
    static func validate(_ h: Header, path: String) throws {
        func fail(_ why: String) -> FileError {
            FileError(.inconsistent, path: path, "\(why); the file is damaged or was edited: train again or restore it from a copy")
        }
        if let problem = h.config.problem { throw fail("its training settings are invalid: \(problem)") }
        guard !h.classNames.isEmpty else { throw fail("it lists no class names") }
        let p = h.config.method.prompt
        guard h.contextShape.count == (p.classSpecific ? 3 : 2), h.contextShape.allSatisfy({ $0 >= 1 }) else {
            throw fail("context shape \(h.contextShape.prefix(8)) is not \(p.classSpecific ? "[classes, M, width]" : "[M, width]") for its method")
        }
        let m = h.contextShape[h.contextShape.count - 2]
        guard m == p.contextLength else { throw fail("context shape \(h.contextShape) has \(m) vectors but the method's context length is \(p.contextLength)") }
        if p.classSpecific && h.contextShape[0] != h.classNames.count {
            throw fail("class-specific context shape \(h.contextShape) does not match its \(h.classNames.count) class names")
        }
        guard h.epochsDone >= 0, h.epochsDone <= h.config.epochs else {
            throw fail("epochs done (\(h.epochsDone)) must lie in 0...\(h.config.epochs) (the run's epochs)")
        }
        guard h.history.count == h.epochsDone else {
            throw fail("it records \(h.epochsDone) finished epochs but a history of \(h.history.count)")
        }
        for (i, r) in h.history.enumerated() {
            guard r.epoch == i, r.loss.isFinite, r.accuracy.isFinite, r.learningRate.isFinite, r.terms.values.allSatisfy(\.isFinite) else {
                throw fail("history record \(i) is not a finished epoch with finite numbers")
            }
        }
        guard h.steps >= 0, h.epochsDone > 0 || h.steps == 0 else {
            throw fail("step count \(h.steps) is impossible after \(h.epochsDone) epochs")
        }
        guard UInt64(h.rngState) != nil else { throw fail("generator state '\(h.rngState.prefix(40))' is not a 64-bit integer") }
    }
}

extension TrainConfig {
    /// Why these settings cannot train, or nil. Shared by the trainer and the checkpoint reader so a
    /// file can never carry settings the trainer would refuse (or trap on).
    public var problem: String? {
        let o = optimizer
        if epochs < 1 || epochs > TrainConfig.maxEpochs { return "epochs must lie in 1...\(TrainConfig.maxEpochs) (got \(epochs))" }
        if batchSize < 1 { return "the batch size must be at least 1 (got \(batchSize))" }
        if !(o.learningRate.isFinite && o.learningRate > 0) { return "the learning rate must be positive and finite (got \(o.learningRate))" }
        if !(o.warmupLearningRate.isFinite && o.warmupLearningRate >= 0) { return "the warm-up learning rate must be finite and at least 0 (got \(o.warmupLearningRate))" }
        if o.warmupEpochs < 0 || o.warmupEpochs > TrainConfig.maxEpochs { return "the warm-up epochs must lie in 0...\(TrainConfig.maxEpochs) (got \(o.warmupEpochs))" }
        if !o.momentum.isFinite || !o.weightDecay.isFinite { return "momentum and weight decay must be finite (got \(o.momentum), \(o.weightDecay))" }
        if method.prompt.contextLength < 1 || method.prompt.contextLength > TrainConfig.maxContextLength {
            return "the context length must lie in 1...\(TrainConfig.maxContextLength) (got \(method.prompt.contextLength))"
        }
        for t in method.terms {
            if let p = t.problem { return p }
        }
        return nil
    }

    /// Epochs a run may ask for: far beyond any recipe (Dassl's longest is 200), and small enough
    /// that epochs x steps per epoch never overflows.
    public static let maxEpochs = 1_000_000
    /// A CLIP text context holds 77 tokens: SOS, the context, at least one name token, "." and EOT.
    public static let maxContextLength = 73
}

/// A decoding error in plain words: the field's path and what was wrong, no Swift type dumps.
func describeDecodingError(_ e: DecodingError) -> String {
    func path(_ c: [CodingKey]) -> String {
        let p = c.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        return p.isEmpty ? "the top level" : "field '\(p)'"
    }
    switch e {
    case .keyNotFound(let key, let ctx): return "missing field '\((ctx.codingPath + [key]).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: "."))'"
    case .typeMismatch(_, let ctx): return "\(path(ctx.codingPath)) has the wrong type"
    case .valueNotFound(_, let ctx): return "\(path(ctx.codingPath)) has no value"
    case .dataCorrupted(let ctx): return ctx.codingPath.isEmpty ? "not valid JSON" : "\(path(ctx.codingPath)) holds an invalid value"
    @unknown default: return "invalid JSON"
    }
}
