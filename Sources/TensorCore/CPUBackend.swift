import CKernels
import Foundation

/// The CPU backend: products on oneDNN (or OpenBLAS, or the naive reference loops), everything
/// else in CKernels' vector loops (AVX-512 where the CPU has it, portable C otherwise). A frozen
/// weight's backend copy is oneDNN's packed layout (`PackedWeight`), made at first use.
public struct CPUBackend: ComputeBackend {
    /// Which library runs the products.
    public let gemm: GEMMBackend
    public let precision: Precision

    /// fp32 products on `gemm`.
    public init(gemm: GEMMBackend = CPUBackend.defaultGEMM) {
        self.gemm = gemm
        self.precision = .fp32
    }

    /// `PROMPTTUNE_GEMM=onednn|openblas|naive` when set; otherwise oneDNN when its engine starts
    /// (see docs/BENCHMARKS.md for the measurements behind the default).
    public static let defaultGEMM: GEMMBackend = {
        if let env = ProcessInfo.processInfo.environment["PROMPTTUNE_GEMM"], let b = GEMMBackend(rawValue: env.lowercased()) {
            return b
        }
        return OneDNN.isAvailable ? .oneDNN : .openBLAS
    }()

    public static let `default` = CPUBackend()

    public var name: String { "cpu \(gemm.rawValue) \(precision.rawValue)" }

    /// Whether bf16 products are accepted here (bf16 hardware, the oneDNN library, and a oneDNN
    /// bf16 kernel).
    public var canRunBF16: Bool { CPU.hasBF16 && gemm == .oneDNN && OneDNN.hasBF16Kernel }

    /// The same backend with products in `precision`; bf16 is refused on CPUs without bf16
    /// hardware, on libraries other than oneDNN, and where oneDNN has no bf16 kernel (its products
    /// would otherwise fall back to fp32 unnoticed).
    public func with(precision p: Precision) throws -> CPUBackend {
        if p == .bf16 {
            guard CPU.hasBF16 else { throw ComputeError.bf16Unsupported(cpu: CPU.featureSummary) }
            guard gemm == .oneDNN, OneDNN.isAvailable else { throw ComputeError.bf16NeedsOneDNN(gemm) }
            guard OneDNN.hasBF16Kernel else { throw ComputeError.bf16NoKernel(isa: OneDNN.isa) }
        }
        return CPUBackend(gemm: gemm, precision: p)
    }

    public func withPrecision(_ p: Precision) throws -> any ComputeBackend { try with(precision: p) }

    private init(gemm: GEMMBackend, precision: Precision) {
        self.gemm = gemm
        self.precision = precision
    }

    // MARK: Storage

    /// Host memory; zero-filled whether or not `zeroed` asks for it (a fresh page costs the same).
    public func makeTensor(_ shape: [Int], zeroed: Bool) -> Tensor { Tensor(zeros: shape) }

    // MARK: Products

