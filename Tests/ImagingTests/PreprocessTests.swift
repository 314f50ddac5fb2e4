import Foundation
import Imaging
import TensorCore
import XCTest

final class PreprocessTests: XCTestCase {
    /// Absolute tolerance against torchvision + Pillow. The resize reproduces Pillow's integer
    /// arithmetic and the normalisation PyTorch's Float32 operations, so the expected error is 0.
    static let tolerance: Float = 1e-6

    func testClipPreprocessMatchesGoldens() throws {
        let index = try Fixtures.index()
        let mean = index.mean.map { Float($0) }, std = index.std.map { Float($0) }
        XCTAssertEqual(mean, CLIPImageNormalization.mean)
        XCTAssertEqual(std, CLIPImageNormalization.std)
        var checked = 0
        var worst: (diff: Float, name: String, index: Int) = (0, "", -1)
        var differingBytes = 0
        for f in index.fixtures {
            let rgb = try Fixtures.bytes(f.rgb.file)
            let image = RGBImage(width: f.width, height: f.height, pixels: rgb)
            for p in f.preprocess {
                let n = p.resolution
                let golden = try Fixtures.floats(p.file)
                XCTAssertEqual(p.shape, [3, n, n])
                let size = resizedShorterSideSize(width: f.width, height: f.height, to: n)
                XCTAssertEqual([size.width, size.height], p.resized_wh, "\(f.name)@\(n)")

                let t = clipPreprocess(image, resolution: n)
                XCTAssertEqual(t.shape, [3, n, n])
                XCTAssertEqual(t.count, golden.count)
                var local: Float = 0
                for (i, (a, b)) in zip(t.data, golden).enumerated() {
                    let d = abs(a - b)
                    if d > local { local = d }
                    if d > worst.diff { worst = (d, "\(f.name)@\(n)", i) }
                }
                XCTAssertLessThanOrEqual(local, Self.tolerance, "\(f.name)@\(n)")

                // The same comparison on the uint8 crop: recover the golden's bytes by inverting Normalize.
                let crop = centerCrop(resizeShorterSide(image, to: n), size: n)
                var bytesOff = 0
                for c in 0 ..< 3 {
                    for i in 0 ..< n * n {
                        let g = (Double(golden[c * n * n + i]) * Double(std[c]) + Double(mean[c])) * 255
                        if UInt8((g).rounded()) != crop.pixels[3 * i + c] { bytesOff += 1 }
                    }
                }
                XCTAssertEqual(bytesOff, 0, "\(f.name)@\(n): uint8 values differing from Pillow")
                differingBytes += bytesOff
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 29)
        print("clipPreprocess vs torchvision+Pillow: \(checked) goldens, worst |diff| = \(worst.diff)"
              + (worst.index >= 0 ? " (\(worst.name) element \(worst.index))" : "")
              + ", uint8 values differing after resize+crop: \(differingBytes)")
    }

    /// A portrait taller than 2:1 is where Pillow 13 runs the vertical pass first; the golden pins
    /// that, and Pillow 12's horizontal-first order gives different bytes.
    func testPassOrderOfPillow13() throws {
        let image = RGBImage(width: 230, height: 520, pixels: try Fixtures.bytes("rgb8_230x520.rgb.bin"))
        let golden = try Fixtures.floats("rgb8_230x520.224.f32")
        XCTAssertEqual(clipPreprocess(image, resolution: 224).data, golden)
        let old = clipPreprocess(image, resolution: 224, passOrder: .horizontalFirst).data
        let differing = zip(old, golden).filter { $0 != $1 }.count
        XCTAssertGreaterThan(differing, 0)
        print("rgb8_230x520@224: Pillow-12 pass order differs from Pillow 13 in \(differing) of \(golden.count) values")
        // Landscape and mild portraits take the same path in both orders.
        let wide = RGBImage(width: 500, height: 375, pixels: try Fixtures.bytes("rgb8_500x375.rgb.bin"))
        XCTAssertEqual(clipPreprocess(wide, resolution: 224, passOrder: .horizontalFirst),
                       clipPreprocess(wide, resolution: 224))
    }

    func testDecodeThenPreprocessEndToEnd() throws {
        let t = clipPreprocess(try decodePNG(path: Fixtures.path("rgb8_500x375.png")), resolution: 224)
        XCTAssertEqual(t.data, try Fixtures.floats("rgb8_500x375.224.f32"))
    }

    func testResizedSizeFollowsTorchvision() {
        XCTAssertTrue(resizedShorterSideSize(width: 500, height: 375, to: 224) == (298, 224))  // int(298.67)
        XCTAssertTrue(resizedShorterSideSize(width: 375, height: 500, to: 224) == (224, 298))
        XCTAssertTrue(resizedShorterSideSize(width: 900, height: 120, to: 224) == (1680, 224))
        XCTAssertTrue(resizedShorterSideSize(width: 100, height: 100, to: 224) == (224, 224))
        XCTAssertTrue(resizedShorterSideSize(width: 1, height: 5000, to: 32) == (32, 160000))
        XCTAssertTrue(resizedShorterSideSize(width: 333, height: 333 * 7 + 1, to: 224) == (224, Int(Double(224 * (333 * 7 + 1)) / 333)))
    }

    func testCenterCropRoundsHalfToEvenAndPads() {
        // A 5x1 image with pixel values 0...4 in every channel.
        let row = RGBImage(width: 5, height: 1, pixels: (0 ..< 5).flatMap { [UInt8($0), UInt8($0), UInt8($0)] })
        // (5 - 4) / 2 = 0.5 -> round half to even -> 0; (5 - 2) / 2 = 1.5 -> 2
        XCTAssertEqual(centerCrop(row, width: 4, height: 1).pixels.map { $0 }, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
        XCTAssertEqual(centerCrop(row, width: 2, height: 1).pixels, [2, 2, 2, 3, 3, 3])
        // Padding: crop 8 wide from 5 -> left pad 1, right pad 2; height 3 from 1 -> top 1, bottom 1.
        let padded = centerCrop(row, width: 8, height: 3)
        XCTAssertEqual(padded.width, 8)
        XCTAssertEqual(padded.height, 3)
        XCTAssertEqual(padded.pixels[0 ..< 24].allSatisfy { $0 == 0 }, true)
        XCTAssertEqual(Array(padded.pixels[24 ..< 48]).enumerated().filter { $0.offset % 3 == 0 }.map { $0.element },
                       [0, 0, 1, 2, 3, 4, 0, 0])
        XCTAssertEqual(centerCrop(row, width: 5, height: 1), row)
    }

    func testResizeEdgeCases() {
        var g = SystemRandomNumberGenerator()
        func random(_ w: Int, _ h: Int) -> RGBImage {
            RGBImage(width: w, height: h, pixels: (0 ..< w * h * 3).map { _ in UInt8.random(in: 0 ... 255, using: &g) })
        }
        // Same size: unchanged. Constant images stay constant (weights sum to 1 in fixed point).
        let img = random(17, 9)
        XCTAssertEqual(resizeBicubic(img, width: 17, height: 9), img)
        let flat = RGBImage(width: 37, height: 23, fill: (200, 13, 255))
        for (w, h) in [(1, 1), (5, 80), (300, 2), (37, 7), (74, 23)] {
            let r = resizeBicubic(flat, width: w, height: h)
            XCTAssertEqual(r.width, w)
            XCTAssertEqual(r.height, h)
            XCTAssertTrue(stride(from: 0, to: r.pixels.count, by: 3).allSatisfy {
                r.pixels[$0] == 200 && r.pixels[$0 + 1] == 13 && r.pixels[$0 + 2] == 255
            }, "\(w)x\(h)")
        }
        // Extreme shapes through the whole pipeline.
        for (w, h) in [(1, 1), (1, 400), (700, 3), (2, 2), (224, 223), (225, 224), (3000, 40)] {
            for n in [32, 224] {
                let t = clipPreprocess(random(w, h), resolution: n)
                XCTAssertEqual(t.shape, [3, n, n])
                XCTAssertTrue(t.data.allSatisfy { $0.isFinite && abs($0) < 3 })
            }
        }
    }
}
