import Foundation
import Imaging
import TensorCore
import TestSupport
import XCTest

final class JPEGDecoderTests: XCTestCase {
    /// Every fixture decodes to Pillow's `Image.open(p).convert("RGB")`. Tolerance: 0 differing
    /// values (system libjpeg-turbo 2.1.5 here, Pillow's bundled 3.x for the goldens).
    func testDecodeEqualsPillowForEveryFixture() throws {
        let index = try JPEGFixtures.index()
        XCTAssertGreaterThanOrEqual(index.fixtures.count, 12)
        var compared = 0, differing = 0
        var kinds = Set<String>()
        for f in index.fixtures {
            let image = try decodeJPEG(path: JPEGFixtures.path(f.file))
            XCTAssertEqual(image.width, f.width, f.name)
            XCTAssertEqual(image.height, f.height, f.name)
            XCTAssertEqual(f.rgb.shape, [f.height, f.width, 3], f.name)
            let expected = try JPEGFixtures.bytes(f.rgb.file)
            XCTAssertEqual(image.pixels.count, expected.count, f.name)
            let d = byteDifference(image.pixels, expected)
            compared += expected.count
            differing += d.count
            XCTAssertEqual(d.count, 0, "\(f.name) (\(f.what)): \(d.count) of \(expected.count) values differ from Pillow, max |diff| \(d.maxAbs)")
            // The in-memory entry points agree with the file one.
            let bytes = try JPEGFixtures.bytes(f.file)
            XCTAssertEqual(try decodeJPEG(bytes: bytes, name: f.name), image, f.name)
            XCTAssertEqual(try decodeJPEG(data: Data(bytes)), image, f.name)
            XCTAssertEqual(try decodeImage(path: JPEGFixtures.path(f.file)), image, f.name)

            let header = try JPEGDecoder.header(path: JPEGFixtures.path(f.file))
            XCTAssertEqual(header.components, f.layers, f.name)
            XCTAssertEqual(header.progressive, f.progressive, f.name)
            XCTAssertEqual(header.adobeTransform, f.adobe_transform, f.name)
            if f.progressive { kinds.insert("progressive") }
            if f.layers == 1 { kinds.insert("gray") }
            if header.colorSpace == .cmyk { kinds.insert(f.adobe_transform == nil ? "cmyk-no-adobe" : "cmyk-adobe") }
            if header.colorSpace == .ycck { kinds.insert("ycck") }
            if header.colorSpace == .rgb { kinds.insert("stored-rgb") }
            if header.restartInterval > 0 { kinds.insert("restart") }
            if f.width % 16 != 0 && f.height % 16 != 0 { kinds.insert("odd") }
        }
        print("JPEG vs Pillow \(index.pillow) (libjpeg-turbo \(index.pillow_libjpeg_turbo ?? "?")): "
              + "\(index.fixtures.count) fixtures, \(compared) values, \(differing) differ")
        for needed in ["progressive", "gray", "cmyk-adobe", "cmyk-no-adobe", "ycck", "stored-rgb", "restart", "odd"] {
            XCTAssertTrue(kinds.contains(needed), "no fixture of kind \(needed)")
        }
    }

    func testLargerPhotoMatchesPillowChecksum() throws {
        let index = try JPEGFixtures.index()
        let image = try decodeJPEG(path: JPEGFixtures.path(index.photo.file))
        XCTAssertEqual(image.width, index.photo.width)
        XCTAssertEqual(image.height, index.photo.height)
        XCTAssertEqual(image.pixels.reduce(0) { $0 + Int($1) }, index.photo.rgb_sum)
        XCTAssertEqual(crc32(image.pixels[...]), index.photo.rgb_crc32)
        // The in-memory and format-sniffing entry points give the same pixels.
        XCTAssertEqual(try decodeJPEG(bytes: JPEGFixtures.bytes(index.photo.file)), image)
        XCTAssertEqual(try decodeImage(path: JPEGFixtures.path(index.photo.file)), image)
    }

    /// Pillow reads every 4-component JPEG as inverted ("Adobe") CMYK whether or not the APP14
    /// marker is there; so do we. Black (K = 255) and white corners land where they should.
    func testCMYKPolarityDoesNotDependOnTheAdobeMarker() throws {
        let adobe = try decodeJPEG(path: JPEGFixtures.path("cmyk_adobe_48x40.jpg"))
        let bare = try decodeJPEG(path: JPEGFixtures.path("cmyk_no_adobe_48x40.jpg"))
        XCTAssertEqual(adobe, bare)
        XCTAssertEqual(try JPEGDecoder.header(path: JPEGFixtures.path("cmyk_adobe_48x40.jpg")).adobeTransform, 0)
        XCTAssertNil(try JPEGDecoder.header(path: JPEGFixtures.path("cmyk_no_adobe_48x40.jpg")).adobeTransform)
        let black = adobe[x: 3, y: 3], white = adobe[x: 44, y: 36]
        XCTAssertLessThanOrEqual(max(black.r, black.g, black.b), 4, "\(black)")
        XCTAssertGreaterThanOrEqual(min(white.r, white.g, white.b), 251, "\(white)")
        let ycck = try JPEGDecoder.header(path: JPEGFixtures.path("ycck_48x40.jpg"))
        XCTAssertEqual(ycck.colorSpace, .ycck)
        XCTAssertEqual(ycck.adobeTransform, 2)
    }

