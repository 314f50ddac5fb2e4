import CKernels
import Foundation

// Transformer pieces as forward/backward pairs on 2-D views (rows N = batch * tokens, width C).
// A forward returns its output and a cache of what its backward needs. A backward ACCUMULATES
// into the caller's input gradient `dx` and, when `grads` is non-nil, into parameter gradients;
// pass nil for frozen weights so that only the input gradient is paid for.

// MARK: - Linear

/// y = x W^T + b, with W stored [Out, In] as PyTorch does.
///
/// On the oneDNN backend the products read `packed`: the weight in the kernel's own layout (and in
/// bf16 under `Compute.precision == .bf16`), made at first use and dropped when `weight` changes.
public struct Linear: Sendable {
    public var weight: Tensor {  // Out, In
        didSet { packed = PackedWeight() }
    }
    public var bias: Tensor?   // Out
    public private(set) var packed = PackedWeight()

    public init(weight: Tensor, bias: Tensor?) {
        precondition(weight.rank == 2, "Linear weight must be 2-D, got \(weight.shape)")
        if let bias { precondition(bias.shape == [weight.shape[0]], "Linear bias \(bias.shape) vs weight \(weight.shape)") }
        self.weight = weight
        self.bias = bias
    }

    /// oneDNN product with the weight: forward (y = x W^T + b) or input gradient (dx += dy W).
    /// False when it does not apply (another backend, a small product) or oneDNN declined.
    private func oneDNNProduct(forward: Bool, rows n: Int, a: UnsafePointer<Float>, w: UnsafePointer<Float>,
                               bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>) -> Bool {
        guard Compute.gemmBackend == .oneDNN, n * inFeatures * outFeatures > smallGEMMLimit else { return false }
        let bf16 = Compute.precision == .bf16
        // fp32 input gradients read the plain weight; the other products a packed copy.
        let pack = forward || bf16
        let p = forward
            ? OneDNN.Problem(m: n, n: outFeatures, k: inFeatures, lda: inFeatures, ldb: inFeatures, ldc: outFeatures,
                             transA: false, transB: true, alpha: 1, beta: 0, bias: bias != nil, bf16: bf16, packedB: pack)
            : OneDNN.Problem(m: n, n: inFeatures, k: outFeatures, lda: outFeatures, ldb: inFeatures, ldc: inFeatures,
                             transA: false, transB: false, alpha: 1, beta: 1, bias: false, bf16: bf16, packedB: pack)
        return OneDNN.run(p, a: a, b: w, bias: bias, c: c, packed: packed)
    }

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    public struct Grads: Sendable {
        public var weight: Tensor
        public var bias: Tensor?
        public init(zerosLike l: Linear) {
            weight = Tensor(zeros: l.weight.shape)
            bias = l.bias.map { Tensor(zeros: $0.shape) }
        }
    }

    // x: N, In -> N, Out (the output's storage from `workspace` when given).
    public func forward(_ x: Tensor, workspace: Workspace? = nil) -> Tensor {
        let n = x.rows
        precondition(x.lastDim == inFeatures, "Linear: input width \(x.lastDim), expected \(inFeatures)")
        var y = Workspace.tensor(workspace, Array(x.shape.dropLast()) + [outFeatures], zeroed: false)  // every value written below
        let done = y.withMutablePointer { py in x.withPointer { px in weight.withPointer { pw in
            if let bias { return bias.withPointer { pb in oneDNNProduct(forward: true, rows: n, a: px, w: pw, bias: pb, c: py) } }
            return oneDNNProduct(forward: true, rows: n, a: px, w: pw, bias: nil, c: py)
        } } }
        if done { return y }
        y.withMutablePointer { py in
            if let bias { bias.withPointer { pb in pt_broadcast_rows(py, pb, n, outFeatures) } }
            x.withPointer { px in weight.withPointer { pw in
                gemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: px, lda: inFeatures,
                     b: pw, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: py, ldc: outFeatures)
            } }
        }
        return y
    }

    // dy: N, Out; x: the forward input N, In; dx: N, In (accumulated). `x` is read only for the
    // weight gradient: with `grads` nil it may be an empty placeholder.
    public func backward(_ dy: Tensor, input x: Tensor, dx: inout Tensor, grads: inout Grads?) {
        let n = dy.rows
        dy.withPointer { pdy in
            dx.withMutablePointer { pdx in weight.withPointer { pw in
                if oneDNNProduct(forward: false, rows: n, a: pdy, w: pw, bias: nil, c: pdx) { return }
                gemm(m: n, n: inFeatures, k: outFeatures, a: pdy, lda: outFeatures, b: pw, ldb: inFeatures,
                     beta: 1, c: pdx, ldc: inFeatures)
            } }
            guard grads != nil else { return }
            x.withPointer { px in grads!.weight.withMutablePointer { pgw in
                gemm(transA: true, m: outFeatures, n: inFeatures, k: n, a: pdy, lda: outFeatures,
                     b: px, ldb: inFeatures, beta: 1, c: pgw, ldc: inFeatures)
            } }
            if grads!.bias != nil {
                grads!.bias!.withMutablePointer { pgb in pt_colsum_accumulate(pgb, pdy, n, outFeatures) }
            }
        }
    }
}

