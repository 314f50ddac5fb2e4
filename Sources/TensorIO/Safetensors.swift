import Foundation
import TensorCore

/// One tensor listed in a safetensors header.
public struct SafetensorsEntry: Sendable, Equatable {
    public var name: String
    /// The dtype as the header spells it ("F32", "F16", "BF16", "I64", ...).
    public var dtypeName: String
    /// nil when TensorIO cannot convert the dtype.
    public var dtype: StorageDType?
    public var shape: [Int]
    /// Byte range in the file (absolute, header included).
    public var byteRange: Range<Int>
}

/// A memory-mapped safetensors file. The header is parsed and validated on open (every tensor's
/// byte range is checked against the file size); tensors are converted to Float32 when asked for.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let file: MappedFile
    /// Tensors in file order.
    public let entries: [SafetensorsEntry]
    /// The `__metadata__` map (empty when absent).
    public let metadata: [String: String]
    private let index: [String: Int]

    public var names: [String] { entries.map(\.name) }

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        self.path = path
        guard let headerLength64 = file.load(UInt64.self, at: 0) else {
            throw FileError(.truncated, path: path,
                            "too short to be a safetensors file (\(file.count) bytes; the 8-byte header length alone is missing). \(FileError.redownload)")
        }
        guard headerLength64 <= UInt64(file.count - 8) else {
            let looksLikeHeader = file.load(UInt8.self, at: 8) == UInt8(ascii: "{")
            if looksLikeHeader || headerLength64 < 100_000_000 {
                throw FileError(.truncated, path: path,
                                "truncated safetensors file: the header length \(headerLength64) extends past the end of the file "
                                + "(\(file.count) bytes). \(FileError.redownload)")
            }
            throw FileError(.wrongFormat, path: path,
                            "not a safetensors file (header length \(headerLength64) is larger than the file, \(file.count) bytes).")
        }
        // The safetensors library refuses headers over 100 MB; a larger one is damage, not a model.
        guard headerLength64 <= SafetensorsFile.maxHeaderLength else {
            throw FileError(.corrupt, path: path,
                            "corrupt safetensors file: the header length \(headerLength64) is over the format's limit of "
                            + "\(SafetensorsFile.maxHeaderLength) bytes. \(FileError.redownload)")
        }
        let headerLength = Int(headerLength64)
        let dataStart = 8 + headerLength
        guard let headerBytes = file.bytes(offset: 8, length: headerLength) else {
            throw FileError(.truncated, path: path, "truncated safetensors header. \(FileError.redownload)")
        }
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw FileError(.wrongFormat, path: path, "not a safetensors file (the header does not start with '{').")
        }
        // Foundation's parser recurses per nesting level: refuse deep nesting before it sees it. A
        // safetensors header nests 3 deep (object, tensor object, arrays).
        if let depth = SafetensorsFile.jsonNestingExceeds(SafetensorsFile.maxHeaderNesting, headerBytes) {
            throw FileError(.corrupt, path: path,
                            "corrupt safetensors header: JSON nested \(depth) levels deep (a header nests 3). \(FileError.redownload)")
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(headerBytes), options: [])
        } catch {
            throw FileError(.corrupt, path: path,
                            "corrupt safetensors header: not valid JSON (\(headerLength) bytes; \(error.localizedDescription)). \(FileError.redownload)")
        }
        guard let header = json as? [String: Any] else {
            throw FileError(.corrupt, path: path, "corrupt safetensors header: the JSON is not an object.")
        }
        var metadata: [String: String] = [:]
        var entries: [SafetensorsEntry] = []
        for name in header.keys.sorted() {  // sorted: the same file reports the same first problem
            guard let value = header[name] else { continue }
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw FileError(.corrupt, path: path, "corrupt safetensors header: __metadata__ is not an object.")
                }
                for (k, v) in m { metadata[k] = (v as? String) ?? "\(v)" }
                continue
            }
            func bad(_ what: String) -> FileError {
                FileError(.corrupt, path: path, "corrupt safetensors header: tensor '\(name)' \(what). \(FileError.redownload)")
            }
            guard let info = value as? [String: Any] else { throw bad("is not an object") }
            guard let dtypeName = info["dtype"] as? String else { throw bad("has no dtype") }
            guard let shapeAny = info["shape"] as? [Any], let shape = SafetensorsFile.ints(shapeAny), shape.allSatisfy({ $0 >= 0 }) else {
                throw bad("has no valid shape")
            }
            guard let offsetsAny = info["data_offsets"] as? [Any], let offsets = SafetensorsFile.ints(offsetsAny), offsets.count == 2,
                  offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw bad("has no valid data_offsets")
            }
            let dtype = StorageDType(safetensorsName: dtypeName)
            if let dtype {
                guard let count = checkedElementCount(shape), case let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize),
                      !overflow, bytes == offsets[1] - offsets[0] else {
                    throw bad("has shape \(shape) of \(dtypeName) but data_offsets \(offsets) (\(offsets[1] - offsets[0]) bytes)")
                }
            }
            guard offsets[1] <= Int.max - dataStart else { throw bad("has data_offsets \(offsets) out of range") }
            entries.append(SafetensorsEntry(name: name, dtypeName: dtypeName, dtype: dtype, shape: shape,
                                            byteRange: (dataStart + offsets[0]) ..< (dataStart + offsets[1])))
        }
        entries.sort { ($0.byteRange.lowerBound, $0.name) < ($1.byteRange.lowerBound, $1.name) }
        // In file order, so that a truncated file reports its first incomplete tensor.
        for e in entries where e.byteRange.upperBound > file.count {
            throw FileError(.truncated, path: path,
                            "truncated safetensors file: tensor '\(e.name)' extends past the end of the file (its data needs bytes "
                            + "\(e.byteRange.lowerBound)..<\(e.byteRange.upperBound), the file has \(file.count)). \(FileError.redownload)")
        }
        var index: [String: Int] = [:]
        for (i, e) in entries.enumerated() { index[e.name] = i }
        self.entries = entries
        self.metadata = metadata
        self.index = index
    }

    static let maxHeaderNesting = 64

    /// The nesting depth of `[`/`{` outside strings once it passes `limit`; nil if it never does.
    static func jsonNestingExceeds(_ limit: Int, _ bytes: [UInt8]) -> Int? {
        var depth = 0, inString = false, escaped = false
        for b in bytes {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > limit { return depth }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return nil
    }

    /// The safetensors format's own limit on the JSON header (100 MB).
    public static let maxHeaderLength: UInt64 = 100_000_000

    private static func ints(_ values: [Any]) -> [Int]? {
        var out: [Int] = []
        for v in values {
            if let n = v as? NSNumber {
                let d = n.doubleValue
                guard d == d.rounded(), abs(d) < 9.0e15 else { return nil }
                out.append(n.intValue)
            } else if let i = v as? Int {
                out.append(i)
            } else {
                return nil
            }
        }
        return out
    }

    public func entry(named name: String) -> SafetensorsEntry? { index[name].map { entries[$0] } }

    /// One tensor converted to Float32.
    public func tensor(named name: String) throws -> Tensor {
        guard let entry = entry(named: name) else {
            throw FileError(.missingEntry, path: path, "no tensor named '\(name)' in the file.")
        }
        return try tensor(entry)
    }

    public func tensor(_ entry: SafetensorsEntry) throws -> Tensor {
        guard let dtype = entry.dtype else {
            throw FileError(.unsupported, path: path,
                            "tensor '\(entry.name)' has dtype \(entry.dtypeName), which is not supported "
                            + "(supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL). Convert it to F32 first.")
        }
        guard let slice = FileSlice(file: file, offset: entry.byteRange.lowerBound, count: entry.byteRange.count) else {
            throw FileError(.truncated, path: path, "tensor '\(entry.name)' extends past the end of the file. \(FileError.redownload)")
        }
        guard let count = checkedElementCount(entry.shape), case let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize),
              !overflow, bytes == slice.count else {
            throw FileError(.corrupt, path: path,
                            "tensor '\(entry.name)' has shape \(entry.shape) of \(entry.dtypeName) but \(slice.count) bytes. \(FileError.redownload)")
        }
        let values = slice.withUnsafeBytes { ElementDecoder.decode($0, dtype: dtype, count: count) }
        return Tensor(shape: entry.shape, data: values)
    }

    /// Every tensor converted to Float32.
    public func loadAll() throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for e in entries { out[e.name] = try tensor(e) }
        return out
    }
}

