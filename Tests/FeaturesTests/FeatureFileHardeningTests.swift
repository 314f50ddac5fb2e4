import Foundation
import TensorCore
import TensorIO
@testable import Features
import TestSupport
import XCTest

/// Features files a user can hand PromptTune: every damaged or hostile one is a typed error naming
/// the file, never a trap or a silent number (issue 8: K8, K9 and the mutation campaign).
final class FeatureFileHardeningTests: XCTestCase {
    /// A valid file's pieces, written directly so each test can break one of them.
    static func write(features: Tensor = Tensor(shape: [1, 3, 2], data: [1, 0, 0, 1, 1, 1]), labels: [Float] = [0, 1, 1],
                      names: String = "[\"a\",\"b\"]", format: String = FeatureSet.formatName, version: String = "1",
                      to url: URL) throws {
        try Safetensors.write(tensors: ["features": features, "labels": Tensor(shape: [labels.count], data: labels)],
                              metadata: ["format": format, "version": version, "classnames": names], to: url)
    }

    func kind(_ path: String) -> FileError.Kind? {
        do { _ = try FeatureSet.read(path: path); return nil } catch let e as FileError {
            XCTAssertTrue(e.message.hasPrefix(path), "the error names the file: \(e.message)")
            return e.kind
        } catch {
            XCTFail("not a FileError: \(error)")
            return nil
        }
    }

    /// K8: a NaN, infinite, huge, negative or fractional label trapped in `Int(label)`.
    func testEveryBadLabelIsATypedError() throws {
        let dir = try makeTempDir(self)
        for (i, bad) in [Float.nan, .infinity, -.infinity, 1e30, -1, 0.5, 2, Float(Int.max)].enumerated() {
            let url = dir.appendingPathComponent("label\(i).safetensors")
            try Self.write(labels: [0, bad, 1], to: url)
            XCTAssertEqual(kind(url.path), .badLabel, "label \(bad)")
        }
    }

    /// K9: zero views (and zero images or dimensions) made the trainer index out of range.
    func testEmptyDimensionsAreRefused() throws {
        let dir = try makeTempDir(self)
        for (i, shape) in [[0, 3, 2], [1, 0, 2], [1, 3, 0]].enumerated() {
            let url = dir.appendingPathComponent("shape\(i).safetensors")
            try Self.write(features: Tensor(zeros: shape), labels: Array(repeating: 0, count: shape[1]), to: url)
            XCTAssertEqual(kind(url.path), .badShape, "shape \(shape)")
        }
        let noNames = dir.appendingPathComponent("nonames.safetensors")
        try Self.write(labels: [], names: "[]", to: noNames)
        XCTAssertNotNil(kind(noNames.path))
    }