    func testProgressiveAndRestartHeaders() throws {
        let p = try JPEGDecoder.header(path: JPEGFixtures.path("progressive420_96x72.jpg"))
        XCTAssertTrue(p.progressive)
        XCTAssertEqual(p.colorSpace, .yCbCr)
        XCTAssertTrue(p.jfif)
        let r = try JPEGDecoder.header(path: JPEGFixtures.path("restart_64x48.jpg"))
        XCTAssertFalse(r.progressive)
        XCTAssertEqual(r.restartInterval, 3)
        XCTAssertEqual(try JPEGDecoder.header(path: JPEGFixtures.path("keep_rgb_40x30.jpg")).colorSpace, .rgb)
        XCTAssertEqual(try JPEGDecoder.header(path: JPEGFixtures.path("gray_64x48.jpg")).colorSpace, .grayscale)
    }

    /// EXIF orientation 6 ("rotate 90 to display") is left alone, as by Pillow's `Image.open`.
    func testEXIFOrientationIsNotApplied() throws {
        let index = try JPEGFixtures.index()
        let f = try XCTUnwrap(index.fixture("exif_orient6_40x24"))
        XCTAssertEqual(f.exif_orientation, 6)
        let image = try decodeJPEG(path: JPEGFixtures.path(f.file))
        XCTAssertEqual([image.width, image.height], [40, 24])
    }

    func testConcurrentDecodesAgree() throws {
        let index = try JPEGFixtures.index()
        let names = index.fixtures.map(\.file)
        let expected = try names.map { try decodeJPEG(path: JPEGFixtures.path($0)) }
        let results = UnsafeMutableBufferPointer<RGBImage?>.allocate(capacity: names.count * 4)
        results.initialize(repeating: nil)
        defer { results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: names.count * 4) { k in
            results[k] = try? decodeJPEG(path: JPEGFixtures.path(names[k % names.count]))
        }
        for k in 0 ..< names.count * 4 { XCTAssertEqual(results[k], expected[k % names.count], names[k % names.count]) }
    }

    // MARK: Errors: each names the file and says what is wrong; nothing crashes.

    func testMissingFile() throws {
        let path = try makeTempDir(self, prefix: "ImagingTests").appendingPathComponent("no-such-image.jpg").path
        XCTAssertThrowsError(try decodeJPEG(path: path)) { error in
            let e = error as! JPEGDecodingError
            XCTAssertEqual(e.kind, .fileNotFound)
            XCTAssertTrue(e.description.contains(path), e.description)
            XCTAssertTrue(e.description.contains("file not found"), e.description)
            XCTAssertEqual(error.localizedDescription, e.description)
        }
        XCTAssertThrowsError(try decodeImage(path: path)) { error in
            let e = error as! ImageFileError
            XCTAssertEqual(e.kind, .fileNotFound)
            XCTAssertTrue(e.description.contains(path), e.description)
        }
    }

    func testDirectory() throws {
        let dir = try makeTempDir(self, prefix: "ImagingTests").path
        XCTAssertThrowsError(try decodeJPEG(path: dir)) { error in
            XCTAssertEqual((error as! JPEGDecodingError).kind, .unreadable)
        }
        XCTAssertThrowsError(try decodeImage(path: dir)) { error in
            XCTAssertEqual((error as! ImageFileError).kind, .unreadable)
        }
    }

