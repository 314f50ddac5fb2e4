@testable import TensorCore
import TestSupport
import XCTest

/// The per-head attention products run as one oneDNN grid over (sequence, head) when every
/// sequence has one length and the products are large (an image tower): same results as the
/// per-head loops.
final class AttentionGridTests: XCTestCase {

    func testGridGEMMMatchesNaiveForEveryTranspose() {
        var rng = SeededGenerator(seed: 21)
        // Operands laid out as attention reads them: (sequence, head) grids inside wider rows.
        let (outer, m, n, k) = ((2, 3), 7, 5, 6)
        let ld = 40, rowsPer = 8
        let a = Tensor.randomNormal([outer.0 * rowsPer, ld], using: &rng)
        let b = Tensor.randomNormal([outer.0 * rowsPer, ld], using: &rng)
        let strides = (rowsPer * ld, 9)
        for transA in [false, true] {
            for transB in [false, true] {
                for backend in [GEMMBackend.oneDNN, .openBLAS] {
                    var got = Tensor.randomNormal([outer.0 * outer.1 * m * n], using: &rng)
                    var want = got
                    a.withPointer { pa in b.withPointer { pb in
                        got.withMutablePointer { pc in
                            GridGEMM(outer: outer, transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5,
                                     lda: ld, strideA: strides, ldb: ld, strideB: strides, beta: 0.25, ldc: n,
                                     strideC: (outer.1 * m * n, m * n))
                                .run(a: pa, b: pb + 3, c: pc, backend: backend)
                        }
                        want.withMutablePointer { pc in
                            for i in 0..<outer.0 {
                                for j in 0..<outer.1 {
                                    naiveGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5,
                                              a: pa + i * strides.0 + j * strides.1, lda: ld,
                                              b: pb + 3 + i * strides.0 + j * strides.1, ldb: ld, beta: 0.25,
                                              c: pc + (i * outer.1 + j) * m * n, ldc: n)
                                }
                            }
                        }
                    } }
                    assertClose(got, want, atol: 1e-5, rtol: 1e-5, "transA \(transA) transB \(transB) \(backend)")
                }
            }
        }
    }

    /// Sequences of 50 tokens, head width 64: products of 50 x 50 x 64, above `smallGEMMLimit`.
    func testGridAttentionEqualsPerHeadLoops() {
        var rng = SeededGenerator(seed: 22)
        let (b, t, c, h) = (3, 50, 128, 2)
        XCTAssertGreaterThan(t * t * (c / h), smallGEMMLimit, "the grid path needs products above the small-product limit")
        var attn = MultiheadAttention(inProj: Linear(weight: .randomNormal([3 * c, c], std: 0.2, using: &rng), bias: .randomNormal([3 * c], std: 0.1, using: &rng)),
                                      outProj: Linear(weight: .randomNormal([c, c], std: 0.2, using: &rng), bias: nil), heads: h)
        let x = Tensor.randomNormal([b * t, c], using: &rng), dy = Tensor.randomNormal([b * t, c], using: &rng)
        let layout = SequenceLayout.uniform(batch: b, tokens: t)
        XCTAssertNotNil(CPUBackend(gemm: .oneDNN).attentionGrid(layout, width: c, heads: h))
        XCTAssertNil(CPUBackend(gemm: .openBLAS).attentionGrid(layout, width: c, heads: h))
        let (d, q) = (c / h, (t * 3 * c, c / h)), p = (h * t * t, t * t), ctx = (t * c, c / h)
        let scale: Float = 0.125  // 1 / sqrt(64)
        let products: [GridGEMM] = [  // as MultiheadAttention's forward and backward describe them
            .init(outer: (b, h), transB: true, m: t, n: t, k: d, alpha: scale, lda: 3 * c, strideA: q, ldb: 3 * c, strideB: q, ldc: t, strideC: p),
            .init(outer: (b, h), m: t, n: d, k: t, lda: t, strideA: p, ldb: 3 * c, strideB: q, ldc: c, strideC: ctx),
            .init(outer: (b, h), transB: true, m: t, n: t, k: d, lda: c, strideA: ctx, ldb: 3 * c, strideB: q, ldc: t, strideC: p),
            .init(outer: (b, h), transA: true, m: t, n: d, k: t, lda: t, strideA: p, ldb: c, strideB: ctx, ldc: 3 * c, strideC: q),
            .init(outer: (b, h), m: t, n: d, k: t, alpha: scale, lda: t, strideA: p, ldb: 3 * c, strideB: q, ldc: 3 * c, strideC: q),
            .init(outer: (b, h), transA: true, m: t, n: d, k: t, alpha: scale, lda: t, strideA: p, ldb: 3 * c, strideB: q, ldc: 3 * c, strideC: q),
        ]
        // oneDNN runs the forward's and backward's grid shapes with a kernel (not its reference code),
        // so the comparison below is between the two paths.
        for (i, product) in products.enumerated() where OneDNN.isAvailable { XCTAssertTrue(product.runsOnOneDNN(.oneDNN), "grid product \(i)") }
        for causal in [false, true] {
            func run(_ backend: GEMMBackend) -> (y: Tensor, dx: Tensor, grads: MultiheadAttention.Grads) {
                attn.backend = CPUBackend(gemm: backend)
                let workspace = Workspace()
                let (y, cache) = attn.forward(x, layout: layout, causal: causal, workspace: workspace)
                var dx = Tensor(zeros: x.shape)
                var grads: MultiheadAttention.Grads? = .init(zerosLike: attn)
                attn.backward(dy, cache: cache, dx: &dx, grads: &grads, workspace: workspace)
                return (y, dx, grads!)
            }
            let loops = run(.openBLAS), grid = run(.oneDNN)
            assertClose(grid.y, loops.y, atol: 1e-5, rtol: 1e-5, "output causal=\(causal)")
            assertClose(grid.dx, loops.dx, atol: 1e-4, rtol: 1e-4, "dx causal=\(causal)")  // sums of many terms
            assertClose(grid.grads.inProj.weight, loops.grads.inProj.weight, atol: 1e-4, rtol: 1e-5, "dW_in causal=\(causal)")
            assertClose(grid.grads.inProj.bias!, loops.grads.inProj.bias!, atol: 1e-4, rtol: 1e-5, "db_in causal=\(causal)")
            assertClose(grid.grads.outProj.weight, loops.grads.outProj.weight, atol: 1e-4, rtol: 1e-5, "dW_out causal=\(causal)")
        }
    }

    /// A bf16 grid reads both operands rounded to bfloat16 (to nearest even) and accumulates in
    /// fp32: equal, to fp32 accumulation error, to the product of the rounded operands.
    func testBF16GridReadsRoundedOperands() throws {
        guard CPUBackend(gemm: .oneDNN).canRunBF16 else { throw XCTSkip("no bf16 hardware or no oneDNN bf16 kernel here") }
        var rng = SeededGenerator(seed: 23)
        for outer in [(2, 3), (1, 1)] {  // a grid of one product too
            let (m, n, k, ld, rowsPer) = (50, 50, 64, 3 * 64 * 3, 50)
            let a = Tensor.randomNormal([outer.0 * rowsPer, ld], using: &rng), b = Tensor.randomNormal([outer.0 * rowsPer, ld], using: &rng)
            func rounded(_ t: Tensor) -> Tensor {
                Tensor(shape: t.shape, data: t.data.map { v in
                    let bits = v.bitPattern
                    return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
                })
            }
            let (ra, rb) = (rounded(a), rounded(b))
            let strides = (rowsPer * ld, 64)
            func product(bf16: Bool) -> GridGEMM {
                GridGEMM(outer: outer, transB: true, m: m, n: n, k: k, alpha: 0.125, lda: ld, strideA: strides,
                         ldb: ld, strideB: strides, ldc: n, strideC: (outer.1 * m * n, m * n), bf16: bf16)
            }
            var got = Tensor(zeros: [outer.0 * outer.1 * m * n]), want = got
            a.withPointer { pa in b.withPointer { pb in got.withMutablePointer { pc in product(bf16: true).run(a: pa, b: pb, c: pc, backend: .oneDNN) } } }
            ra.withPointer { pa in rb.withPointer { pb in want.withMutablePointer { pc in
                product(bf16: false).run(a: pa, b: pb, c: pc, backend: .naive)
            } } }
            assertClose(got, want, atol: 1e-5, rtol: 1e-5, "bf16 grid vs rounded operands, grid \(outer)")
            XCTAssertTrue(product(bf16: true).runsOnOneDNN(.oneDNN))
        }
    }

    /// Under bf16 a tower-like attention (grid path) stays close to fp32.
    func testBF16GridAttentionIsCloseToFP32() throws {
        guard CPUBackend(gemm: .oneDNN).canRunBF16 else { throw XCTSkip("no bf16 hardware or no oneDNN bf16 kernel here") }
        var rng = SeededGenerator(seed: 24)
        let (b, t, c, h) = (2, 50, 128, 2)
        var attn = MultiheadAttention(inProj: Linear(weight: .randomNormal([3 * c, c], std: 0.05, using: &rng), bias: nil),
                                      outProj: Linear(weight: .randomNormal([c, c], std: 0.05, using: &rng), bias: nil), heads: h)
        let x = Tensor.randomNormal([b * t, c], using: &rng)
        let layout = SequenceLayout.uniform(batch: b, tokens: t)
        attn.backend = CPUBackend(gemm: .oneDNN)
        let fp32 = attn.forward(x, layout: layout, causal: false).0
        attn.backend = try CPUBackend(gemm: .oneDNN).with(precision: .bf16)
        let half = attn.forward(x, layout: layout, causal: false).0
        XCTAssertNotEqual(half, fp32)
        assertClose(half, fp32, atol: 1e-2, rtol: 2e-2, "bf16 grid attention")
    }

    /// Buffers a workspace hands out unzeroed (outputs, scores, context, dqkv) are written in full:
    /// a second round on reused, stale buffers equals a fresh computation, on the grid path, the
    /// per-head path and a shared prefix (whose dqkv must start from zero).
    func testReusedBuffersNeverLeakStaleValues() {
        var rng = SeededGenerator(seed: 25)
        let (c, h) = (128, 2)
        let attn = MultiheadAttention(inProj: Linear(weight: .randomNormal([3 * c, c], std: 0.1, using: &rng), bias: nil),
                                      outProj: Linear(weight: .randomNormal([c, c], std: 0.1, using: &rng), bias: nil), heads: h)
        for (layout, causal) in [(SequenceLayout.uniform(batch: 2, tokens: 50), false), (SequenceLayout(lengths: [5, 7, 2]), true),
                                 (SequenceLayout(prefix: 2, lengths: [3, 1, 4]), true)] {
            let workspace = Workspace()
            for round in 0..<2 {
                let x = Tensor.randomNormal([layout.rows, c], using: &rng), dy = Tensor.randomNormal([layout.rows, c], using: &rng)
                var none: MultiheadAttention.Grads? = nil
                let (fresh, freshCache) = attn.forward(x, layout: layout, causal: causal)
                var freshDx = Tensor(zeros: x.shape)
                attn.backward(dy, cache: freshCache, dx: &freshDx, grads: &none)
                var (y, cache) = attn.forward(x, layout: layout, causal: causal, workspace: workspace, keepLinearInputs: false)
                var dx = Tensor(zeros: x.shape)
                attn.backward(dy, cache: cache, dx: &dx, grads: &none, workspace: workspace)
                XCTAssertEqual(y, fresh, "output, \(layout.lengths) round \(round)")
                XCTAssertEqual(dx, freshDx, "dx, \(layout.lengths) round \(round)")
                cache.recycle(into: workspace)
                workspace.recycle(y)
                y = Tensor(zeros: [0])
            }
            XCTAssertGreaterThan(workspace.reused, 0, "the second round reuses the first one's buffers")
        }
    }

    func testParallelRunsEveryWorkerOnce() {
        for workers in [1, 2, 3, 8] {
            let lock = NSLock()
            var seen: [Int] = [], teams = Set<Int>()
            Compute.parallel(workers: workers) { w, team in
                lock.lock(); seen.append(w); teams.insert(team); lock.unlock()
            }
            XCTAssertEqual(teams.count, 1, "one team size per call")
            let team = teams.first!
            XCTAssertTrue((1...workers).contains(team), "team \(team) of at most \(workers)")
            XCTAssertEqual(seen.sorted(), Array(0..<team), "workers \(workers)")
        }
    }
}
