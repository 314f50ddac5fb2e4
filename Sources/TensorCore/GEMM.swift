import CKernels
import COpenBLAS
import Foundation

/// Which library runs a CPU backend's matrix products: oneDNN's matmul (the default: it picks
/// kernels from the CPU's features), OpenBLAS (kept as fallback), or the naive loops kept as
/// reference (`CPUBackend(gemm:)`).
public enum GEMMBackend: String, Sendable, CaseIterable {
    case oneDNN = "onednn"
    case openBLAS = "openblas"
    case naive
}

/// The number format of the inputs of products with a layer's weights (`Linear`) and of the
/// attention products that run as one oneDNN grid (equal-length sequences with large heads: the
/// image tower's; the text tower's per-sequence attention stays fp32). Accumulation, outputs and
/// everything outside those products (layer norm, softmax, residual stream) stay fp32.
public enum Precision: String, Sendable, CaseIterable {
    /// Exact fp32 (the default).
    case fp32
    /// Inputs rounded to bfloat16 (8-bit mantissa), fp32 accumulation: about twice the fp32 speed on
    /// CPUs with AVX-512 BF16 or AMX, relative error about 3e-3 per product. Needs oneDNN.
    case bf16
}

public enum ComputeError: Error, CustomStringConvertible {
    case bf16Unsupported(cpu: String)
    case bf16NeedsOneDNN(GEMMBackend)
    case bf16NoKernel(isa: String)

    public var description: String {
        switch self {
        case .bf16Unsupported(let cpu):
            return "bf16 needs a CPU with AVX-512 BF16 or AMX-BF16 (this one has \(cpu)); emulating it would be slower than fp32, so it is refused: use fp32"
        case .bf16NeedsOneDNN(let b):
            return "bf16 runs on the oneDNN GEMM backend, not \(b.rawValue)"
        case .bf16NoKernel(let isa):
            return "this oneDNN offers no bf16 kernel (it runs at ISA \(isa); ONEDNN_MAX_CPU_ISA, if set, limits it), so bf16 products would run as fp32: use fp32"
        }
    }
}

/// Process-wide compute resources: the threads of the GEMM libraries' pools and of the loops
/// between them. (Which products run, and in which precision, is a backend's: `CPUBackend`.)
public enum Compute {
    /// Threads for compute: the GEMM pools (OpenBLAS's, oneDNN's OpenMP), and the workers of the
    /// per-head attention loops.
    public static var threads: Int {
        get { configuredThreads }
        set {
            configuredThreads = min(max(1, newValue), 1024)   // Int32 and thread pools stay sane whatever a caller passes
            gemmThreads = configuredThreads
            openblas_set_num_threads(Int32(configuredThreads))
        }
    }
    nonisolated(unsafe) private static var configuredThreads: Int = {
        _ = OpenBLASCheck.status  // before OpenBLAS's first use
        return Int(openblas_get_num_threads())
    }()
    /// Threads one GEMM may use now (1 inside `withSingleThreadedGEMM`).
    nonisolated(unsafe) static var gemmThreads = configuredThreads

    /// Runs body(worker, team) on `workers` threads at once (worker 0 on the calling thread) and
    /// returns when every call has: a loop splits its items as `stride(from: worker, by: team)`.
    /// The threads are the GEMMs' own OpenMP pool where it is loaded (so a loop between GEMMs
    /// does not compete with that pool's spin-waiting threads), else Dispatch's.
    public static func parallel(workers: Int, _ body: (_ worker: Int, _ team: Int) -> Void) {
        if workers <= 1 { body(0, 1); return }
        let ran = withoutActuallyEscaping(body) { task -> Bool in
            var task = task
            return withUnsafeMutablePointer(to: &task) { context in
                pt_parallel(workers, { ctx, worker, team in
                    ctx!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(worker), Int(team))
                }, context) != 0
            }
        }
        if !ran { DispatchQueue.concurrentPerform(iterations: workers) { body($0, workers) } }
    }

    /// Runs `body` with GEMMs limited to one thread, for loops that parallelise over many
    /// small GEMMs themselves.
    public static func withSingleThreadedGEMM<R>(_ body: () throws -> R) rethrows -> R {
        openblas_set_num_threads(1)
        gemmThreads = 1
        defer {
            openblas_set_num_threads(Int32(configuredThreads))
            gemmThreads = configuredThreads
        }
        return try body()
    }
}