/// Reading and writing safetensors files.
public enum Safetensors {
    /// All tensors and the metadata of a safetensors file.
    public static func read(path: String) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        let f = try SafetensorsFile(path: path)
        return (try f.loadAll(), f.metadata)
    }

    /// Writes `tensors` (sorted by name) as `dtype` (F32, F16, BF16 or F64) with `metadata`,
    /// atomically: to a temporary file in the same folder, then renamed over `url`.
    public static func write(tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL,
                             dtype: StorageDType = .float32) throws {
        let path = url.path
        guard [.float32, .float16, .bfloat16, .float64].contains(dtype) else {
            throw FileError(.unsupported, path: path, "cannot write dtype \(dtype.rawValue); use F32, F16, BF16 or F64.")
        }
        let names = tensors.keys.sorted()
        var header = "{"
        var first = true
        func add(_ s: String) { if !first { header += "," }; first = false; header += s }
        if !metadata.isEmpty {
            let items = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0] ?? ""))" }
            add("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        var offset = 0
        for name in names {
            guard let t = tensors[name] else { continue }
            let bytes = t.count * dtype.byteSize
            add("\(jsonString(name)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],"
                + "\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        header += "}"
        var headerData = Data(header.utf8)
        while (8 + headerData.count) % 8 != 0 { headerData.append(UInt8(ascii: " ")) }

        try writeAtomically(to: url) { handle in
            var length = UInt64(headerData.count).littleEndian
            try handle.write(contentsOf: Data(bytes: &length, count: 8))
            try handle.write(contentsOf: headerData)
            for name in names {
                guard let t = tensors[name], let encoded = ElementDecoder.encode(t.data, as: dtype) else { continue }
                try handle.write(contentsOf: encoded)
            }
        }
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
