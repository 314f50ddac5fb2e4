import Foundation
import XCTest

/// Goldens/sampling/*, written by reference/sampling_goldens.py.
enum SamplingGoldens {
    /// Repository root: two directories up from this file's folder (Tests/DatasetsTests/..).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let directory = root.appendingPathComponent("Goldens/sampling")
    static let cacheDirectory = directory.appendingPathComponent("coop_cache")

    static func load<T: Decodable>(_ type: T.Type, _ name: String) throws -> T {
        let url = directory.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("\(url.path) missing: run python3 reference/sampling_goldens.py")
        }
        return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
    }

    /// FNV-1a 64 over each value as 8 little-endian bytes, as `fnv` in the script.
    static func fnv(_ xs: [Int]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for x in xs {
            var v = UInt64(bitPattern: Int64(x))
            for _ in 0..<8 {
                h ^= v & 0xff
                h = h &* 0x0000_0100_0000_01b3
                v >>= 8
            }
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// A list as the script stores it: in full, or as its length, digest and (optionally) first items.
enum EncodedList: Decodable, CustomStringConvertible {
    case full([Int])
    case digest(len: Int, head: [Int]?, fnv: String)

    private enum Keys: String, CodingKey { case len, head, fnv }

    init(from decoder: Decoder) throws {
        if let list = try? decoder.singleValueContainer().decode([Int].self) {
            self = .full(list)
            return
        }
        let c = try decoder.container(keyedBy: Keys.self)
        self = .digest(len: try c.decode(Int.self, forKey: .len), head: try c.decodeIfPresent([Int].self, forKey: .head),
                       fnv: try c.decode(String.self, forKey: .fnv))
    }

    func matches(_ xs: [Int]) -> Bool {
        switch self {
        case .full(let list): return list == xs
        case .digest(let len, let head, let fnv):
            return xs.count == len && (head.map { Array(xs.prefix($0.count)) == $0 } ?? true) && SamplingGoldens.fnv(xs) == fnv
        }
    }

    var description: String {
        switch self {
        case .full(let list): return list.count <= 40 ? "\(list)" : "\(list.count) items starting \(Array(list.prefix(20)))"
        case .digest(let len, let head, let fnv): return "\(len) items, fnv \(fnv)" + (head.map { ", starting \($0)" } ?? "")
        }
    }
}

/// Shows what Swift produced next to the golden in a failure message.
func sampledSummary(_ xs: [Int]) -> String {
    xs.count <= 40 ? "\(xs)" : "\(xs.count) items starting \(Array(xs.prefix(20))), fnv \(SamplingGoldens.fnv(xs))"
}

struct RandomGolden: Decodable {
    struct Bits: Decodable { let k: Int; let words: [[UInt32]] }
    struct Below: Decodable { let n: Int; let values: [Int] }
    struct Sample: Decodable { let n: Int; let k: Int; let result: EncodedList }
    struct Choices: Decodable { let n: Int; let k: Int; let result: [Int] }
    struct Seed: Decodable {
        let seed_words: [UInt32]
        let seed: Int?
        let getrandbits32: [UInt32]
        let getrandbits: [Bits]
        let random53: [UInt64]
        let randbelow: [Below]
        let sample: [Sample]
        let shuffle20: [Int]
        let choice7: [Int]
        let choices: [Choices]
        let final32: [UInt32]
    }
    let python: String
    let seeds: [Seed]
}

struct FewShotGolden: Decodable {
    struct Case: Decodable { let seed: Int; let shots: Int; let train: EncodedList; let val: EncodedList }
    struct Dataset: Decodable { let name: String; let train_labels: [Int]; let val_labels: [Int]; let cases: [Case] }
    struct RepeatCase: Decodable { let dataset: String; let seed: Int; let shots: Int; let train: EncodedList; let val: EncodedList }
    let seeds: [Int]
    let shots: [Int]
    let datasets: [Dataset]
    let repeat_cases: [RepeatCase]
}

struct ImbalanceGolden: Decodable {
    struct Counts: Decodable { let K: Int; let tau: Double; let counts: EncodedList }
    struct Kept: Decodable { let tau: Double; let positions: [Int] }
    struct Applied: Decodable { let dataset: String; let seed: Int; let shots: Int; let draw: [Int]; let kept: [Kept] }
    let counts: [Counts]
    let applied: [Applied]
}

struct SubsampleGolden: Decodable {
    struct Case: Decodable {
        let dataset: String; let seed: Int; let shots: Int; let subsample: String
        let train_in: [Int]; let val_in: [Int]; let train: [[Int]]; let val: [[Int]]
    }
    let cases: [Case]
}

struct CacheGolden: Decodable {
    /// [relative path, label, class name]
    struct Item: Decodable {
        let path: String; let label: Int; let className: String
        init(from decoder: Decoder) throws {
            var c = try decoder.unkeyedContainer()
            path = try c.decode(String.self); label = try c.decode(Int.self); className = try c.decode(String.self)
        }
    }
    struct File: Decodable { let file: String; let shots: Int; let seed: Int; let train: [Item]; let val: [Item]? }
    struct Bad: Decodable { let file: String; let mentions: String }
    let image_root: String
    let dataset: String
    let class_names: [String]
    let files: [File]
    let bad: [Bad]
}
