import Foundation
import TestSupport
import XCTest

/// Goldens/jpeg/index.json, written by reference/jpeg_goldens.py.
struct JPEGFixtureIndex: Decodable {
    struct File: Decodable {
        let file: String
        let bytes: Int
        let shape: [Int]
    }
    struct Fixture: Decodable {
        let name: String
        let what: String
        let file: String
        let width: Int
        let height: Int
        let pil_mode: String
        let progressive: Bool
        let adobe_transform: Int?
        let layers: Int
        let exif_orientation: Int?
        let rgb: File
        let pil_half: String
    }
    struct Photo: Decodable {
        let file: String
        let width: Int
        let height: Int
        let rgb_crc32: UInt32
        let rgb_sum: Int
    }
    struct Crop: Decodable {
        let fixture: String
        let top: Int
        let left: Int
        let height: Int
        let width: Int
        let size: Int
        let flip: Bool
        let vertical_pass_first: Bool?
        let file: String
        let shape: [Int]
    }
    let pillow: String
    let pillow_libjpeg_turbo: String?
    let fixtures: [Fixture]
    let photo: Photo
    let crops: [Crop]
    let train: [Crop]

    func fixture(_ name: String) -> Fixture? { fixtures.first { $0.name == name } }
}

enum JPEGFixtures {
    static let folder = GoldenFolder(directory: repoRoot.appendingPathComponent("Goldens/jpeg"), script: "jpeg_goldens.py")
    static var directory: URL { folder.directory }

    static func path(_ name: String) -> String { folder.path(name) }
    static func index() throws -> JPEGFixtureIndex { try folder.index(JPEGFixtureIndex.self) }
    static func bytes(_ name: String) throws -> [UInt8] { try folder.bytes(name) }
    static func floats(_ name: String) throws -> [Float] { try folder.floats(name) }
}

/// How many values differ and by at most how much.
func byteDifference(_ a: [UInt8], _ b: [UInt8]) -> (count: Int, maxAbs: Int) {
    precondition(a.count == b.count)
    var n = 0, m = 0
    for (x, y) in zip(a, b) where x != y {
        n += 1
        m = max(m, abs(Int(x) - Int(y)))
    }
    return (n, m)
}
