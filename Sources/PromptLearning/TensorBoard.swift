import Foundation
import TensorCore
import TensorIO
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord frames.
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// TensorFlow's masked CRC: rotated right by 15 bits plus a constant, so a CRC of data that
    /// itself holds CRCs stays well distributed.
    public static func masked(_ crc: UInt32) -> UInt32 { ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8 }
}

/// TFRecord framing: uint64 length, masked CRC-32C of the length, the data, masked CRC-32C of the
/// data (all little-endian).
public enum TFRecord {
    public static func frame(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + 16)
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian, Array.init)
        out += length
        withUnsafeBytes(of: CRC32C.masked(CRC32C.checksum(length)).littleEndian) { out += $0 }
        out += data
        withUnsafeBytes(of: CRC32C.masked(CRC32C.checksum(data)).littleEndian) { out += $0 }
        return out
    }

    /// The whole, intact records at the start of `bytes`, and the length they span: a record cut
    /// short (a writer killed mid-write) or failing its checksums ends the list.
    public static func records(_ bytes: [UInt8]) -> (records: [[UInt8]], validLength: Int) {
        func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * $1) } }
        var out: [[UInt8]] = [], at = 0
        while bytes.count - at >= 12 {
            let lengthBytes = Array(bytes[at..<(at + 8)])
            let length = lengthBytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            guard u32(at + 8) == CRC32C.masked(CRC32C.checksum(lengthBytes)),
                  length <= UInt64(bytes.count - at - 16) else { break }
            let n = Int(length)
            let data = Array(bytes[(at + 12)..<(at + 12 + n)])
            guard u32(at + 12 + n) == CRC32C.masked(CRC32C.checksum(data)) else { break }
            out.append(data)
            at += 16 + n
        }
        return (out, at)
    }
}

/// The few fields of TensorFlow's `Event` protobuf that scalar summaries need:
/// Event { wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5,
/// session_log = 7 }, Summary { repeated Value value = 1 }, Value { tag = 1, simple_value = 2 (float) },
/// SessionLog { status = 1 (START = 1) }.
public enum TensorBoardEvent {
    static func varint(_ v: UInt64, into out: inout [UInt8]) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }

    static func bytesField(_ field: UInt64, _ data: [UInt8], into out: inout [UInt8]) {
        varint(field << 3 | 2, into: &out)
        varint(UInt64(data.count), into: &out)
        out += data
    }

    public static func encode(wallTime: Double, step: Int, fileVersion: String? = nil, scalars: [(tag: String, value: Float)] = [],
                              sessionStart: Bool = false) -> [UInt8] {
        var out: [UInt8] = [0x09]
        withUnsafeBytes(of: wallTime.bitPattern.littleEndian) { out += $0 }
        out.append(0x10)
        varint(UInt64(bitPattern: Int64(step)), into: &out)
        if let fileVersion { bytesField(3, Array(fileVersion.utf8), into: &out) }
        if !scalars.isEmpty {
            var summary: [UInt8] = []
            for s in scalars {
                var value: [UInt8] = []
                bytesField(1, Array(s.tag.utf8), into: &value)
                value.append(0x15)
                withUnsafeBytes(of: s.value.bitPattern.littleEndian) { value += $0 }
                bytesField(1, value, into: &summary)
            }
            bytesField(5, summary, into: &out)
        }
        if sessionStart { bytesField(7, [0x08, 0x01], into: &out) }
        return out
    }
}

/// Writes TensorBoard event files: `events.out.tfevents.<unix time>.<hostname>` in `directory`,
/// TFRecord frames of `Event`s, the first holding `file_version` "brain.Event:2". Each event goes
/// out in one `write` on an O_APPEND descriptor, so a killed run leaves every finished event
/// readable. A folder that already holds an event file (a resumed run) is appended to: a record
/// cut short by a kill is cut off first, then a `SessionLog.START` at `resumeStep + 1` tells
/// TensorBoard to drop what the killed run logged after the checkpoint it resumes from.
public final class TensorBoardWriter {
    public let file: URL
    let output: OutputFile
    /// The first failure of a write that could not throw (`log(_:)` from a progress callback).
    public private(set) var deferredError: Error?

