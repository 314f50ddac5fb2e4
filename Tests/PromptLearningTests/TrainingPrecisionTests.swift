import Foundation
import PromptLearning
import TensorCore
import XCTest

/// The fp16-reference optimiser step and the precision setting of a run.
final class TrainingPrecisionTests: XCTestCase {
    /// The half SGD step against values worked out by hand from PyTorch's fp16 CUDA arithmetic.
    func testHalfSGDStepByHand() {
        var config = OptimizerConfig()
        config.momentum = 0.9
        config.weightDecay = 5e-4
        // p = 0.02 lies in [2^-6, 2^-5): fp16 spacing 2^-16. fp16(0.02) = 1311 * 2^-16.
        let p0 = roundedToHalf(0.02)
        XCTAssertEqual(p0, 1311 * 0x1p-16)
        var p = Tensor(shape: [3], data: [p0, p0, -1])
        // Gradients: one needing rounding, one zero (weight decay alone), one large.
        let g = Tensor(shape: [3], data: [0.1 + 1e-6, 0, 2])
        var buf: Tensor? = nil
        sgdStepHalf(&p, gradient: g, momentumBuffer: &buf, lr: 1e-5, config: config)
        // d = fp16(fp16(g) + 5e-4 * p): fp16(0.100001) = 0.0999755859375 (spacing 2^-14 in [2^-4, 2^-3)),
        // + 1.0002e-5 = 0.09998559..., rounds to 0.0999755859375 again; 5e-4 * 0.020004 = 1.0002e-5 -> fp16 1.0013580322265625e-05.
        let d0 = roundedToHalf(Float(0.0999755859375).addingProduct(5e-4, p0))
        XCTAssertEqual(d0, 0.0999755859375)
        let d1 = roundedToHalf(Float(5e-4) * p0)
        XCTAssertEqual(buf!.data, [d0, d1, roundedToHalf(Float(2).addingProduct(5e-4, -1))])
        XCTAssertEqual(buf![2], 2 - 0x1p-10)  // 2 - 5e-4 = 1.9995 lies below the midpoint 2 - 2^-11 of its fp16 neighbours
        // p - 1e-5 * 0.09998 = p - 1e-6: far below half the spacing 2^-17 = 7.6e-6: dropped.
        XCTAssertEqual(p[0], p0)
        XCTAssertEqual(p[1], p0)
        // -1 - 1e-5 * 2 = -1.00002: spacing above 1 is 2^-10, so it stays -1 (dropped as well).
        XCTAssertEqual(p[2], -1)
        // The fp32 step moves the two with a gradient (the weight decay's 1e-10 is below fp32's spacing too).
        var q = Tensor(shape: [3], data: [p0, p0, -1])
        var qbuf: Tensor? = nil
        sgdStep(&q, gradient: g, momentumBuffer: &qbuf, lr: 1e-5, config: config)
        XCTAssertNotEqual(q[0], p0)
        XCTAssertEqual(q[1], p0)
        XCTAssertNotEqual(q[2], -1)

        // Second step at a rate that moves p: buf = fp16(fp16(0.9 * buf) + d); p = fp16(p - lr * buf).
        let before = buf!
        sgdStepHalf(&p, gradient: g, momentumBuffer: &buf, lr: 0.01, config: config)
        for i in 0..<3 {
            let m = roundedToHalf(before[i] * 0.9)
            XCTAssertEqual(buf![i], roundedToHalf(m + before[i]), "momentum \(i)")
        }
        XCTAssertEqual(p[0], roundedToHalf(p0.addingProduct(-0.01, buf![0])))
        // buf = fp16(0.9 * 0.0999756 -> 1474 * 2^-14) + 0.0999756 = 0.18994140625 (exact); p = 0.0200043 - 0.0018994 = 0.0181049 -> 1187 * 2^-16
        XCTAssertEqual(buf![0], 0.18994140625)
        XCTAssertEqual(p[0], 1187 * 0x1p-16)
        XCTAssertEqual(p[2], roundedToHalf(Float(-1).addingProduct(-0.01, buf![2])))
        XCTAssertEqual(p[2], -1.0380859375)  // -1 - 0.01 * 3.8 = -1.038 -> -1063 * 2^-10
        XCTAssertEqual(p, p.roundedToHalf())
    }

    /// fp16-reference is a setting of the run: encoded only when chosen, so fp32 configs keep their bytes.
    func testPrecisionEncodesOnlyWhenChosen() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var config = TrainConfig(method: .coop, epochs: 2)
        let plain = String(decoding: try encoder.encode(config), as: UTF8.self)
        XCTAssertFalse(plain.contains("precision"))
        XCTAssertEqual(try JSONDecoder().decode(TrainConfig.self, from: Data(plain.utf8)).precision, .fp32)
        config.precision = .fp16Reference
        let half = String(decoding: try encoder.encode(config), as: UTF8.self)
        XCTAssertTrue(half.contains("\"precision\":\"fp16-reference\""))
        XCTAssertEqual(try JSONDecoder().decode(TrainConfig.self, from: Data(half.utf8)), config)
        XCTAssertThrowsError(try JSONDecoder().decode(TrainConfig.self, from: Data(half.replacingOccurrences(of: "fp16-reference", with: "fp8").utf8)))
    }
}
