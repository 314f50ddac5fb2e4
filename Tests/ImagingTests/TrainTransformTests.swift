import Foundation
import Imaging
import TensorCore
import XCTest

final class TrainTransformTests: XCTestCase {
    private func pilImage(_ index: JPEGFixtureIndex, _ name: String) throws -> RGBImage {
        let f = try XCTUnwrap(index.fixture(name))
        return RGBImage(width: f.width, height: f.height, pixels: try JPEGFixtures.bytes(f.rgb.file))
    }

    /// `resizedCrop` (+ flip) equals Pillow's `img.crop(box).resize((s, s), BICUBIC)` (+ transpose)
    /// bit for bit, for down- and up-scaling and both of Pillow 13's pass orders.
    func testResizedCropMatchesPillowGoldens() throws {
        let index = try JPEGFixtures.index()
        XCTAssertGreaterThanOrEqual(index.crops.count, 6)
        var passOrders = Set<Bool>()
        for c in index.crops {
            let image = try pilImage(index, c.fixture)
            let box = CropBox(top: c.top, left: c.left, height: c.height, width: c.width)
            var out = resizedCrop(image, box, size: c.size)
            if c.flip { out = horizontalFlip(out) }
            XCTAssertEqual(c.shape, [c.size, c.size, 3])
            let expected = try JPEGFixtures.bytes(c.file)
            let d = byteDifference(out.pixels, expected)
            XCTAssertEqual(d.count, 0, "\(c.file) \(box) -> \(c.size) flip \(c.flip): \(d.count) values differ, max \(d.maxAbs)")
            if let v = c.vertical_pass_first { passOrders.insert(v) }
            // Decoding the JPEG ourselves gives the same input.
            XCTAssertEqual(try decodeJPEG(path: JPEGFixtures.path(c.fixture + ".jpg")), image)
        }
        XCTAssertEqual(passOrders, [true, false], "goldens should cover both pass orders")
    }

    /// The whole CoOp train transform for fixed parameters equals torchvision's, float for float.
    func testTrainTransformMatchesGoldens() throws {
        let index = try JPEGFixtures.index()
        XCTAssertFalse(index.train.isEmpty)
        for c in index.train {
            let image = try decodeJPEG(path: JPEGFixtures.path(c.fixture + ".jpg"))
            let transform = CoOpTrainTransform(size: c.size)
            let p = TrainAugmentation(crop: CropBox(top: c.top, left: c.left, height: c.height, width: c.width), flip: c.flip)
            let t = transform(image, p)
            XCTAssertEqual(t.shape, [3, c.size, c.size])
            let expected = try JPEGFixtures.floats(c.file)
            XCTAssertEqual(t.data.count, expected.count)
            let differing = zip(t.data, expected).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(differing, 0, "\(c.file): \(differing) floats differ")
        }
    }

    /// 10,000 seeded draws per size, odd and extreme sizes included: every box lies inside the image.
    func testCropParametersAlwaysValid() {
        let sizes = [(37, 19), (19, 37), (1, 1), (1, 500), (500, 1), (2, 3), (333, 777), (500, 375), (1023, 7)]
        var rng = SeededGenerator(seed: 20240601)
        for (w, h) in sizes {
            var fallbacks = 0
            for _ in 0 ..< 10_000 {
                let b = cropParameters(width: w, height: h, rng: &rng)
                XCTAssertTrue(b.width > 0 && b.width <= w && b.height > 0 && b.height <= h, "\(w)x\(h): \(b)")
                XCTAssertTrue(b.top >= 0 && b.top + b.height <= h && b.left >= 0 && b.left + b.width <= w, "\(w)x\(h): \(b)")
                if b.top == (h - b.height) / 2 && b.left == (w - b.width) / 2 && (b.width == w || b.height == h) { fallbacks += 1 }
            }
            if w == 500 && h == 375 { XCTAssertLessThan(fallbacks, 300, "the fallback should be rare on a 4:3 image") }
        }
        // Extreme aspect ratios: every attempt fails, torchvision's central fallback with the ratio clamped.
        var r = SeededGenerator(seed: 1)
        XCTAssertEqual(cropParameters(width: 1, height: 500, rng: &r), CropBox(top: 249, left: 0, height: 1, width: 1))
        XCTAssertEqual(cropParameters(width: 500, height: 1, rng: &r), CropBox(top: 0, left: 249, height: 1, width: 1))
    }

    func testFallbackClampsTheRatio() {
        let impossible = RandomResizedCrop(size: 8, scale: 2 ... 3)  // target area > image: never fits
        var rng = SeededGenerator(seed: 3)
        XCTAssertEqual(impossible.cropParameters(width: 100, height: 100, rng: &rng), CropBox(top: 0, left: 0, height: 100, width: 100))
        // in_ratio 3 > 4/3: h = 100, w = round(100 * 4/3) = 133, centred.
        XCTAssertEqual(impossible.cropParameters(width: 300, height: 100, rng: &rng), CropBox(top: 0, left: 83, height: 100, width: 133))
        // in_ratio 0.5 < 3/4: w = 60, h = round(60 / 0.75) = 80.
        XCTAssertEqual(impossible.cropParameters(width: 60, height: 120, rng: &rng), CropBox(top: 20, left: 0, height: 80, width: 60))
    }

