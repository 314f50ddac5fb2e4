import Foundation
import Imaging
import TestSupport
import XCTest

final class PNGDecoderTests: XCTestCase {
    /// Every fixture decodes to exactly Pillow's `Image.open(p).convert("RGB")` (for 16-bit gray:
    /// exactly the high byte by default, and exactly Pillow's clamp with `.clampLikePillow`).
    func testDecodeEqualsPillowForEveryFixture() throws {
        let index = try Fixtures.index()
        XCTAssertGreaterThanOrEqual(index.fixtures.count, 10)
        var kinds = Set<String>()
        for f in index.fixtures {
            let image = try decodePNG(path: Fixtures.path(f.file))
            XCTAssertEqual(image.width, f.width, f.name)
            XCTAssertEqual(image.height, f.height, f.name)
            XCTAssertEqual(f.rgb.shape, [f.height, f.width, 3], f.name)
            let expected = try Fixtures.bytes(f.rgb.file)
            let differing = zip(image.pixels, expected).filter { $0 != $1 }.count
            XCTAssertEqual(image.pixels.count, expected.count, f.name)
            XCTAssertEqual(differing, 0, "\(f.name) (\(f.what)): \(differing) bytes differ from Pillow")
            kinds.insert("ct\(f.color_type)/\(f.bit_depth)\(f.interlaced ? "/i" : "")")

            if let pil = f.pil_rgb {  // 16-bit gray: Pillow clamps, our default keeps the high byte
                XCTAssertEqual(f.pil_mode.prefix(4), "I;16", f.name)
                let clamped = try decodePNG(path: Fixtures.path(f.file), gray16: .clampLikePillow)
                XCTAssertEqual(clamped.pixels, try Fixtures.bytes(pil.file), "\(f.name): .clampLikePillow")
                XCTAssertNotEqual(clamped.pixels, image.pixels, "\(f.name): documented deviation should show")
            }
            // The in-memory entry points agree with the file one.
            let fromData = try decodePNG(data: Data(contentsOf: URL(fileURLWithPath: Fixtures.path(f.file))))
            XCTAssertEqual(fromData, image, f.name)
        }
        // Colour types 0, 2, 3, 4, 6; 1/2/4/8/16 bits; interlaced 8- and 16-bit.
        for needed in ["ct0/1", "ct0/2", "ct0/8", "ct0/16", "ct2/8", "ct2/16", "ct2/8/i", "ct3/8", "ct3/4/i",
                       "ct4/8", "ct4/16", "ct6/8", "ct6/16/i"] {
            XCTAssertTrue(kinds.contains(needed), "no fixture of kind \(needed)")
        }
    }

    /// Transparent pixels keep their colour: alpha is dropped, not composited.
    func testAlphaIsDroppedNotComposited() throws {
        let image = try decodePNG(path: Fixtures.path("rgba8_160x120.png"))
        // The script zeroes alpha in the top-left 40x30 block without touching the colour.
        let nonBlack = (0 ..< 30).flatMap { y in (0 ..< 40).map { x in image[x: x, y: y] } }
            .filter { $0 != (0, 0, 0) }.count
        XCTAssertGreaterThan(nonBlack, 1000)
    }

    // MARK: Errors: each names the file and says what is wrong; nothing crashes.

    func testMissingFile() throws {
        let path = try makeTempDir(self, prefix: "ImagingTests").appendingPathComponent("no-such-image.png").path
        XCTAssertThrowsError(try decodePNG(path: path)) { error in
            let e = error as! PNGDecodingError
            XCTAssertEqual(e.kind, .fileNotFound)
            XCTAssertTrue(e.description.contains(path), e.description)
            XCTAssertTrue(e.description.contains("file not found"), e.description)
            XCTAssertEqual(error.localizedDescription, e.description)
        }
    }

    func testTextFileRenamedPNG() throws {
        let url = try makeTempDir(self, prefix: "ImagingTests").appendingPathComponent("notes.png")
        try Data("hello, this is not an image\n".utf8).write(to: url)
        XCTAssertThrowsError(try decodePNG(path: url.path)) { error in
            let e = error as! PNGDecodingError
            XCTAssertEqual(e.kind, .notPNG)
            XCTAssertTrue(e.description.contains(url.path), e.description)
            XCTAssertTrue(e.description.contains("not a PNG file"), e.description)
        }
    }

