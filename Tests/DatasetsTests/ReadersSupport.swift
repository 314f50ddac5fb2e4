import Foundation
import XCTest
@testable import Datasets

/// A temporary folder for one test, removed at the end.
final class ReadersTempTree {
    let root: URL

    init() throws {
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("prompttune-readers-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    func url(_ rel: String) -> URL { root.appendingPathComponent(rel) }

    /// Writes `bytes` to `rel`, creating folders.
    @discardableResult
    func write(_ rel: String, _ bytes: [UInt8] = []) throws -> URL {
        let u = url(rel)
        try FileManager.default.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: u)
        return u
    }

    @discardableResult
    func write(_ rel: String, text: String) throws -> URL { try write(rel, Array(text.utf8)) }

    func mkdir(_ rel: String) throws {
        try FileManager.default.createDirectory(at: url(rel), withIntermediateDirectories: true)
    }

    /// Empty files at each path (existence is all the readers check).
    func touch(_ rels: [String]) throws { for r in rels { try write(r) } }
}

/// The `DatasetError` `body` throws, or a failure.
func readersError(_ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> DatasetError? {
    do {
        _ = try body()
        XCTFail("expected a DatasetError, got none", file: file, line: line)
    } catch let e as DatasetError {
        return e
    } catch {
        XCTFail("expected a DatasetError, got \(type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}

/// Asserts that `message` contains every one of `parts`.
func assertReadersMessage(_ message: String?, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
    guard let message else { return }
    for p in parts where !message.contains(p) {
        XCTFail("message lacks \"\(p)\":\n\(message)", file: file, line: line)
    }
}

/// Tiny PNG, gzip and IDX writers (stored deflate blocks: no compressor needed).
enum ReadersFixtures {

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return c ^ 0xFFFF_FFFF
    }

    static func bigEndian32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    static func littleEndian32(_ v: UInt32) -> [UInt8] { bigEndian32(v).reversed() }

    /// Raw deflate data of stored (uncompressed) blocks.
    static func storedDeflate(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        repeat {
            let n = min(65535, data.count - i)
            out.append(i + n == data.count ? 1 : 0)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[i..<(i + n)]
            i += n
        } while i < data.count
        return out
    }

    /// A gzip member holding `data` in stored blocks.
    static func gzipStored(_ data: [UInt8]) -> [UInt8] {
        [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3] + storedDeflate(data) + littleEndian32(crc32(data)) + littleEndian32(UInt32(data.count))
    }

    /// An 8-bit RGB PNG of `width` x `height` with `pixels` (HWC).
    static func makePNG(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
        func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
            let t = Array(type.utf8)
            return bigEndian32(UInt32(body.count)) + t + body + bigEndian32(crc32(t + body))
        }
        var raw: [UInt8] = []
        for y in 0..<height { raw.append(0); raw += pixels[(y * width * 3)..<((y + 1) * width * 3)] }
        var a: UInt32 = 1, b: UInt32 = 0
        for v in raw { a = (a + UInt32(v)) % 65521; b = (b + a) % 65521 }
        let zlib = [0x78, 0x01] + storedDeflate(raw) + bigEndian32(b << 16 | a)
        let ihdr = bigEndian32(UInt32(width)) + bigEndian32(UInt32(height)) + [8, 2, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", zlib) + chunk("IEND", [])
    }

    /// An unsigned-byte IDX file.
    static func makeIDX(shape: [Int], data: [UInt8]) -> [UInt8] {
        [0, 0, 0x08, UInt8(shape.count)] + shape.flatMap { bigEndian32(UInt32($0)) } + data
    }
}