    /// eval and train reported numbers for NaN features; now the file is refused, naming the place.
    func testNonFiniteFeaturesAreRefusedOnReadAndWrite() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("nan.safetensors")
        try Self.write(features: Tensor(shape: [1, 3, 2], data: [1, 0, 0, .nan, 1, 1]), to: url)
        XCTAssertEqual(kind(url.path), .nonFinite)
        XCTAssertThrowsError(try FeatureSet.read(path: url.path)) { XCTAssertTrue("\($0)".contains("view 0, image 1, component 1"), "\($0)") }
        let set = FeatureSet(features: Tensor(shape: [1, 1, 2], data: [.infinity, 0]), labels: [0], classNames: ["a"])
        let out = dir.appendingPathComponent("inf.safetensors")
        XCTAssertThrowsError(try set.write(to: out)) { XCTAssertEqual(($0 as? FileError)?.kind, .nonFinite) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "nothing is written")
    }

    func testVersionsAndFormat() throws {
        let dir = try makeTempDir(self)
        for (i, (v, want)) in [("2", FileError.Kind.newerVersion), ("0", .wrongFormat), ("-3", .wrongFormat), ("x", .wrongFormat)].enumerated() {
            let url = dir.appendingPathComponent("v\(i).safetensors")
            try Self.write(version: v, to: url)
            XCTAssertEqual(kind(url.path), want, "version \(v)")
        }
    }

    /// Files written twice from the same set are byte-identical (sorted JSON everywhere).
    func testWritingIsByteReproducible() throws {
        let dir = try makeTempDir(self)
        let set = FeatureSet(features: Tensor(shape: [1, 2, 2], data: [1, 2, 3, 4]), labels: [1, 0], classNames: ["x/y", "é"],
                             provenance: ["z": "1", "a": "2", "model_config": "{\"b\":1,\"a\":2}"])
        let a = dir.appendingPathComponent("a.safetensors"), b = dir.appendingPathComponent("b.safetensors")
        try set.write(to: a)
        try set.write(to: b)
        XCTAssertEqual(try Data(contentsOf: a), try Data(contentsOf: b))
    }

    /// Every crashing input found so far (Goldens/fuzz/features, listed in its index.json with the
    /// error kind it must give) is now that typed error.
    func testRegressionFixturesAreTypedErrors() throws {
        let dir = repoRoot.appendingPathComponent("Goldens/fuzz/features")
        let index = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("index.json"))) as? [String: Any])
        let fixtures = try XCTUnwrap(index["fixtures"] as? [[String: String]])
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".safetensors") }
        XCTAssertEqual(Set(files), Set(fixtures.compactMap { $0["file"] }), "every file has an index entry")
        for f in fixtures {
            let path = dir.appendingPathComponent(f["file"]!).path
            XCTAssertEqual(kind(path).map { "FileError.\($0.rawValue)" }, f["expect"], f["file"]!)
        }
    }

    /// Seeded mutation campaign: >= 2,000 inputs (PROMPTTUNE_FUZZ_ITERATIONS for a longer run), each
    /// a typed error or a plausible set; a trap would end the test process.
    func testMutatedFeatureFilesNeverTrap() throws {
        let iterations = Int(ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"] ?? "") ?? 2000
        let dir = try makeTempDir(self)
        let seedURL = dir.appendingPathComponent("seed.safetensors")
        var rng = SeededGenerator(seed: 3)
        try FeatureSet(features: .randomNormal([2, 4, 3], using: &rng), labels: [0, 2, 1, 2], classNames: ["cat", "dog", "bird"],
                       provenance: ["model_digest": "abc", "plan": "{\"views\":2}"]).write(to: seedURL)
        let seed = [UInt8](try Data(contentsOf: seedURL))
        var mutator = Mutator(seed: 8)
        var counts: [String: Int] = [:]
        // The reader takes a path: each input is written to a file, in memory (tmpfs) where there is one.
        let shm = URL(fileURLWithPath: "/dev/shm")
        let url = FileManager.default.isWritableFile(atPath: shm.path)
            ? shm.appendingPathComponent("prompttune-fuzz-\(getpid())-\(UUID().uuidString).safetensors") : dir.appendingPathComponent("m.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        let start = Date()
        for i in 0..<iterations {
            let bytes = i % 2 == 0 ? mutator.mutate(seed) : mutateJSONNumbers(seed, &mutator)
            try Data(bytes).write(to: url)
            do {
                let set = try FeatureSet.read(path: url.path)
                XCTAssertTrue(set.labels.allSatisfy { $0 >= 0 && $0 < set.classNames.count } && set.features.data.allSatisfy(\.isFinite)
                              && set.views >= 1 && set.count >= 1, "input \(i): an implausible set was accepted")
                counts["ok", default: 0] += 1
            } catch let e as FileError {
                counts[e.kind.rawValue, default: 0] += 1
                // The reader before issue 8 converted labels with Int(x): these inputs trapped it.
                if e.kind == .badLabel, let labels = try? Safetensors.read(path: url.path).tensors["labels"],
                   labels.data.contains(where: { !$0.isFinite || abs($0) >= 0x1p63 }) {
                    counts["trapped the former reader", default: 0] += 1
                }
            } catch {
                XCTFail("input \(i): untyped error \(error)")
            }
        }
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("fuzz FeatureSet.read: \(iterations) inputs in \(String(format: "%.1f", Date().timeIntervalSince(start))) s: \(summary)")
        XCTAssertEqual(counts.values.reduce(0, +) - counts["trapped the former reader", default: 0], iterations)
    }
}

/// Replaces one number in a file's JSON header (a little-endian UInt64 length at `lengthAt`, the
/// JSON from `headerAt`) by a boundary value, keeping the declared length in step: the structured
/// half of the campaign, which reaches the checks behind a valid header (shapes, offsets, counts).
func mutateJSONNumbers(_ bytes: [UInt8], _ m: inout Mutator, lengthAt: Int = 0, headerAt: Int = 8) -> [UInt8] {
    guard bytes.count >= headerAt else { return m.mutate(bytes) }
    let length = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[lengthAt + $1]) << (8 * UInt64($1)) }
    let headerEnd = headerAt + Int(min(length, UInt64(bytes.count - headerAt)))
    var spans: [Range<Int>] = []
    var i = headerAt
    func numeric(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x2E || b == 0x65 || b == 0x2B }
    while i < headerEnd {
        if (bytes[i] >= 0x30 && bytes[i] <= 0x39) || bytes[i] == 0x2D {
            let s = i
            while i < headerEnd, numeric(bytes[i]) { i += 1 }
            spans.append(s..<i)
        } else { i += 1 }
    }
    guard !spans.isEmpty else { return m.mutate(bytes) }
    let values = ["0", "-1", "1", "4294967295", "9223372036854775807", "18446744073709551615", "1e308", "-0", "65536",
                  "2147483648", "100000000", "3.5"]
    var out = bytes
    let span = spans[m.below(spans.count)]
    out.replaceSubrange(span, with: Array(values[m.below(values.count)].utf8))
    let newLength = length &+ UInt64(bitPattern: Int64(out.count - bytes.count))
    for k in 0..<8 { out[lengthAt + k] = UInt8(truncatingIfNeeded: newLength >> (8 * UInt64(k))) }
    return out
}