extension Linear {
    /// Largest |y - ref| over largest |ref|, ref = x W^T + b computed in Double: how far a forward's
    /// output `y` (N x Out) for input `x` (N x In) is from the exact product, read on every
    /// `rowStep`-th row. A check for backends and precisions (`bench gemm`, the GEMM tests).
    public func referenceError(of y: Tensor, input x: Tensor, rowStep: Int = 1) -> Double {
        let (k, n) = (inFeatures, outFeatures)
        var worst = 0.0, scale = 0.0
        for r in stride(from: 0, to: x.rows, by: max(1, rowStep)) {
            for j in 0..<n {
                var s = Double(bias?[j] ?? 0)
                for p in 0..<k { s += Double(x[r * k + p]) * Double(weight[j * k + p]) }
                worst = max(worst, abs(Double(y[r * n + j]) - s))
                scale = max(scale, abs(s))
            }
        }
        return worst / scale
    }
}

// MARK: - LayerNorm

public struct LayerNorm: Sendable {
    public var weight: Tensor  // C
    public var bias: Tensor    // C
    public var eps: Float

    public init(weight: Tensor, bias: Tensor, eps: Float = 1e-5) {
        precondition(weight.shape == bias.shape && weight.rank == 1, "LayerNorm weight \(weight.shape) / bias \(bias.shape)")
        self.weight = weight
        self.bias = bias
        self.eps = eps
    }

    public struct Cache: Sendable {
        public var input: Tensor
        public var mean: [Float]
        public var rstd: [Float]

        public init(input: Tensor, mean: [Float], rstd: [Float]) {
            self.input = input; self.mean = mean; self.rstd = rstd
        }
    }

    public struct Grads: Sendable {
        public var weight: Tensor
        public var bias: Tensor
        public init(zerosLike l: LayerNorm) {
            weight = Tensor(zeros: l.weight.shape)
            bias = Tensor(zeros: l.bias.shape)
        }
    }

    // x: N, C -> N, C
    public func forward(_ x: Tensor, workspace: Workspace? = nil) -> (Tensor, Cache) {
        let (n, c) = (x.rows, x.lastDim)
        precondition(c == weight.count, "LayerNorm: input width \(c), expected \(weight.count)")
        var y = Workspace.tensor(workspace, x.shape, zeroed: false)  // every value written below
        var mean = [Float](repeating: 0, count: n), rstd = [Float](repeating: 0, count: n)
        y.withMutablePointer { py in x.withPointer { px in weight.withPointer { pw in bias.withPointer { pb in
            pt_layernorm_forward(py, &mean, &rstd, px, pw, pb, n, c, eps)
        } } } }
        return (y, Cache(input: x, mean: mean, rstd: rstd))
    }

    public func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, grads: inout Grads?) {
        let (n, c) = (dy.rows, dy.lastDim)
        let hasGrads = grads != nil
        var gw = grads?.weight ?? Tensor(zeros: [0]), gb = grads?.bias ?? Tensor(zeros: [0])
        dx.withMutablePointer { pdx in dy.withPointer { pdy in cache.input.withPointer { px in
            weight.withPointer { pw in gw.withMutablePointer { pgw in gb.withMutablePointer { pgb in
                pt_layernorm_backward(pdx, hasGrads ? pgw : nil, hasGrads ? pgb : nil, pdy, px, pw,
                                      cache.mean, cache.rstd, n, c)
            } } }
        } } }
        if hasGrads { grads!.weight = gw; grads!.bias = gb }
    }
}

// MARK: - QuickGELU

public enum QuickGELU {
    public static func forward(_ x: Tensor, workspace: Workspace? = nil) -> Tensor {
        var y = Workspace.tensor(workspace, x.shape, zeroed: false)  // every value written below
        y.withMutablePointer { py in x.withPointer { px in pt_quickgelu_forward(py, px, x.count) } }
        return y
    }

    public static func backward(_ dy: Tensor, input x: Tensor, dx: inout Tensor) {
        dx.withMutablePointer { pdx in x.withPointer { px in dy.withPointer { pdy in
            pt_quickgelu_backward(pdx, px, pdy, x.count)
        } } }
    }

