import CKernels
import COpenBLAS

/// Which matrix multiply runs: OpenBLAS, or the naive loops kept as reference and fallback.
public enum GEMMBackend: String, Sendable, CaseIterable {
    case openBLAS
    case naive
}

/// Process-wide compute settings. Kept small so that another backend can slot in behind it.
public enum Compute {
    nonisolated(unsafe) public static var gemmBackend: GEMMBackend = .openBLAS

    /// Threads for compute: OpenBLAS's pool, and the workers of the per-head attention loops.
    public static var threads: Int {
        get { configuredThreads }
        set {
            configuredThreads = max(1, newValue)
            openblas_set_num_threads(Int32(configuredThreads))
        }
    }
    nonisolated(unsafe) private static var configuredThreads = Int(openblas_get_num_threads())

    /// Runs `body` with OpenBLAS limited to one thread, for loops that parallelise over many
    /// small GEMMs themselves.
    public static func withSingleThreadedGEMM<R>(_ body: () throws -> R) rethrows -> R {
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(configuredThreads)) }
        return try body()
    }
}

/// C = alpha * op(A) * op(B) + beta * C, row-major with leading dimensions (elements per row).
/// op(A) is m x k, op(B) is k x n, C is m x n.
@inlinable
public func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                 alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int,
                 backend: GEMMBackend = Compute.gemmBackend) {
    if m == 0 || n == 0 { return }
    switch backend {
    case .openBLAS where m * n * k <= smallGEMMLimit:
        // A BLAS call costs microseconds before any arithmetic; attention over a few tokens makes
        // tens of thousands of such products per step, so they run in a plain vectorised loop.
        pt_gemm_small(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    case .openBLAS:
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    case .naive:
        naiveGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                  b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }
}

/// The textbook triple loop with the same contract as `gemm`. Accumulates in Double.
public func naiveGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    for i in 0..<m {
        for j in 0..<n {
            var s: Double = 0
            for p in 0..<k {
                let av = transA ? a[p * lda + i] : a[i * lda + p]
                let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                s += Double(av) * Double(bv)
            }
            let prior = beta == 0 ? 0 : beta * c[i * ldc + j]
            c[i * ldc + j] = alpha * Float(s) + prior
        }
    }
}

/// Products of at most this many multiply-adds skip OpenBLAS (see `gemm`).
public let smallGEMMLimit = 48 * 48 * 64

/// `batch` independent products whose operands sit at fixed strides (elements) from each other.
@inlinable
public func batchedGEMM(batch: Int, transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, strideA: Int,
                        b: UnsafePointer<Float>, ldb: Int, strideB: Int,
                        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int,
                        backend: GEMMBackend = Compute.gemmBackend) {
    for i in 0..<batch {
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
             a: a + i * strideA, lda: lda, b: b + i * strideB, ldb: ldb,
             beta: beta, c: c + i * strideC, ldc: ldc, backend: backend)
    }
}

/// Tensor-level matrix product of 2-D tensors: op(a) @ op(b).
public func matmul(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) -> Tensor {
    precondition(a.rank == 2 && b.rank == 2, "matmul needs 2-D tensors, got \(a.shape) and \(b.shape)")
    let m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1]
    let kb = transB ? b.shape[1] : b.shape[0], n = transB ? b.shape[0] : b.shape[1]
    precondition(k == kb, "matmul: inner sizes differ (\(a.shape) x \(b.shape))")
    var out = Tensor(zeros: [m, n])
    a.withPointer { pa in b.withPointer { pb in out.withMutablePointer { pc in
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: pa, lda: a.shape[1], b: pb, ldb: b.shape[1],
             c: pc, ldc: n)
    } } }
    return out
}
