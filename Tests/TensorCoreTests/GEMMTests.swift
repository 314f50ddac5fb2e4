import TensorCore
import TestSupport
import XCTest

final class GEMMTests: XCTestCase {
    /// All four transpose cases, padded leading dimensions, alpha and beta: OpenBLAS equals the naive loops.
    func testAllTransposeCasesWithStridesMatchNaive() {
        // Small (the vectorised loop) and large (OpenBLAS) products, with vector remainders.
        checkTransposeCases(m: 7, n: 5, k: 9)
        checkTransposeCases(m: 3, n: 37, k: 21)
        checkTransposeCases(m: 70, n: 50, k: 90)
        XCTAssertGreaterThan(70 * 50 * 90, smallGEMMLimit)
        XCTAssertLessThan(3 * 37 * 21, smallGEMMLimit)
    }

    func checkTransposeCases(m: Int, n: Int, k: Int) {
        var rng = SeededGenerator(seed: 1)
        for transA in [false, true] {
            for transB in [false, true] {
                let (ar, ac) = transA ? (k, m) : (m, k)
                let (br, bc) = transB ? (n, k) : (k, n)
                let (lda, ldb, ldc) = (ac + 3, bc + 2, n + 4)
                let a = Tensor.randomNormal([ar * lda], using: &rng)
                let b = Tensor.randomNormal([br * ldb], using: &rng)
                let c0 = Tensor.randomNormal([m * ldc], using: &rng)
                var results: [Tensor] = []
                for backend in GEMMBackend.allCases {
                    var c = c0
                    a.withPointer { pa in b.withPointer { pb in c.withMutablePointer { pc in
                        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.7, a: pa, lda: lda,
                             b: pb, ldb: ldb, beta: 0.3, c: pc, ldc: ldc, backend: backend)
                    } } }
                    results.append(c)
                }
                // Every backend equals the naive loops (last); padding columns of C are untouched.
                for (backend, r) in zip(GEMMBackend.allCases, results) {
                    assertClose(r, results.last!, atol: 1e-4, rtol: 1e-5, "\(backend) \(m)x\(n)x\(k) transA=\(transA) transB=\(transB)")
                    for i in 0..<m { for j in n..<ldc { XCTAssertEqual(r[i * ldc + j], c0[i * ldc + j]) } }
                }
            }
        }
    }

    func testNaiveGEMMAgainstHandComputedProduct() {
        let a: [Float] = [1, 2, 3, 4, 5, 6]       // 2 x 3
        let b: [Float] = [7, 8, 9, 10, 11, 12]    // 3 x 2
        var c = [Float](repeating: 0, count: 4)
        naiveGEMM(transA: false, transB: false, m: 2, n: 2, k: 3, alpha: 1, a: a, lda: 3, b: b, ldb: 2,
                  beta: 0, c: &c, ldc: 2)
        XCTAssertEqual(c, [58, 64, 139, 154])
    }

    func testBatchedStridedGEMM() {
        var rng = SeededGenerator(seed: 2)
        let (batch, m, n, k) = (3, 4, 6, 5)
        let a = Tensor.randomNormal([batch, m, k], using: &rng)
        let b = Tensor.randomNormal([batch, n, k], using: &rng)
        var c = Tensor(zeros: [batch, m, n])
        a.withPointer { pa in b.withPointer { pb in c.withMutablePointer { pc in
            batchedGEMM(batch: batch, transB: true, m: m, n: n, k: k, a: pa, lda: k, strideA: m * k,
                        b: pb, ldb: k, strideB: n * k, c: pc, ldc: n, strideC: m * n)
        } } }
        for i in 0..<batch {
            let ai = a.slice(rows: i..<(i + 1)).reshaped([m, k]), bi = b.slice(rows: i..<(i + 1)).reshaped([n, k])
            let want = matmul(ai, bi, transB: true)
            assertClose(c.slice(rows: i..<(i + 1)).reshaped([m, n]), want, atol: 1e-5, "batch \(i)")
        }
    }

    func testMatmulLargeAgreesWithNaive() {
        var rng = SeededGenerator(seed: 3)
        let a = Tensor.randomNormal([64, 96], using: &rng), b = Tensor.randomNormal([96, 80], using: &rng)
        let fast = matmul(a, b)
        let slow = CPUBackend(gemm: .naive).matmul(a, b)
        assertClose(fast, slow, atol: 1e-4, rtol: 1e-5, "64x96x80")
    }
}