/// C = alpha * op(A) * op(B) + beta * C, row-major with leading dimensions (elements per row).
/// op(A) is m x k, op(B) is k x n, C is m x n.
public func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                 alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int,
                 backend: GEMMBackend = CPUBackend.defaultGEMM) {
    if m == 0 || n == 0 { return }
    switch backend {
    case .oneDNN where m * n * k <= smallGEMMLimit, .openBLAS where m * n * k <= smallGEMMLimit:
        // A library call costs microseconds before any arithmetic; attention over a few tokens
        // makes tens of thousands of such products per step, so they run in a plain vectorised loop.
        pt_gemm_small(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    case .oneDNN:
        let p = OneDNN.Problem(m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, transA: transA, transB: transB,
                               alpha: alpha, beta: beta, bias: false, bf16: false, packedB: false)
        if !OneDNN.run(p, a: a, b: b, bias: nil, c: c, packed: nil) {
            openBLASGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                         b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
    case .openBLAS:
        openBLASGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                     b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    case .naive:
        naiveGEMM(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                  b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }
}

/// `cblas_sgemm` (after the kernel check of `OpenBLASCheck`).
func openBLASGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                  beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    _ = OpenBLASCheck.status
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
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
public func batchedGEMM(batch: Int, transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, strideA: Int,
                        b: UnsafePointer<Float>, ldb: Int, strideB: Int,
                        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int,
                        backend: GEMMBackend = CPUBackend.defaultGEMM) {
    for i in 0..<batch {
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
             a: a + i * strideA, lda: lda, b: b + i * strideB, ldb: ldb,
             beta: beta, c: c + i * strideC, ldc: ldc, backend: backend)
    }
}

/// `outer.0 x outer.1` independent products (e.g. images x heads of attention), described once:
/// product (i, j) reads A at `a + i * strideA.0 + j * strideA.1` (likewise B) and writes C at the
/// same offsets of `c`. On oneDNN one primitive runs the whole grid, its threads splitting the
/// products (`runsOnOneDNN` says whether it will); otherwise `run` loops over `gemm`. With `bf16`,
/// oneDNN reads both operands rounded to bfloat16 (fp32 accumulation and output); the loop stays fp32.
public struct GridGEMM: Sendable {
    let problem: OneDNN.Problem

    public init(outer: (Int, Int), transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                alpha: Float = 1, lda: Int, strideA: (Int, Int), ldb: Int, strideB: (Int, Int),
                beta: Float = 0, ldc: Int, strideC: (Int, Int), bf16: Bool = false) {
        problem = OneDNN.Problem(m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, transA: transA, transB: transB,
                                 alpha: alpha, beta: beta, bias: false, bf16: bf16, packedB: false,
                                 isGrid: true, outer0: outer.0, outer1: outer.1, strideA0: strideA.0, strideA1: strideA.1,
                                 strideB0: strideB.0, strideB1: strideB.1, strideC0: strideC.0, strideC1: strideC.1)
    }

    /// Whether `run` on `backend` is one oneDNN primitive (oneDNN is the library and offers a kernel
    /// other than its reference code for these strides).
    public func runsOnOneDNN(_ backend: GEMMBackend) -> Bool { backend == .oneDNN && OneDNN.matmul(problem) != nil }

    public func run(a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
                    backend: GEMMBackend = CPUBackend.defaultGEMM) {
        let p = problem
        if p.outer0 == 0 || p.outer1 == 0 || p.m == 0 || p.n == 0 { return }
        if backend == .oneDNN, OneDNN.run(p, a: a, b: b, bias: nil, c: c, packed: nil) { return }
        for i in 0..<p.outer0 {
            for j in 0..<p.outer1 {
                gemm(transA: p.transA, transB: p.transB, m: p.m, n: p.n, k: p.k, alpha: p.alpha,
                     a: a + i * p.strideA0 + j * p.strideA1, lda: p.lda, b: b + i * p.strideB0 + j * p.strideB1,
                     ldb: p.ldb, beta: p.beta, c: c + i * p.strideC0 + j * p.strideC1, ldc: p.ldc, backend: backend)
            }
        }
    }
}

/// Tensor-level matrix product of 2-D tensors on the default backend: op(a) @ op(b). For host-side
/// work (losses, heads, analysis); a model's products run on its own backend.
public func matmul(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) -> Tensor {
    defaultBackend.matmul(a, b, transA: transA, transB: transB)
}
