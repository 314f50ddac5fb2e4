import TensorCore
import TestSupport
import XCTest

/// oneDNN behind `Linear` (prepacked weights, bf16), OpenBLAS's kernel check, and the diagnostics.
final class GEMMBackendTests: XCTestCase {
    /// Normwise relative error of y against x W^T + b computed in Double.
    func relativeError(_ y: Tensor, _ x: Tensor, _ l: Linear) -> Double { l.referenceError(of: y, input: x) }

    func randomLinear(_ out: Int, _ inp: Int, bias: Bool, _ rng: inout SeededGenerator) -> Linear {
        Linear(weight: Tensor.randomNormal([out, inp], std: 0.05, using: &rng),
               bias: bias ? Tensor.randomNormal([out], using: &rng) : nil)
    }

    func testOneDNNIsTheDefaultAndExactFP32() throws {
        let backend = try XCTUnwrap(defaultBackend as? CPUBackend)
        XCTAssertEqual(backend.gemm, .oneDNN)
        XCTAssertEqual(backend.precision, .fp32)
        XCTAssertEqual(backend.name, "cpu onednn fp32")
        var rng = SeededGenerator(seed: 2)
        for bias in [true, false] {
            let l = randomLinear(96, 80, bias: bias, &rng)
            let x = Tensor.randomNormal([70, 80], using: &rng)
            let y = l.forward(x)
            XCTAssertLessThan(relativeError(y, x, l), 1e-5, "bias \(bias)")
            XCTAssertGreaterThan(l.packed.bytes, 0, "the forward packed the weight")
            // Input gradient (fp32 reads the plain weight) equals the naive backend.
            let dy = Tensor.randomNormal([70, 96], using: &rng)
            var dx = Tensor.randomNormal([70, 80], using: &rng), dxNaive = dx
            var none: Linear.Grads? = nil
            l.backward(dy, input: x, dx: &dx, grads: &none)
            var naive = l
            naive.backend = CPUBackend(gemm: .naive)
            naive.backward(dy, input: x, dx: &dxNaive, grads: &none)
            assertClose(dx, dxNaive, atol: 1e-4, rtol: 1e-5, "input gradient")
        }
    }

    func testChangingTheWeightDropsThePackedCopy() {
        var rng = SeededGenerator(seed: 3)
        var l = randomLinear(64, 72, bias: true, &rng)
        let x = Tensor.randomNormal([40, 72], using: &rng)
        _ = l.forward(x)
        XCTAssertGreaterThan(l.packed.bytes, 0)
        l.weight.withMutablePointer { $0[5] += 1 }
        XCTAssertEqual(l.packed.bytes, 0)
        XCTAssertLessThan(relativeError(l.forward(x), x, l), 1e-5, "the new weight is used")
        // A copy keeps its own weight and packed copy.
        var copy = l
        copy.weight = Tensor.randomNormal([64, 72], using: &rng)
        XCTAssertLessThan(relativeError(l.forward(x), x, l), 1e-5)
        XCTAssertLessThan(relativeError(copy.forward(x), x, copy), 1e-5)
    }

    /// A 64 x 64 square weight: forward (W^T) and input-gradient (W) layouts must not be mixed up.
    func testSquareWeightForwardAndBackwardUseTheirOwnLayouts() {
        var rng = SeededGenerator(seed: 4)
        let l = randomLinear(64, 64, bias: false, &rng)
        let x = Tensor.randomNormal([50, 64], using: &rng), dy = Tensor.randomNormal([50, 64], using: &rng)
        var dx = Tensor(zeros: [50, 64]), none: Linear.Grads? = nil
        for _ in 0..<2 {
            _ = l.forward(x)
            dx = Tensor(zeros: [50, 64])
            l.backward(dy, input: x, dx: &dx, grads: &none)
        }
        XCTAssertLessThan(relativeError(l.forward(x), x, l), 1e-5)
        let lt = Linear(weight: l.weight.transposed(), bias: nil)  // dx = dy W = dy (W^T)^T
        XCTAssertLessThan(relativeError(dx, dy, lt), 1e-5)
    }

    func testBF16IsCloseOrRefused() throws {
        guard CPU.hasBF16 else {
            assertThrows(try CPUBackend.default.with(precision: .bf16), contains: ["bf16 needs a CPU with AVX-512 BF16", "refused"])
            return
        }
        guard CPUBackend.default.canRunBF16 else {
            // bf16 hardware, but oneDNN runs below it (e.g. ONEDNN_MAX_CPU_ISA=AVX2): refused, not run as fp32.
            assertThrows(try CPUBackend.default.with(precision: .bf16), contains: ["no bf16 kernel", "use fp32"])
            return
        }
        var rng = SeededGenerator(seed: 5)
        var l = randomLinear(128, 256, bias: true, &rng)
        let x = Tensor.randomNormal([100, 256], using: &rng)
        l.backend = try CPUBackend.default.with(precision: .bf16)
        let y = l.forward(x)
        let e = relativeError(y, x, l)
        XCTAssertLessThan(e, 1e-2, "bf16 inputs, fp32 accumulation")
        XCTAssertGreaterThan(e, 1e-5, "the product really ran in bf16")
        // The backend is the layer's: another layer, and the default, stay fp32.
        let fp32 = randomLinear(128, 256, bias: true, &rng)
        XCTAssertLessThan(relativeError(fp32.forward(x), x, fp32), 1e-5)
        XCTAssertEqual(defaultBackend.precision, .fp32)
        assertThrows(try CPUBackend(gemm: .openBLAS).with(precision: .bf16), contains: ["oneDNN"])
    }

    /// Debian's OpenBLAS picks Prescott (SSE3) on CPUs it does not know; re-running its dispatch
    /// with the right core repairs it, in-process. Here the misdetection is imitated by selecting
    /// Prescott, then the check's repair is applied; results equal the fp32 reference throughout.
    func testOpenBLASCoreCanBeReselected() throws {
        let original = OpenBLASCheck.status.current
        defer { OpenBLASCheck.select(core: original) }
        var rng = SeededGenerator(seed: 6)
        var l = randomLinear(96, 128, bias: true, &rng)
        let x = Tensor.randomNormal([90, 128], using: &rng)
        l.backend = CPUBackend(gemm: .openBLAS)
        let weak = OpenBLASCheck.select(core: "PRESCOTT")
        guard weak.current.lowercased() == "prescott" else {
            throw XCTSkip("this OpenBLAS has no dynamic dispatch (core \(weak.current))")
        }
        XCTAssertLessThan(relativeError(l.forward(x), x, l), 1e-5)
        let repaired = OpenBLASCheck.select(core: nil)
        XCTAssertNotEqual(repaired.current.lowercased(), "prescott")
        XCTAssertLessThan(relativeError(l.forward(x), x, l), 1e-5)
    }

    func testDiagnosticsNameTheKernels() {
        let d = GEMMDiagnostics.current()
        XCTAssertEqual(d.backend, .oneDNN)
        XCTAssertTrue(d.oneDNN.hasPrefix("2."), d.oneDNN)
        XCTAssertFalse(d.oneDNNKernel.hasPrefix("none"), d.oneDNNKernel)
        XCTAssertTrue(d.gemmLine.hasPrefix("onednn fp32"), d.gemmLine)
        // The kernel matches the ISA oneDNN runs at (the CPU's, unless ONEDNN_MAX_CPU_ISA limits it).
        if d.oneDNN.contains("avx512") { XCTAssertTrue(d.oneDNNKernel.contains("avx512"), d.oneDNNKernel) }
    }
}
