import CZlib
import Foundation

/// An unsigned-byte IDX array (the MNIST format): `shape` big-endian dimensions, `data` row-major.
public struct IDXArray: Sendable, Equatable {
    public var shape: [Int]
    public var data: [UInt8]

    public init(shape: [Int], data: [UInt8]) {
        precondition(shape.reduce(1, *) == data.count, "IDXArray: shape \(shape) needs \(shape.reduce(1, *)) bytes, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    /// The number of items (the first dimension).
    public var count: Int { shape.first ?? 0 }
    /// Bytes per item (the product of the other dimensions).
    public var itemSize: Int { shape.dropFirst().reduce(1, *) }
}

/// Reads an IDX file, gzip-compressed (recognised by its magic bytes, whatever the name) or raw.
public func readIDX(_ url: URL) throws -> IDXArray {
    try parseIDX(readPossiblyGzipped(url), source: url.path)
}

/// Parses IDX bytes: magic `0 0 <type> <ndim>`, `ndim` big-endian UInt32 sizes, then the data.
/// Only type 0x08 (unsigned byte), the type of every MNIST-family file, is supported.
public func parseIDX(_ bytes: [UInt8], source: String = "<memory>") throws -> IDXArray {
    guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
        throw DatasetError(.malformedFile, "\(source) is not an IDX file (it should start with bytes 00 00 <type> <ndim>)")
    }
    guard bytes[2] == 0x08 else {
        throw DatasetError(.malformedFile, "\(source): IDX element type 0x\(String(bytes[2], radix: 16)) is not supported (only 0x08, unsigned byte)")
    }
    let ndim = Int(bytes[3])
    guard ndim >= 1, bytes.count >= 4 + 4 * ndim else {
        throw DatasetError(.malformedFile, "\(source): IDX header declares \(ndim) dimensions but the file has \(bytes.count) bytes")
    }
    var shape: [Int] = []
    var total = 1
    for d in 0..<ndim {
        let o = 4 + 4 * d
        let size = Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3])
        shape.append(size)
        total *= size
    }
    let start = 4 + 4 * ndim
    guard bytes.count - start == total else {
        throw DatasetError(.malformedFile, "\(source): IDX shape \(shape) needs \(total) data bytes, the file has \(bytes.count - start)\(bytes.count - start < total ? " (truncated: download it again)" : "")")
    }
    return IDXArray(shape: shape, data: Array(bytes[start...]))
}

/// The bytes of `url`, gunzipped with zlib when they start with the gzip magic 1f 8b.
func readPossiblyGzipped(_ url: URL) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw DatasetError(DatasetFiles.isFile(url) ? .unreadable : .missingFile, "\(DatasetFiles.isFile(url) ? "cannot read" : "missing file") \(url.path)")
    }
    let bytes = [UInt8](data)
    guard bytes.count >= 2, bytes[0] == 0x1f, bytes[1] == 0x8b else { return bytes }
    return try gunzip(bytes, source: url.path)
}

/// Inflates gzip data (every member of a multi-member file).
private func gunzip(_ input: [UInt8], source: String) throws -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(input.count * 4)
    var stream = z_stream()
    // 15 + 16: a gzip wrapper, 32 KiB window.
    guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw DatasetError(.unreadable, "\(source): zlib could not start inflating")
    }
    defer { inflateEnd(&stream) }
    let chunk = 1 << 20
    var buffer = [UInt8](repeating: 0, count: chunk)
    try input.withUnsafeBufferPointer { inp in
        stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress!)
        stream.avail_in = uInt(inp.count)
        while true {
            let status: Int32 = buffer.withUnsafeMutableBufferPointer { buf in
                stream.next_out = buf.baseAddress
                stream.avail_out = uInt(chunk)
                return inflate(&stream, Z_NO_FLUSH)
            }
            out.append(contentsOf: buffer[0..<(chunk - Int(stream.avail_out))])
            switch status {
            case Z_STREAM_END:
                // Another gzip member may follow (as `gzip -c a b` writes); trailing zero padding is ignored.
                if stream.avail_in > 0, stream.next_in.pointee == 0x1f {
                    guard inflateReset(&stream) == Z_OK else { throw DatasetError(.unreadable, "\(source): zlib reset failed") }
                    continue
                }
                return
            case Z_OK:
                continue
            case Z_BUF_ERROR where stream.avail_in == 0:
                throw DatasetError(.malformedFile, "\(source): the gzip data end early (truncated: download it again)")
            default:
                let detail = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                throw DatasetError(.malformedFile, "\(source): corrupt gzip data (\(detail))")
            }
        }
    }
    return out
}