    public static let fileVersion = "brain.Event:2"

    public init(directory: URL, resumeStep: Int = 0) throws {
        let fm = FileManager.default
        do { try fm.createDirectory(at: directory, withIntermediateDirectories: true) } catch {
            throw PromptError(.writeFailed, "--tensorboard \(directory.path): cannot create the folder (\(error.localizedDescription)); choose a folder you can write to")
        }
        let existing = ((try? fm.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasPrefix("events.out.tfevents.") && nonRegularFileKind(directory.appendingPathComponent($0).path) == nil }.sorted()
        var appending = false
        if let last = existing.last {
            file = directory.appendingPathComponent(last)
            let bytes = [UInt8]((try? Data(contentsOf: file)) ?? Data())
            let valid = TFRecord.records(bytes).validLength
            if valid < bytes.count { truncate(file.path, off_t(valid)) }
            appending = valid > 0
        } else {
            var host = [CChar](repeating: 0, count: 256)
            gethostname(&host, host.count - 1)
            let name = String(cString: host).replacingOccurrences(of: "/", with: "_")
            file = directory.appendingPathComponent("events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(name.isEmpty ? "localhost" : name)")
        }
        do { output = try OutputFile.appending(to: file) } catch let e as FileError {
            throw PromptError(.writeFailed, "--tensorboard: \(e.message)")
        }
        if appending {
            try write(TensorBoardEvent.encode(wallTime: Date().timeIntervalSince1970, step: resumeStep + 1, sessionStart: true))
        } else {
            try write(TensorBoardEvent.encode(wallTime: Date().timeIntervalSince1970, step: 0, fileVersion: Self.fileVersion))
        }
    }

    func write(_ event: [UInt8]) throws {
        do { try output.write(Data(TFRecord.frame(event))) } catch let e as FileError {
            throw PromptError(.writeFailed, "--tensorboard: while writing \(e.message)")
        }
    }

    /// One event holding `scalars` at `step` (non-finite values are written as they are: TensorBoard shows them).
    public func add(_ scalars: [(tag: String, value: Double)], step: Int) throws {
        guard !scalars.isEmpty else { return }
        try write(TensorBoardEvent.encode(wallTime: Date().timeIntervalSince1970, step: step,
                                          scalars: scalars.map { ($0.tag, Float($0.value)) }))
    }

    /// `add` from a callback that cannot throw: the first error is kept for `rethrowDeferred`.
    public func log(_ scalars: [(tag: String, value: Double)], step: Int) {
        guard deferredError == nil else { return }
        do { try add(scalars, step: step) } catch { deferredError = error }
    }

    public func rethrowDeferred() throws { if let e = deferredError { throw e } }
}

extension TensorBoardWriter {
    /// A training step at its global step: `train/loss`, `train/loss/<term>`, `train/lr`, `train/accuracy`.
    public func logStep(_ r: StepReport) {
        var s: [(tag: String, value: Double)] = [("train/loss", r.value.total), ("train/lr", r.learningRate), ("train/accuracy", r.value.accuracy)]
        for (k, v) in r.value.terms.sorted(by: { $0.key < $1.key }) { s.append(("train/loss/\(k)", v)) }
        log(s, step: r.epoch * r.stepsPerEpoch + r.step)
    }

    /// An epoch's averages at the global step that ends it: `epoch/loss`, `epoch/loss/<term>`,
    /// `epoch/lr`, `epoch/accuracy`.
    public func addEpoch(_ e: EpochRecord, step: Int) throws {
        var s: [(tag: String, value: Double)] = [("epoch/loss", e.loss), ("epoch/lr", e.learningRate), ("epoch/accuracy", e.accuracy)]
        for (k, v) in e.terms.sorted(by: { $0.key < $1.key }) { s.append(("epoch/loss/\(k)", v)) }
        try add(s, step: step)
    }
}
