import CKernels
import Foundation
import TensorCore
import TestSupport
import XCTest

/// fp32 -> fp16 -> fp32 rounding against hand-picked bit patterns and against Swift's `Float16`
/// conversion (the compiler runtime's, an independent implementation), in both kernel builds.
final class HalfRoundingTests: XCTestCase {
    override func tearDown() { _ = pt_kernels_set_isa(1) }

    private func forEachISA(_ body: (String) -> Void) {
        for isa in [1, 0] {
            let got = pt_kernels_set_isa(Int32(isa))
            if isa == 1 && got == 0 { continue }  // no AVX-512 on this CPU
            body(got == 1 ? "avx512" : "portable")
        }
    }

    private func bits(_ x: Float) -> String { String(x.bitPattern, radix: 16) }

    /// (input, the fp16 value it rounds to), chosen at the edges of each rule.
    static let cases: [(Float, Float)] = [
        (0, 0), (-0.0, -0.0), (1, 1), (-2.5, -2.5),
        // Ties between two fp16 neighbours of 1 (spacing 2^-10) go to the even mantissa.
        (1 + 0x1p-11, 1),                        // halfway, 1 is even
        (1 + 3 * 0x1p-11, 1 + 2 * 0x1p-10),      // halfway between odd 1+2^-10 and even 1+2^-9
        (1 + 0x1p-11 + 0x1p-23, 1 + 0x1p-10),    // just above halfway
        (1 + 0x1p-11 - 0x1p-23, 1),              // just below
        (2 - 0x1p-12, 2),                        // the carry steps the exponent
        (-(1 + 0x1p-11 + 0x1p-23), -(1 + 0x1p-10)),
        // The largest finite fp16 value, and the overflow boundary (65520 is the tie with 2^16).
        (65504, 65504), (65519.996, 65504), (65520, .infinity), (-65520, -.infinity), (1e10, .infinity),
        (.greatestFiniteMagnitude, .infinity), (.infinity, .infinity), (-.infinity, -.infinity),
        // The smallest normal (2^-14) and the subnormals below it (quantum 2^-24).
        (0x1p-14, 0x1p-14), (0x1p-14 - 0x1p-25, 0x1p-14),  // the tie with the largest subnormal rounds to even 2^-14
        (0x1p-14 - 0x1p-24, 0x1p-14 - 0x1p-24),              // the largest subnormal
        (0x1p-24, 0x1p-24), (3 * 0x1p-25, 2 * 0x1p-24),      // 1.5 quanta: tie to the even 2
        (0x1p-25, 0), (0x1p-25 + 0x1p-40, 0x1p-24),          // half a quantum ties to 0; above it to 2^-24
        (5 * 0x1p-25, 2 * 0x1p-24), (7 * 0x1p-25, 4 * 0x1p-24),
        (-0x1p-26, -0.0), (.leastNonzeroMagnitude, 0), (-.leastNormalMagnitude, -0.0),
    ]

    func testHandPickedBitPatterns() {
        forEachISA { isa in
            for (x, want) in Self.cases {
                let got = roundedToHalf(x)
                XCTAssertEqual(got.bitPattern, want.bitPattern, "\(isa): \(x) (0x\(bits(x))) -> \(got), expected \(want)")
                // Vector body and tail alike.
                let t = Tensor(shape: [37], data: Array(repeating: x, count: 37)).roundedToHalf()
                XCTAssertTrue(t.data.allSatisfy { $0.bitPattern == want.bitPattern }, "\(isa): \(x) in a tensor")
            }
            let nan = Float(bitPattern: 0x7fc0_1234)
            XCTAssertEqual(roundedToHalf(nan).bitPattern, nan.bitPattern, "\(isa): NaN kept")
            XCTAssertTrue(roundedToHalf(-Float.nan).isNaN)
        }
    }

    /// Every exponent, random mantissas and the patterns next to each rounding boundary, against
    /// `Float(Float16(x))`.
    func testAgainstFloat16Conversion() {
        var rng = SeededGenerator(seed: 16)
        var xs: [Float] = []
        for e in 0..<256 {
            for _ in 0..<64 {
                let m = UInt32(truncatingIfNeeded: rng.next()) & 0x7f_ffff
                let s = UInt32(truncatingIfNeeded: rng.next()) & 0x8000_0000
                xs.append(Float(bitPattern: s | UInt32(e) << 23 | m))
            }
            // The low 13 bits (those fp16 drops) at 0x0fff, 0x1000, 0x1001 and 0x1fff: below, at and above a tie.
            for low: UInt32 in [0x0fff, 0x1000, 0x1001, 0x1fff, 0x3000] {
                for high: UInt32 in [0, 0x2000, 0x7f_e000] { xs.append(Float(bitPattern: UInt32(e) << 23 | high | low)) }
            }
        }
        forEachISA { isa in
            let got = Tensor(shape: [xs.count], data: xs).roundedToHalf()
            var wrong = 0
            for (i, x) in xs.enumerated() {
                let want = Float(Float16(x))
                let same = want.isNaN ? got[i].isNaN : got[i].bitPattern == want.bitPattern
                if !same {
                    wrong += 1
                    if wrong <= 5 { XCTFail("\(isa): \(x) (0x\(bits(x))) -> \(got[i]), Float16 gives \(want)") }
                }
            }
            XCTAssertEqual(wrong, 0, "\(isa): \(wrong) of \(xs.count) values differ from Float16")
        }
    }

