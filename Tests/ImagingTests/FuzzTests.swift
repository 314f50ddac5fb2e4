import Foundation
import Imaging
import TestSupport
import XCTest

/// Seeded mutation tests of the decoders (issue 8): every mutated input gives a typed error or a
/// plausible image, never a trap. `PROMPTTUNE_FUZZ_ITERATIONS` sets the inputs per decoder (2,000 in
/// CI; docs/HARDENING.md records a longer run). A failure prints the seed and input index, which
/// rebuild the input exactly; keep such an input under Goldens/fuzz/images with an index entry.
final class ImagingFuzzTests: XCTestCase {
    static let iterations = Int(ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"] ?? "") ?? 2000
    /// Keeps one garbage input's decode short; the default limit is tested by the regression fixtures.
    static let limits = ImageLimits(maxPixels: 1 << 22)

    func testJPEGMutations() throws {
        let dir = repoRoot.appendingPathComponent("Goldens/jpeg")
        let seeds = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".jpg") }.sorted()
            .map { [UInt8](try Data(contentsOf: dir.appendingPathComponent($0))) }
        try fuzz("jpeg", seeds: seeds, seed: 0x4A50_4547)
    }

    func testPNGMutations() throws {
        let dir = repoRoot.appendingPathComponent("Goldens/preprocess")
        // The small fixtures (every colour type, depth and interlacing), not the 500x375 photo.
        let seeds = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".png") }.sorted()
            .map { [UInt8](try Data(contentsOf: dir.appendingPathComponent($0))) }.filter { $0.count < 30_000 }
        try fuzz("png", seeds: seeds, seed: 0x504E_47, repair: { i, bytes in i % 2 == 1 ? Self.repairedCRCs(bytes) : bytes })
    }

    /// `bytes` with every whole chunk's CRC recomputed, so that a mutation inside a chunk reaches
    /// libpng's decoding instead of stopping at its CRC check (half of the PNG inputs).
    static func repairedCRCs(_ bytes: [UInt8]) -> [UInt8] {
        var b = bytes
        var pos = 8
        while pos + 12 <= b.count {
            let length = Int(b[pos]) << 24 | Int(b[pos + 1]) << 16 | Int(b[pos + 2]) << 8 | Int(b[pos + 3])
            guard length <= b.count - pos - 12 else { break }
            let crc = FileFixtures.bigEndian32(FileFixtures.crc32(Array(b[(pos + 4)..<(pos + 8 + length)])))
            b.replaceSubrange((pos + 8 + length)..<(pos + 12 + length), with: crc)
            pos += 12 + length
        }
        return b
    }

    /// Decodes `iterations` mutations of `seeds` (round robin) and checks each outcome.
    func fuzz(_ name: String, seeds: [[UInt8]], seed: UInt64, repair: (Int, [UInt8]) -> [UInt8] = { $1 }) throws {
        XCTAssertFalse(seeds.isEmpty)
        var mutator = Mutator(seed: seed)
        var errors = 0, decoded = 0, slowest = 0.0
        let start = Date()
        for i in 0..<Self.iterations {
            let input = repair(i, mutator.mutate(seeds[i % seeds.count]))
            let t0 = Date()
            do {
                let image = try decodeImage(bytes: input, name: "\(name)-\(seed)-\(i)", limits: Self.limits)
                XCTAssertTrue(image.width > 0 && image.height > 0 && image.width * image.height <= Self.limits.maxPixels
                              && image.pixels.count == image.width * image.height * 3,
                              "\(name) input \(i): implausible \(image.width)x\(image.height), \(image.pixels.count) bytes")
                decoded += 1
            } catch is JPEGDecodingError, is PNGDecodingError, is ImageFileError, is ImageTooLargeError {
                errors += 1
            } catch {
                XCTFail("\(name) input \(i) (seed \(seed)): untyped error \(type(of: error)): \(error)")
            }
            slowest = max(slowest, Date().timeIntervalSince(t0))
        }
        print(String(format: "fuzz %@: %d inputs, %d typed errors, %d decoded, 0 crashes, slowest %.1f ms, total %.2f s",
                     name, Self.iterations, errors, decoded, slowest * 1000, Date().timeIntervalSince(start)))
        XCTAssertLessThan(slowest, 2, "\(name): an input took \(slowest) s (a hang?)")
    }

    /// Every file of Goldens/fuzz/images gives the error its index names.
    func testRegressionFixtures() throws {
        struct Index: Decodable {
            struct Fixture: Decodable { let file: String; let expect: String; let width: Int?; let height: Int? }
            let fixtures: [Fixture]
        }
        let dir = repoRoot.appendingPathComponent("Goldens/fuzz/images")
        let index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: dir.appendingPathComponent("index.json")))
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)).subtracting(["index.json"])
        XCTAssertEqual(files, Set(index.fixtures.map(\.file)), "every fixture needs an index entry")
        for f in index.fixtures {
            let path = dir.appendingPathComponent(f.file).path
            XCTAssertThrowsError(try decodeImage(path: path, limits: ImageLimits()), f.file) { error in
                switch f.expect {
                case "ImageTooLargeError":
                    guard let e = error as? ImageTooLargeError else { return XCTFail("\(f.file): \(error)") }
                    XCTAssertEqual([e.width, e.height], [f.width, f.height])
                    XCTAssertEqual(e.maxPixels, ImageLimits.defaultMaxPixels)
                    XCTAssertEqual(e.source, path)
                    XCTAssertTrue(e.description.contains("13000x13000") && e.description.contains(ImageLimits.environmentVariable),
                                  e.description)
                default:
                    XCTAssertEqual("\(type(of: error))", f.expect, f.file)
                }
            }
        }
    }

    /// A limit the user raises lets a large image through; the check uses the header alone.
    func testLimitIsCheckedFromTheHeaderAndCanBeRaised() throws {
        let png = FileFixtures.makePNG(width: 40, height: 30, pixels: [UInt8](repeating: 7, count: 40 * 30 * 3))
        XCTAssertThrowsError(try decodeImage(bytes: png, name: "a.png", limits: ImageLimits(maxPixels: 1199))) { error in
            XCTAssertEqual(error as? ImageTooLargeError,
                           ImageTooLargeError(source: "a.png", format: .png, width: 40, height: 30, maxPixels: 1199))
        }
        XCTAssertEqual(try decodeImage(bytes: png, limits: ImageLimits(maxPixels: 1200)).width, 40)
        let jpeg = [UInt8](try Data(contentsOf: repoRoot.appendingPathComponent("Goldens/jpeg/baseline420_96x64.jpg")))
        XCTAssertThrowsError(try decodeImage(bytes: jpeg, limits: ImageLimits(maxPixels: 96 * 64 - 1))) { error in
            XCTAssertEqual((error as? ImageTooLargeError)?.format, .jpeg)
        }
        XCTAssertEqual(try decodeImage(bytes: jpeg, limits: ImageLimits(maxPixels: 96 * 64)).height, 64)
    }

    func testLimitFromTheEnvironment() throws {
        let v = ImageLimits.environmentVariable
        XCTAssertNil(try ImageLimits.fromEnvironment([:]))
        XCTAssertEqual(try ImageLimits.fromEnvironment([v: "200_000_000"])?.maxPixels, 200_000_000)
        XCTAssertEqual(try ImageLimits.fromEnvironment([v: " 1000 "])?.maxPixels, 1000)
        for bad in ["", "0", "-5", "1e9", "lots"] {
            XCTAssertThrowsError(try ImageLimits.fromEnvironment([v: bad]), bad) { error in
                XCTAssertEqual(error as? ImageLimitsError, ImageLimitsError(variable: v, value: bad))
            }
        }
        let saved = ImageLimits.current
        defer { ImageLimits.current = saved }
        ImageLimits.current = ImageLimits(maxPixels: 10)
        let png = FileFixtures.makePNG(width: 4, height: 3, pixels: [UInt8](repeating: 0, count: 36))
        XCTAssertThrowsError(try decodeImage(bytes: png)) { XCTAssertTrue($0 is ImageTooLargeError) }
    }
}
