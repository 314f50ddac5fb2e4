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

    public init(method: Method, optimizer: OptimizerConfig = OptimizerConfig(), epochs: Int, batchSize: Int = 32,
                seed: UInt64 = 1, template: String = "a photo of a {}.") {
        self.method = method; self.optimizer = optimizer; self.epochs = epochs; self.batchSize = batchSize
        self.seed = seed; self.template = template
    }
}

/// One finished epoch's averages.
public struct EpochRecord: Codable, Equatable, Sendable {
    public var epoch: Int
    public var learningRate: Double
    public var loss: Double
    public var terms: [String: Double]
    public var accuracy: Double
}

/// A prompt checkpoint: PromptTune's own format.
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

    public func write(to url: URL) throws {
        let json = try JSONEncoder().encode(header)
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
        func fail(_ why: String) -> PromptError {
            PromptError("\(path): \(why)")
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw fail("no such prompt checkpoint (training writes one, prompt.ptprompt in its output folder)")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw fail("cannot read the file") }
        let bytes = [UInt8](data)
        guard bytes.count >= 20, Array(bytes[0..<8]) == magic else {
            throw fail("not a PromptTune prompt checkpoint (it does not start with 'PTPROMPT')")
        }
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * $1) } }
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[o + $1]) << (8 * $1) } }
        let version = u32(8)
        guard version <= Self.version else { throw fail("format version \(version) is newer than this PromptTune reads (\(Self.version)); upgrade PromptTune") }
        let headerLength = u64(12)
        guard headerLength < UInt64(bytes.count), 20 + Int(headerLength) <= bytes.count else {
            throw fail("truncated: the header says \(headerLength) bytes but the file has \(bytes.count)")
        }
        let header: Header
        do { header = try JSONDecoder().decode(Header.self, from: Data(bytes[20..<(20 + Int(headerLength))])) } catch {
            throw fail("corrupt header (\(error))")
        }
        let n = header.contextShape.reduce(1, *)
        let need = 20 + Int(headerLength) + 4 * n * (header.hasMomentum ? 2 : 1)
        guard n > 0, bytes.count == need else { throw fail("truncated or padded: expected \(need) bytes for context \(header.contextShape), found \(bytes.count)") }
        func floats(_ offset: Int) -> [Float] {
            bytes.withUnsafeBytes { raw in (0..<n).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: offset + 4 * $0, as: UInt32.self).littleEndian) } }
        }
        let start = 20 + Int(headerLength)
        let context = Tensor(shape: header.contextShape, data: floats(start))
        let momentum = header.hasMomentum ? Tensor(shape: header.contextShape, data: floats(start + 4 * n)) : nil
        return PromptCheckpoint(header: header, context: context, momentum: momentum)
    }
}