    /// Every fixture cut at half: Pillow raises "image file is truncated" (or "Truncated File Read"
    /// when the cut falls in the headers); we throw `.truncated` naming the file instead of libjpeg's
    /// gray padding. Also cut just before EOI and after the SOI marker.
    func testTruncatedFiles() throws {
        let index = try JPEGFixtures.index()
        let dir = try makeTempDir(self, prefix: "ImagingTests")
        for f in index.fixtures {
            XCTAssertTrue(f.pil_half.hasPrefix("OSError"), "\(f.name): Pillow gave \(f.pil_half)")
            let bytes = try JPEGFixtures.bytes(f.file)
            for (label, cut) in [("half", bytes.count / 2), ("noEOI", bytes.count - 2), ("soi", 2), ("one", 1)] {
                let url = dir.appendingPathComponent("\(label)-\(f.file)")
                try Data(bytes[0 ..< cut]).write(to: url)
                XCTAssertThrowsError(try decodeJPEG(path: url.path), "\(label) \(f.name)") { error in
                    let e = error as! JPEGDecodingError
                    XCTAssertEqual(e.kind, .truncated, "\(label) \(f.name): \(e)")
                    XCTAssertTrue(e.description.contains(url.path), e.description)
                    XCTAssertTrue(e.description.contains("truncated"), e.description)
                }
                XCTAssertThrowsError(try decodeImage(path: url.path), "\(label) \(f.name)")
            }
        }
        // The message for the common case.
        let url = dir.appendingPathComponent("half-baseline420_96x64.jpg")
        XCTAssertThrowsError(try decodeImage(path: url.path)) { error in
            XCTAssertEqual("\(error)", "cannot decode JPEG '\(url.path)': truncated JPEG data (image file is truncated) "
                + "(libjpeg: Premature end of JPEG file)")
        }
    }

    func testGarbageAndTextFiles() throws {
        let dir = try makeTempDir(self, prefix: "ImagingTests")
        var rng = SystemRandomNumberGenerator()
        let garbage = (0 ..< 4096).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
        let cases: [(String, [UInt8])] = [
            ("garbage.jpg", [0x12] + garbage),
            ("notes.jpg", Array("hello, this is not an image\n".utf8)),
            ("empty.jpg", []),
            ("soi-then-garbage.jpg", [0xFF, 0xD8] + garbage.map { $0 == 0xFF ? 0 : $0 }),
            ("soi-app0-garbage.jpg", [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10] + garbage),
        ]
        for (name, bytes) in cases {
            let url = dir.appendingPathComponent(name)
            try Data(bytes).write(to: url)
            XCTAssertThrowsError(try decodeJPEG(path: url.path), name) { error in
                let e = error as! JPEGDecodingError
                XCTAssertTrue(e.description.contains(url.path), e.description)
                if name.hasPrefix("soi") {
                    XCTAssertTrue([.corrupt, .truncated, .unsupported].contains(e.kind), e.description)
                } else {
                    XCTAssertEqual(e.kind, .notJPEG, e.description)
                }
            }
            XCTAssertThrowsError(try decodeImage(path: url.path), name) { error in
                XCTAssertTrue("\(error)".contains(url.path), "\(error)")
                if !name.hasPrefix("soi") { XCTAssertTrue(error is ImageFileError, "\(error)") }
            }
        }
        // Random bytes written over the entropy-coded data of every fixture: libjpeg either recovers
        // (a warning, which Pillow ignores too) or fails; either way no crash, and a decoded image has
        // the header's size. (A C harness under ASan/UBSan ran 51,000 such mutations without a report.)
        for f in try JPEGFixtures.index().fixtures {
            let good = try JPEGFixtures.bytes(f.file)
            let sos = try XCTUnwrap((0 ..< good.count - 1).first { good[$0] == 0xFF && good[$0 + 1] == 0xDA }, f.name)
            for seed in 0 ..< 10 {
                var r = SeededGenerator(seed: UInt64(seed))
                var bad = good
                for _ in 0 ..< 6 {
                    bad[sos + 16 + Int(r.next() % UInt64(good.count - sos - 20))] = UInt8(truncatingIfNeeded: r.next())
                }
                do {
                    let image = try decodeJPEG(bytes: bad, name: "corrupt-\(seed)-\(f.file)")
                    XCTAssertEqual([image.width, image.height], [f.width, f.height], f.name)
                } catch let e as JPEGDecodingError {
                    XCTAssertTrue(e.description.contains("corrupt-\(seed)-\(f.file)"), e.description)
                }
            }
        }
    }

    func testGIFMagic() throws {
        let url = try makeTempDir(self, prefix: "ImagingTests").appendingPathComponent("anim.jpg")
        try Data(Array("GIF89a".utf8) + [0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00] + Array(repeating: 0, count: 30)).write(to: url)
        XCTAssertThrowsError(try decodeImage(path: url.path)) { error in
            let e = error as! ImageFileError
            XCTAssertEqual(e.kind, .unsupportedFormat)
            XCTAssertEqual(e.format, .gif)
            XCTAssertEqual(e.description,
                           "cannot decode image '\(url.path)': unsupported image format (GIF); PromptTune reads JPEG and PNG")
        }
        XCTAssertThrowsError(try decodeJPEG(path: url.path)) { error in
            let e = error as! JPEGDecodingError
            XCTAssertEqual(e.kind, .notJPEG)
            XCTAssertTrue(e.description.contains("it looks like GIF"), e.description)
            XCTAssertTrue(e.description.contains(url.path), e.description)
        }
    }