    func testTruncatedAtHalf() throws {
        let dir = try makeTempDir(self, prefix: "ImagingTests")
        for name in ["rgb8_500x375.png", "rgb16_64x48.png", "rgba16_interlaced_61x47.png", "palette8_trns_120x90.png"] {
            let bytes = try Fixtures.bytes(name)
            let url = dir.appendingPathComponent("half-" + name)
            try Data(bytes[0 ..< bytes.count / 2]).write(to: url)
            XCTAssertThrowsError(try decodePNG(path: url.path)) { error in
                let e = error as! PNGDecodingError
                XCTAssertEqual(e.kind, .truncated, e.description)
                XCTAssertTrue(e.description.contains(url.path), e.description)
                XCTAssertTrue(e.description.contains("truncated"), e.description)
            }
        }
    }

    func testEmptyFileAndDirectory() throws {
        let dir = try makeTempDir(self, prefix: "ImagingTests")
        let empty = dir.appendingPathComponent("empty.png")
        try Data().write(to: empty)
        XCTAssertThrowsError(try decodePNG(path: empty.path)) { error in
            XCTAssertEqual((error as! PNGDecodingError).kind, .notPNG)
            XCTAssertTrue("\(error)".contains(empty.path))
            XCTAssertTrue("\(error)".contains("empty"))
        }
        XCTAssertThrowsError(try decodePNG(path: dir.path)) { error in
            XCTAssertEqual((error as! PNGDecodingError).kind, .unreadable)
            XCTAssertTrue("\(error)".contains("directory"))
        }
    }

    func testCorruptChunkCRC() throws {
        let png = try Fixtures.bytes("rgb8_100x80.png")
        let idat = pngChunks(png).first { $0.type == "IDAT" }!
        var badCRC = png
        badCRC[idat.data.upperBound + 3] ^= 0x01  // the data is intact, its CRC is not
        XCTAssertThrowsError(try decodePNG(bytes: badCRC, name: "crc.png")) { error in
            let e = error as! PNGDecodingError
            XCTAssertEqual(e.kind, .corrupt, e.description)
            XCTAssertTrue(e.description.contains("crc.png") && e.description.contains("CRC error"), e.description)
        }
        var badData = png
        badData[idat.data.lowerBound + 100] ^= 0x55  // zlib trips over this before the CRC is checked
        XCTAssertThrowsError(try decodePNG(bytes: badData, name: "data.png")) { error in
            let e = error as! PNGDecodingError
            XCTAssertEqual(e.kind, .corrupt, e.description)
            XCTAssertTrue(e.description.contains("data.png") && e.description.contains("libpng: IDAT"), e.description)
        }
    }

    /// Truncation at many points, and corrupted compressed data with valid CRCs (so that zlib, the
    /// filters and the 16-bit second pass see damaged data): each either decodes or throws.
    func testDamagedStreamsThrowOrDecode() throws {
        var rng = SystemRandomNumberGenerator()
        var thrown = 0, decoded = 0
        for name in ["rgb16_64x48.png", "rgba16_interlaced_61x47.png", "la16_50x40.png", "gray16_80x60.png",
                     "interlaced_rgb8_123x77.png", "palette4_interlaced_33x21.png", "gray2_trns_45x33.png"] {
            let png = try Fixtures.bytes(name)
            for cut in stride(from: 0, to: png.count, by: max(1, png.count / 40)) {
                do { _ = try decodePNG(bytes: Array(png[0 ..< cut]), name: name); decoded += 1 } catch { thrown += 1 }
            }
            let idats = pngChunks(png).filter { $0.type == "IDAT" }
            for _ in 0 ..< 40 {
                var bad = png
                let chunk = idats.randomElement(using: &rng)!
                for _ in 0 ..< Int.random(in: 1 ... 4, using: &rng) {
                    bad[Int.random(in: chunk.data, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
                }
                let crc = crc32(bad[chunk.offset + 4 ..< chunk.data.upperBound])
                for i in 0 ..< 4 { bad[chunk.data.upperBound + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * UInt32(i))) }
                do {
                    let image = try decodePNG(bytes: bad, name: name)
                    XCTAssertEqual(image.pixels.count, image.width * image.height * 3)
                    decoded += 1
                } catch let e as PNGDecodingError {
                    XCTAssertTrue(e.description.contains(name), e.description)
                    thrown += 1
                }
            }
        }
        XCTAssertGreaterThan(thrown, 100)
        print("damaged streams: \(thrown) threw, \(decoded) decoded")
    }

    /// gAMA/cHRM are ignored as Pillow ignores them (libpng's simplified API would gamma-correct).
    func testColourChunksIgnored() throws {
        let png = try Fixtures.bytes("rgb8_gamma_64x48.png")
        XCTAssertTrue(pngChunks(png).contains { $0.type == "gAMA" })
        let image = try decodePNG(bytes: png)
        XCTAssertEqual(image.pixels, try Fixtures.bytes("rgb8_gamma_64x48.rgb.bin"))
    }
}
