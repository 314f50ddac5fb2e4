import CKernels
import Foundation
import TensorCore
import TestSupport
import XCTest

/// The vectorised kernels against plain Double loops, in both the AVX-512 and portable builds.
final class KernelTests: XCTestCase {
    override func tearDown() { _ = pt_kernels_set_isa(1) }

    private func forEachISA(_ body: (String) -> Void) {
        for isa in [1, 0] {
            let got = pt_kernels_set_isa(Int32(isa))
            if isa == 1 && got == 0 { continue }  // no AVX-512 on this CPU
            body(got == 1 ? "avx512" : "portable")
        }
    }

    func testLayerNormMatchesDefinition() {
        var rng = SeededGenerator(seed: 4)
        let (n, c) = (5, 37)  // 37: a vector remainder
        let x = Tensor.randomNormal([n, c], std: 3, using: &rng)
        let ln = LayerNorm(weight: .randomNormal([c], using: &rng), bias: .randomNormal([c], using: &rng))
        var want = Tensor(zeros: [n, c])
        for r in 0..<n {
            let row = (0..<c).map { Double(x[r * c + $0]) }
            let mean = row.reduce(0, +) / Double(c)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(c)
            for j in 0..<c {
                want[r * c + j] = Float((row[j] - mean) / (variance + 1e-5).squareRoot()) * ln.weight[j] + ln.bias[j]
            }
        }
        forEachISA { isa in assertClose(ln.forward(x).0, want, atol: 1e-5, rtol: 1e-5, "layernorm \(isa)") }
    }

    func testCausalSoftmaxMatchesDefinition() {
        var rng = SeededGenerator(seed: 5)
        let (n, c) = (6, 21)
        let x = Tensor.randomNormal([n, c], std: 4, using: &rng)
        for offset in [-1, 0, 3] {
            var want = Tensor(zeros: [n, c])
            for r in 0..<n {
                let valid = offset < 0 ? c : min(c, offset + r + 1)
                let mx = (0..<valid).map { Double(x[r * c + $0]) }.max()!
                let s = (0..<valid).map { exp(Double(x[r * c + $0]) - mx) }.reduce(0, +)
                for j in 0..<valid { want[r * c + j] = Float(exp(Double(x[r * c + j]) - mx) / s) }
            }
            forEachISA { isa in
                var y = x
                y.withMutablePointer { pt_softmax_rows($0, n, c, offset) }
                assertClose(y, want, atol: 1e-7, rtol: 2e-6, "softmax offset \(offset) \(isa)")
                // Masked entries are exactly zero.
                if offset >= 0 { XCTAssertEqual(y[c - 1], 0) }
            }
        }
    }

    func testQuickGELUAndExpAcrossRange() {
        let x = Tensor(shape: [200], data: (0..<200).map { Float($0 - 100) * 0.9 })  // -90 ... 89
        let want = Tensor(shape: [200], data: x.data.map { Float(Double($0) / (1 + exp(-1.702 * Double($0)))) })
        forEachISA { isa in assertClose(QuickGELU.forward(x), want, atol: 1e-6, rtol: 2e-6, "quickgelu \(isa)") }
    }

    func testL2NormalizeGivesUnitRows() {
        var rng = SeededGenerator(seed: 6)
        let x = Tensor.randomNormal([4, 33], using: &rng)
        let (y, cache) = L2Normalize.forward(x)
        for r in 0..<4 {
            let norm = (0..<33).map { Double(y[r * 33 + $0]) * Double(y[r * 33 + $0]) }.reduce(0, +)
            XCTAssertEqual(norm, 1, accuracy: 1e-6)
            let xn = (0..<33).map { Double(x[r * 33 + $0]) * Double(x[r * 33 + $0]) }.reduce(0, +).squareRoot()
            XCTAssertEqual(Double(cache.norms[r]), xn, accuracy: 1e-5 * xn)
        }
    }

    /// Rows whose sum of squares leaves float's range: huge ones (features of a 5e37 weight) used to
    /// overflow to inf and normalise to all zeros, tiny ones to underflow to NaN. Both give unit rows
    /// in the direction of the input; ordinary rows keep the plain path bit for bit.
    func testL2NormalizeIsOverflowSafe() {
        var rng = SeededGenerator(seed: 9)
        let base = Tensor.randomNormal([1, 32], using: &rng)
        let plain = L2Normalize.forward(base).0
        for scale: Float in [1e37, 3e20, 1e-25, 1e-33] {
            let x = Tensor(shape: [1, 32], data: base.data.map { $0 * scale })
            let y = L2Normalize.forward(x).0
            XCTAssertTrue(y.data.allSatisfy(\.isFinite), "scale \(scale)")
            for j in 0..<32 { XCTAssertEqual(y[j], plain[j], accuracy: 1e-5, "scale \(scale), column \(j)") }
        }
        let manual = base.data.map { $0 / base.data.map { $0 * $0 }.reduce(0, +).squareRoot() }
        XCTAssertEqual(plain.data.count, manual.count)
    }
}