    func testFormatSniffing() {
        XCTAssertEqual(ImageFormat.sniff(Array("RIFF\u{0}\u{0}\u{0}\u{0}WEBPVP8 ".utf8)), .webp)
        XCTAssertEqual(ImageFormat.sniff([0x49, 0x49, 0x2A, 0x00, 8, 0, 0, 0]), .tiff)
        XCTAssertEqual(ImageFormat.sniff([0, 0, 0, 0x1C] + Array("ftypheic".utf8)), .heif)
        XCTAssertEqual(ImageFormat.sniff([0, 0, 0, 0x1C] + Array("ftypavif".utf8)), .avif)
        XCTAssertEqual(ImageFormat.sniff(Array("BM".utf8) + Array(repeating: 0, count: 20)), .bmp)
        XCTAssertEqual(ImageFormat.sniff([0xFF, 0xD8, 0xFF, 0xE0]), .jpeg)
        XCTAssertEqual(ImageFormat.sniff([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), .png)
        XCTAssertNil(ImageFormat.sniff(Array("hello".utf8)))
        XCTAssertThrowsError(try decodeImage(bytes: Array("hello world".utf8), name: "x.bin")) { error in
            XCTAssertEqual("\(error)", "cannot decode image 'x.bin': unrecognised image format "
                + "(starts with 68 65 6c 6c 6f 20 77 6f); PromptTune reads JPEG and PNG")
        }
        XCTAssertThrowsError(try decodeImage(bytes: Array("RIFF\u{0}\u{0}\u{0}\u{0}WEBPVP8 ".utf8), name: "y.jpg")) { error in
            XCTAssertEqual("\(error)", "cannot decode image 'y.jpg': unsupported image format (WebP); PromptTune reads JPEG and PNG")
        }
    }

    /// The decoder is chosen by content, not by extension.
    func testDecodeImageDispatchesOnMagicBytes() throws {
        let dir = try makeTempDir(self, prefix: "ImagingTests")
        let png = try Fixtures.bytes("rgb8_100x80.png")
        let pngAsJpg = dir.appendingPathComponent("really-a-png.jpg")
        try Data(png).write(to: pngAsJpg)
        XCTAssertEqual(try decodeImage(path: pngAsJpg.path), try decodePNG(path: Fixtures.path("rgb8_100x80.png")))
        let jpg = try JPEGFixtures.bytes("s444_80x60.jpg")
        let jpgAsPng = dir.appendingPathComponent("really-a-jpeg.png")
        try Data(jpg).write(to: jpgAsPng)
        XCTAssertEqual(try decodeImage(path: jpgAsPng.path), try decodeJPEG(path: JPEGFixtures.path("s444_80x60.jpg")))
        // 16-bit PNGs go through the C row-API wrapper.
        XCTAssertEqual(try decodeImage(path: Fixtures.path("rgb16_64x48.png")), try decodePNG(path: Fixtures.path("rgb16_64x48.png")))
        // Truncated PNG through decodeImage: the PNG decoder's error.
        let half = dir.appendingPathComponent("half.png")
        try Data(png[0 ..< png.count / 2]).write(to: half)
        XCTAssertThrowsError(try decodeImage(path: half.path)) { error in
            XCTAssertEqual((error as! PNGDecodingError).kind, .truncated)
        }
        XCTAssertThrowsError(try decodeImage(bytes: [], name: "nothing.png")) { error in
            XCTAssertEqual("\(error)", "cannot decode image 'nothing.png': the file is empty")
        }
    }

    /// A header claiming 65000 x 65000 pixels is refused before any allocation (the decoded-size
    /// budget, ``ImageLimits``).
    func testTooLarge() throws {
        var bytes = try JPEGFixtures.bytes("baseline420_96x64.jpg")
        let sof = try XCTUnwrap((0 ..< bytes.count - 1).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xC0 })
        bytes[sof + 5] = 0xFD; bytes[sof + 6] = 0xE8  // height 65000
        bytes[sof + 7] = 0xFD; bytes[sof + 8] = 0xE8  // width 65000
        XCTAssertEqual(try JPEGDecoder.header(bytes: bytes).width, 65000)
        XCTAssertThrowsError(try decodeJPEG(bytes: bytes, name: "bomb.jpg")) { error in
            let e = error as! ImageTooLargeError
            XCTAssertEqual([e.width, e.height], [65000, 65000])
            XCTAssertTrue(e.description.contains("bomb.jpg"), e.description)
        }
    }
}
