import CKernels
import Foundation
import TensorCore
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