    // CLIP's `x * torch.sigmoid(1.702 * x)` on fp16 tensors is three ops, each rounded to fp16:
    // t = fp16(1.702 x), s = fp16(sigmoid(t)), y = fp16(x s). The backward is autograd's through
    // them: fp16(dy s) + fp16(fp16(fp16(dy x) (1 - s) s) 1.702), summed and rounded, with CUDA's
    // sigmoid backward (one rounding; PyTorch's CPU kernel rounds each of its three ops).

    /// The fp16 model's QuickGELU (`ActivationRounding.half`); x holds fp16 values.
    public static func forwardHalf(_ x: Tensor, workspace: Workspace? = nil) -> Tensor {
        var y = Workspace.tensor(workspace, x.shape, zeroed: false)  // every value written below
        var s = halfSigmoid(x)
        for i in 0..<x.count { s[i] = x[i] * s[i] }
        s.roundToHalf()
        y.withMutablePointer { py in s.withPointer { ps in py.update(from: ps, count: s.count) } }
        return y
    }

    /// The backward of `forwardHalf`, accumulated into dx; dy holds fp16 values.
    public static func backwardHalf(_ dy: Tensor, input x: Tensor, dx: inout Tensor) {
        let s = halfSigmoid(x)
        var direct = Tensor(zeros: x.shape), ds = Tensor(zeros: x.shape)
        for i in 0..<x.count { direct[i] = dy[i] * s[i]; ds[i] = dy[i] * x[i] }
        direct.roundToHalf(); ds.roundToHalf()
        for i in 0..<x.count { ds[i] = ds[i] * (1 - s[i]) * s[i] }  // sigmoid_backward
        ds.roundToHalf()
        for i in 0..<x.count { ds[i] *= 1.702 }
        ds.roundToHalf()
        for i in 0..<x.count { direct[i] += ds[i] }
        direct.roundToHalf()
        dx.accumulate(direct)
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
}

// MARK: - Element-wise helpers

extension Tensor {
    /// self += other (same element count).
    public mutating func accumulate(_ other: Tensor) {
        let n = count
        precondition(n == other.count, "accumulate: \(shape) += \(other.shape)")
        withMutablePointer { p in other.withPointer { q in pt_accumulate(p, q, n) } }
    }
}

/// Row-wise L2 normalisation, forward and backward.
public enum L2Normalize {
    public struct Cache: Sendable {
        public var output: Tensor
        public var norms: [Float]
    }

    public static func forward(_ x: Tensor) -> (Tensor, Cache) {
        var y = Tensor(zeros: x.shape)
        var norms = [Float](repeating: 0, count: x.rows)
        y.withMutablePointer { py in x.withPointer { px in pt_l2norm_forward(py, &norms, px, x.rows, x.lastDim) } }
        return (y, Cache(output: y, norms: norms))
    }

    public static func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor) {
        dx.withMutablePointer { pdx in dy.withPointer { pdy in cache.output.withPointer { py in
            pt_l2norm_backward(pdx, pdy, py, cache.norms, dy.rows, dy.lastDim)
        } } }
    }
}

extension Tensor {
    /// Adds `block` (shape [T, C]) to each consecutive block of T rows: B*T, C += broadcast(T, C).
    /// Positional embeddings are added this way.
    public mutating func addToEachBlock(_ block: Tensor) {
        let n = block.count
        precondition(n > 0 && count % n == 0, "addToEachBlock: \(shape) is not a whole number of \(block.shape) blocks")
        let blocks = count / n
        withMutablePointer { p in block.withPointer { q in
            for i in 0..<blocks { pt_accumulate(p + i * n, q, n) }
        } }
    }
}

extension Tensor {
    /// Adds `v` (the last dimension's length) to every row (a Linear layer's bias).
    public mutating func addRowVector(_ v: Tensor) {
        let d = lastDim, rows = count / max(1, d)
        precondition(v.count == d, "addRowVector: \(v.count) values for rows of \(d)")
        withMutablePointer { p in v.withPointer { pv in
            for r in 0..<rows { for x in 0..<d { p[r * d + x] += pv[x] } }
        } }
    }

    /// The sum of the rows (a Linear layer's bias gradient): a vector of the last dimension's length.
    public func columnSums() -> Tensor {
        let d = lastDim
        var out = Tensor(zeros: [d])
        out.withMutablePointer { po in withPointer { p in
            for r in 0..<(count / max(1, d)) { for x in 0..<d { po[x] += p[r * d + x] } }
        } }
        return out
    }
}
