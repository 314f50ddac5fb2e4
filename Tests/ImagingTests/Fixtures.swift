import Foundation
import TestSupport
import XCTest

/// Goldens/preprocess/index.json, written by reference/preprocess_goldens.py.
struct FixtureIndex: Decodable {
    struct File: Decodable {
        let file: String
        let bytes: Int
        let shape: [Int]
    }
    struct Preprocess: Decodable {
        let file: String
        let bytes: Int
        let resolution: Int
        let shape: [Int]
        let resized_wh: [Int]
        let crop_top_left: [Int]
    }
    struct Fixture: Decodable {
        let name: String
        let what: String
        let file: String
        let width: Int
        let height: Int
        let bit_depth: Int
        let color_type: Int
        let interlaced: Bool
        let pil_mode: String
        let rgb: File
        let pil_rgb: File?
        let preprocess: [Preprocess]
    }
    let pillow: String
    let mean: [Double]
    let std: [Double]
    let fixtures: [Fixture]
}

/// A folder of golden files written by one reference script.
struct GoldenFolder {
    let directory: URL
    let script: String

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    func index<T: Decodable>(_ type: T.Type) throws -> T {
        let url = directory.appendingPathComponent("index.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("\(url.path) missing: run python3 reference/\(script)")
        }
        return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
    }

    func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: directory.appendingPathComponent(name)))
    }

    func floats(_ name: String) throws -> [Float] {
        let raw = try Data(contentsOf: directory.appendingPathComponent(name))
        precondition(raw.count % 4 == 0)
        return raw.withUnsafeBytes { buf in
            (0 ..< raw.count / 4).map { Float(bitPattern: UInt32(littleEndian: buf.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }
}

enum Fixtures {
    static let folder = GoldenFolder(directory: repoRoot.appendingPathComponent("Goldens/preprocess"), script: "preprocess_goldens.py")
    static var directory: URL { folder.directory }

    static func path(_ name: String) -> String { folder.path(name) }
    static func index() throws -> FixtureIndex { try folder.index(FixtureIndex.self) }
    static func bytes(_ name: String) throws -> [UInt8] { try folder.bytes(name) }
    static func floats(_ name: String) throws -> [Float] { try folder.floats(name) }
}

/// CRC-32 as PNG chunks use it (for tests that corrupt chunk payloads but keep their CRCs valid).
func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
    var table = [UInt32](repeating: 0, count: 256)
    for n in 0 ..< 256 {
        var c = UInt32(n)
        for _ in 0 ..< 8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        table[n] = c
    }
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
    return c ^ 0xFFFF_FFFF
}

/// (offset of the chunk's length field, chunk type, data range) for each complete chunk.
func pngChunks(_ png: [UInt8]) -> [(offset: Int, type: String, data: Range<Int>)] {
    var out: [(Int, String, Range<Int>)] = []
    var pos = 8
    while pos + 12 <= png.count {
        let len = Int(png[pos]) << 24 | Int(png[pos + 1]) << 16 | Int(png[pos + 2]) << 8 | Int(png[pos + 3])
        guard pos + 12 + len <= png.count else { break }
        out.append((pos, String(decoding: png[pos + 4 ..< pos + 8], as: UTF8.self), pos + 8 ..< pos + 8 + len))
        pos += 12 + len
    }
    return out
}