    /// The boxes follow torchvision's distribution. Reference values: torchvision's `get_params`
    /// (copied verbatim) with torch's generator, 100,000 draws: mean area fraction 0.4777 on a
    /// 4000x4000 image (below (0.08 + 1) / 2 because boxes wider or taller than the image are
    /// redrawn), 0.4338 on 500x375 with mean width 282.06.
    func testCropDistributionMatchesTorchvision() {
        var rng = SeededGenerator(seed: 7)
        let n = 10_000
        func stats(_ w: Int, _ h: Int) -> (area: Double, width: Double) {
            var area = 0.0, width = 0.0
            for _ in 0 ..< n {
                let b = cropParameters(width: w, height: h, rng: &rng)
                area += Double(b.width * b.height) / Double(w * h)
                width += Double(b.width)
                let ratio = Double(b.width) / Double(b.height)
                if b.width < w && b.height < h { XCTAssertTrue(ratio > 0.74 && ratio < 1.35, "\(b)") }
            }
            return (area / Double(n), width / Double(n))
        }
        XCTAssertEqual(stats(4000, 4000).area, 0.4777, accuracy: 0.012)
        let photo = stats(500, 375)
        XCTAssertEqual(photo.area, 0.4338, accuracy: 0.012)
        XCTAssertEqual(photo.width, 282.06, accuracy: 4)
    }

    func testDeterminismForASeed() throws {
        let image = try decodeJPEG(path: JPEGFixtures.path("photo_500x375.jpg"))
        let transform = CoOpTrainTransform()
        var a = SeededGenerator(seed: 42), b = SeededGenerator(seed: 42), c = SeededGenerator(seed: 43)
        var flips = 0
        var seen = Set<TrainAugmentation>()
        for _ in 0 ..< 2000 {
            let pa = transform.parameters(width: 500, height: 375, rng: &a)
            XCTAssertEqual(pa, transform.parameters(width: 500, height: 375, rng: &b))
            if pa.flip { flips += 1 }
            seen.insert(pa)
            _ = transform.parameters(width: 500, height: 375, rng: &c)
        }
        XCTAssertEqual(Double(flips) / 2000, 0.5, accuracy: 0.05)
        XCTAssertGreaterThan(seen.count, 1900)

        // Pinned: these change only if the algorithm or SeededGenerator changes.
        var pin = SeededGenerator(seed: 0)
        let pinned = (0 ..< 3).map { _ in transform.parameters(width: 500, height: 375, rng: &pin) }
        print("CoOpTrainTransform parameters, seed 0, 500x375: \(pinned)")
        XCTAssertEqual(pinned, Self.pinnedSeed0)

        var t1 = SeededGenerator(seed: 9), t2 = SeededGenerator(seed: 9)
        let x = transform(image, rng: &t1), y = clipTrainPreprocess(image, resolution: 224, rng: &t2)
        XCTAssertEqual(x.shape, [3, 224, 224])
        XCTAssertEqual(x.data, y.data)
        XCTAssertTrue(x.data.allSatisfy { $0.isFinite })
        var t3 = SeededGenerator(seed: 10)
        XCTAssertNotEqual(transform(image, rng: &t3).data, x.data)
        // Drawing then applying equals the one-call form.
        var t4 = SeededGenerator(seed: 9)
        let p = transform.parameters(width: image.width, height: image.height, rng: &t4)
        XCTAssertEqual(transform(image, p).data, x.data)
    }

    static let pinnedSeed0 = [
        TrainAugmentation(crop: CropBox(top: 27, left: 111, height: 122, width: 160), flip: true),
        TrainAugmentation(crop: CropBox(top: 32, left: 72, height: 313, width: 353), flip: false),
        TrainAugmentation(crop: CropBox(top: 147, left: 167, height: 203, width: 248), flip: false),
    ]

    func testCropAndFlipHelpers() {
        var px = [UInt8]()
        for y in 0 ..< 3 { for x in 0 ..< 4 { px += [UInt8(x), UInt8(y), 7] } }
        let image = RGBImage(width: 4, height: 3, pixels: px)
        let c = crop(image, CropBox(top: 1, left: 2, height: 2, width: 2))
        XCTAssertEqual(c.pixels, [2, 1, 7, 3, 1, 7, 2, 2, 7, 3, 2, 7])
        // Outside the image: black, as PIL's crop.
        let outside = crop(image, CropBox(top: 2, left: 3, height: 2, width: 2))
        XCTAssertEqual(outside.pixels, [3, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        let f = horizontalFlip(image)
        XCTAssertEqual(f[x: 0, y: 1].r, 3)
        XCTAssertEqual(horizontalFlip(f), image)
        XCTAssertEqual(crop(image, CropBox(top: 0, left: 0, height: 3, width: 4)), image)
    }
}