    public func matmul(_ a: Tensor, _ b: Tensor, transA: Bool, transB: Bool, alpha: Float, beta: Float, into c: inout Tensor) {
        precondition(a.rank == 2 && b.rank == 2, "matmul needs 2-D tensors, got \(a.shape) and \(b.shape)")
        let m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1]
        let kb = transB ? b.shape[1] : b.shape[0], n = transB ? b.shape[0] : b.shape[1]
        precondition(k == kb && c.count == m * n, "matmul: \(a.shape) x \(b.shape) into \(c.shape)")
        a.withPointer { pa in b.withPointer { pb in c.withMutablePointer { pc in
            TensorCore.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: pa, lda: a.shape[1],
                            b: pb, ldb: b.shape[1], beta: beta, c: pc, ldc: n, backend: gemm)
        } } }
    }

    /// oneDNN product with the weight: forward (y = x W^T + b) or input gradient (dx += dy W).
    /// False when it does not apply (another library, a small product) or oneDNN declined.
    private func oneDNNProduct(forward: Bool, rows n: Int, inFeatures: Int, outFeatures: Int, a: UnsafePointer<Float>,
                               w: UnsafePointer<Float>, bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>,
                               packed: PackedWeight) -> Bool {
        guard gemm == .oneDNN, n * inFeatures * outFeatures > smallGEMMLimit else { return false }
        let bf16 = precision == .bf16
        // fp32 input gradients read the plain weight; the other products a packed copy.
        let pack = forward || bf16
        let p = forward
            ? OneDNN.Problem(m: n, n: outFeatures, k: inFeatures, lda: inFeatures, ldb: inFeatures, ldc: outFeatures,
                             transA: false, transB: true, alpha: 1, beta: 0, bias: bias != nil, bf16: bf16, packedB: pack)
            : OneDNN.Problem(m: n, n: inFeatures, k: outFeatures, lda: outFeatures, ldb: inFeatures, ldc: inFeatures,
                             transA: false, transB: false, alpha: 1, beta: 1, bias: false, bf16: bf16, packedB: pack)
        return OneDNN.run(p, a: a, b: w, bias: bias, c: c, packed: packed)
    }

    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, packed: PackedWeight, into y: inout Tensor) {
        let (n, outF, inF) = (x.rows, weight.shape[0], weight.shape[1])
        let done = y.withMutablePointer { py in x.withPointer { px in weight.withPointer { pw in
            if let bias {
                return bias.withPointer { pb in
                    oneDNNProduct(forward: true, rows: n, inFeatures: inF, outFeatures: outF, a: px, w: pw, bias: pb, c: py, packed: packed)
                }
            }
            return oneDNNProduct(forward: true, rows: n, inFeatures: inF, outFeatures: outF, a: px, w: pw, bias: nil, c: py, packed: packed)
        } } }
        if done { return }
        y.withMutablePointer { py in
            if let bias { bias.withPointer { pb in pt_broadcast_rows(py, pb, n, outF) } }
            x.withPointer { px in weight.withPointer { pw in
                TensorCore.gemm(transB: true, m: n, n: outF, k: inF, a: px, lda: inF, b: pw, ldb: inF,
                                beta: bias == nil ? 0 : 1, c: py, ldc: outF, backend: gemm)
            } }
        }
    }

    public func linearInputGradient(_ dy: Tensor, weight: Tensor, packed: PackedWeight, dx: inout Tensor) {
        let (n, outF, inF) = (dy.rows, weight.shape[0], weight.shape[1])
        dy.withPointer { pdy in dx.withMutablePointer { pdx in weight.withPointer { pw in
            if oneDNNProduct(forward: false, rows: n, inFeatures: inF, outFeatures: outF, a: pdy, w: pw, bias: nil, c: pdx,
                             packed: packed) { return }
            TensorCore.gemm(m: n, n: inF, k: outF, a: pdy, lda: outF, b: pw, ldb: inF, beta: 1, c: pdx, ldc: inF, backend: gemm)
        } } }
    }

    // MARK: Row-wise layers

    public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, into y: inout Tensor,
                          mean: inout Tensor, rstd: inout Tensor) {
        let (n, c) = (x.rows, x.lastDim)
        y.withMutablePointer { py in x.withPointer { px in weight.withPointer { pw in bias.withPointer { pb in
            mean.withMutablePointer { pm in rstd.withMutablePointer { pr in
                pt_layernorm_forward(py, pm, pr, px, pw, pb, n, c, eps)
            } }
        } } } }
    }

    public func layerNormBackward(_ dy: Tensor, input x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor,
                                  dx: inout Tensor, dWeight: inout Tensor?, dBias: inout Tensor?) {
        let (n, c) = (dy.rows, dy.lastDim)
        let hasGrads = dWeight != nil && dBias != nil
        var gw = dWeight ?? Tensor(zeros: [0]), gb = dBias ?? Tensor(zeros: [0])
        dx.withMutablePointer { pdx in dy.withPointer { pdy in x.withPointer { px in
            weight.withPointer { pw in gw.withMutablePointer { pgw in gb.withMutablePointer { pgb in
                mean.withPointer { pm in rstd.withPointer { pr in
                    pt_layernorm_backward(pdx, hasGrads ? pgw : nil, hasGrads ? pgb : nil, pdy, px, pw, pm, pr, n, c)
                } }
            } } }
        } } }
        if hasGrads { dWeight = gw; dBias = gb }
    }

    public func softmaxRows(_ x: inout Tensor, columns: Int, causalOffset: Int) {
        let rows = columns == 0 ? 0 : x.count / columns
        x.withMutablePointer { p in pt_softmax_rows(p, rows, columns, causalOffset) }
    }

    public func quickGELU(_ x: Tensor, into y: inout Tensor) {
        y.withMutablePointer { py in x.withPointer { px in pt_quickgelu_forward(py, px, x.count) } }
    }

    public func quickGELUBackward(_ dy: Tensor, input x: Tensor, dx: inout Tensor) {
        dx.withMutablePointer { pdx in x.withPointer { px in dy.withPointer { pdy in
            pt_quickgelu_backward(pdx, px, pdy, x.count)
        } } }
    }

    public func l2Normalize(_ x: Tensor, into y: inout Tensor, norms: inout Tensor) {
        y.withMutablePointer { py in x.withPointer { px in norms.withMutablePointer { pn in
            pt_l2norm_forward(py, pn, px, x.rows, x.lastDim)
        } } }
    }

    public func l2NormalizeBackward(_ dy: Tensor, output y: Tensor, norms: Tensor, dx: inout Tensor) {
        dx.withMutablePointer { pdx in dy.withPointer { pdy in y.withPointer { py in norms.withPointer { pn in
            pt_l2norm_backward(pdx, pdy, py, pn, dy.rows, dy.lastDim)
        } } } }
    }

    // MARK: fp16 values

    public func roundToHalf(_ x: inout Tensor) { x.roundToHalf() }

    // CLIP's `x * torch.sigmoid(1.702 * x)` on fp16 tensors is three ops, each rounded to fp16:
    // t = fp16(1.702 x), s = fp16(sigmoid(t)), y = fp16(x s). The backward is autograd's through
    // them: fp16(dy s) + fp16(fp16(fp16(dy x) (1 - s) s) 1.702), summed and rounded, with CUDA's
    // sigmoid backward (one rounding; PyTorch's CPU kernel rounds each of its three ops).

    public func quickGELUHalf(_ x: Tensor, into y: inout Tensor) {
        var s = Self.halfSigmoid(x)
        for i in 0..<x.count { s[i] = x[i] * s[i] }
        s.roundToHalf()
        y.withMutablePointer { py in s.withPointer { ps in py.update(from: ps, count: s.count) } }
    }

    public func quickGELUHalfBackward(_ dy: Tensor, input x: Tensor, dx: inout Tensor) {
        let s = Self.halfSigmoid(x)
        var direct = Tensor(zeros: x.shape), ds = Tensor(zeros: x.shape)
        for i in 0..<x.count { direct[i] = dy[i] * s[i]; ds[i] = dy[i] * x[i] }
        direct.roundToHalf(); ds.roundToHalf()
        for i in 0..<x.count { ds[i] = ds[i] * (1 - s[i]) * s[i] }  // sigmoid_backward
        ds.roundToHalf()
        for i in 0..<x.count { ds[i] *= 1.702 }
        ds.roundToHalf()
        for i in 0..<x.count { direct[i] += ds[i] }
        direct.roundToHalf()
        add(direct, to: &dx)
    }

    /// fp16(sigmoid(fp16(1.702 x))).
    static func halfSigmoid(_ x: Tensor) -> Tensor {
        var t = x
        for i in 0..<t.count { t[i] *= 1.702 }
        t.roundToHalf()
        for i in 0..<t.count { t[i] = 1 / (1 + exp(-t[i])) }
        t.roundToHalf()
        return t
    }

    // MARK: Element-wise and layout

    public func add(_ x: Tensor, to y: inout Tensor) {
        let n = y.count
        precondition(n == x.count, "add: \(y.shape) += \(x.shape)")
        y.withMutablePointer { p in x.withPointer { q in pt_accumulate(p, q, n) } }
    }

    public func axpy(_ alpha: Float, _ x: Tensor, _ y: inout Tensor) {
        let n = y.count
        precondition(n == x.count, "axpy: \(y.shape) += a \(x.shape)")
        y.withMutablePointer { p in x.withPointer { q in pt_axpy(p, alpha, q, n) } }
    }

    public func addBroadcast(_ block: Tensor, to x: inout Tensor) {
        let n = block.count
        precondition(n > 0 && x.count % n == 0, "addBroadcast: \(x.shape) is not a whole number of \(block.shape) blocks")
        let blocks = x.count / n
        x.withMutablePointer { p in block.withPointer { q in
            for i in 0..<blocks { pt_accumulate(p + i * n, q, n) }
        } }
    }

    public func columnSums(_ x: Tensor, accumulating out: inout Tensor) {
        let d = x.lastDim
        precondition(out.count == d, "columnSums: \(x.shape) into \(out.shape)")
        out.withMutablePointer { po in x.withPointer { px in pt_colsum_accumulate(po, px, x.rows, d) } }
    }

    public func gatherRows(_ x: Tensor, _ rows: [Int], into out: inout Tensor) {
        let c = x.lastDim, n = x.rows
        precondition(out.count == rows.count * c, "gatherRows: \(rows.count) rows of \(c) into \(out.shape)")
        out.withMutablePointer { po in x.withPointer { px in
            for (r, i) in rows.enumerated() {
                precondition(i >= 0 && i < n, "gatherRows: index \(i) out of range 0..<\(n)")
                (po + r * c).update(from: px + i * c, count: c)
            }
        } }
    }

    public func scatterAddRows(_ src: Tensor, rows: [Int], into dst: inout Tensor) {
        let c = dst.lastDim, n = dst.rows
        precondition(src.rows == rows.count && src.lastDim == c, "scatterAddRows: \(src.shape) into rows \(rows.count) of width \(c)")
        dst.withMutablePointer { p in src.withPointer { q in
            for (i, r) in rows.enumerated() {
                precondition(r >= 0 && r < n, "scatterAddRows: row \(r) out of range 0..<\(n)")
                pt_accumulate(p + r * c, q + i * c, c)
            }
        } }
    }

    public func copyRows(_ src: Tensor, into dst: inout Tensor, spans: [RowSpan], accumulate: Bool) {
        let c = dst.lastDim
        precondition(src.lastDim == c, "copyRows: rows of \(src.shape) into \(dst.shape)")
        let (srcRows, dstRows, dstShape) = (src.count / max(1, c), dst.rows, dst.shape)
        dst.withMutablePointer { pd in src.withPointer { ps in
            for s in spans {
                precondition(s.count >= 0 && s.source >= 0 && s.source + s.count <= srcRows
                             && s.target >= 0 && s.target + s.count <= dstRows,
                             "copyRows: \(s.count) rows \(s.source) -> \(s.target) of \(src.shape) into \(dstShape)")
                if accumulate {
                    pt_accumulate(pd + s.target * c, ps + s.source * c, s.count * c)
                } else {
                    (pd + s.target * c).update(from: ps + s.source * c, count: s.count * c)
                }
            }
        } }
    }

    public func patchify(_ pixels: Tensor, patchSize p: Int, into out: inout Tensor) {
        let (b, r) = (pixels.shape[0], pixels.shape[2])
        let g = r / p, cols = 3 * p * p
        precondition(pixels.rank == 4 && pixels.shape[1] == 3 && pixels.shape[3] == r && out.count == b * g * g * cols,
                     "patchify: \(pixels.shape) in patches of \(p) into \(out.shape)")
        pixels.withPointer { src in out.withMutablePointer { dst in
            for i in 0..<b {
                for gy in 0..<g {
                    for gx in 0..<g {
                        let row = dst + ((i * g + gy) * g + gx) * cols
                        for ch in 0..<3 {
                            for y in 0..<p {
                                let s = src + ((i * 3 + ch) * r + gy * p + y) * r + gx * p
                                (row + (ch * p + y) * p).update(from: s, count: p)
                            }
                        }
                    }
                }
            }
        } }
    }
}