    func testRoundingIsIdempotentAndInPlace() {
        var rng = SeededGenerator(seed: 17)
        var t = Tensor.randomNormal([5, 19], std: 40, using: &rng)
        let once = t.roundedToHalf()
        XCTAssertNotEqual(once, t)
        t.roundToHalf()
        XCTAssertEqual(t, once)
        XCTAssertEqual(once.roundedToHalf(), once)
        var a = t
        ActivationRounding.none.apply(&a)
        XCTAssertEqual(a, t)
    }
}

/// The fp16 model's own layers (`ActivationRounding.half`): QuickGELU as CLIP's three fp16 ops and
/// attention probabilities rounded as fused fp16 kernels round them.
final class HalfLayerTests: XCTestCase {
    /// Against PyTorch 2.13 on fp16 CPU tensors: `x * torch.sigmoid(1.702 * x)` and its autograd
    /// gradient. (PyTorch's CPU sigmoid backward rounds each of its three ops, CUDA's and ours once;
    /// on these values they agree.)
    func testQuickGELUAgainstPyTorch() {
        let x = Tensor(shape: [10], data: [-3.5, -1.0, -0.2998046875, 0.00010001659393310547, 0.5, 1.2998046875, 2.69921875, 7.8984375,
                                           -3.05078125, -1.5])
        let dy = Tensor(shape: [10], data: [1.0, -0.5, 0.25, 3.0, -2.0, 0.125, 1.5, -0.75, 1.0, -1.0])
        let y: [Float] = [-0.009033203125, -0.1541748046875, -0.11248779296875, 5.0008296966552734e-05, 0.350341796875, 1.171875,
                          2.671875, 7.8984375, -0.0168914794921875, -0.1083984375]
        let dx: [Float] = [-0.01275634765625, 0.03387451171875, 0.06390380859375, 1.5, -1.7578125, 0.13720703125, 1.5546875, -0.75,
                           -0.0230560302734375, 0.098876953125]
        XCTAssertEqual(QuickGELU.forwardHalf(x).data, y)
        // The last two are where one rounding of the fused fp32 op gives another value.
        XCTAssertNotEqual(Array(QuickGELU.forward(x).roundedToHalf().data[8...]), Array(y[8...]))
        var g = Tensor(zeros: [10])
        QuickGELU.backwardHalf(dy, input: x, dx: &g)
        XCTAssertEqual(g.data, dx)
        QuickGELU.backwardHalf(dy, input: x, dx: &g)
        XCTAssertEqual(g.data, dx.map { 2 * $0 }, "accumulates")
    }

    /// With .half, each row's probabilities are fp16 values times the row's largest probability
    /// (exp(s - max) rounded, divided by the fp32 sum), qkv and the output are fp16 values, and the
    /// result stays near fp32's.
    func testAttentionProbabilitiesAndOutputs() {
        var rng = SeededGenerator(seed: 21)
        let c = 16
        let attention = MultiheadAttention(inProj: Linear(weight: .randomNormal([3 * c, c], std: 0.3, using: &rng), bias: .randomNormal([3 * c], std: 0.02, using: &rng)),
                                           outProj: Linear(weight: .randomNormal([c, c], std: 0.3, using: &rng), bias: nil), heads: 2)
        let layout = SequenceLayout(lengths: [5, 20])
        let x = Tensor.randomNormal([25, c], using: &rng).roundedToHalf()
        let (y16, cache16) = attention.forward(x, layout: layout, causal: true, rounding: .half)
        let (y32, cache32) = attention.forward(x, layout: layout, causal: true)
        XCTAssertEqual(y16, y16.roundedToHalf())
        XCTAssertEqual(cache16.qkv, cache16.qkv.roundedToHalf())
        XCTAssertNotEqual(y16, y32)
        XCTAssertLessThan(maxDiff(y16, y32), 5e-3 * y32.maxAbs)
        // Sequence 1 (20 rows, causal) holds row r's probabilities over r + 1 keys; per head, 20 x 20.
        let offset = 2 * 5 * 5
        for head in 0..<2 {
            for r in 0..<20 {
                let row = Array(cache16.probs.data[(offset + head * 400 + r * 20)..<(offset + head * 400 + r * 20 + 20)])
                let m = row.max()!
                for v in row { XCTAssertEqual(v / m, roundedToHalf(v / m), accuracy: 2e-7 * max(1, abs(v / m))) }
                XCTAssertEqual(row.reduce(0, +), 1, accuracy: 2e-3)
                XCTAssertTrue(row[(r + 1)...].allSatisfy { $0 == 0 }, "masked")
            }
        }
        XCTAssertNotEqual(cache16.probs, cache32.probs)
    }
}
