import CKernels
import Foundation

// Transformer pieces as forward/backward pairs on 2-D views (rows N = batch * tokens, width C).
// A forward returns its output and a cache of what its backward needs. A backward ACCUMULATES
// into the caller's input gradient `dx` and, when `grads` is non-nil, into parameter gradients;
// pass nil for frozen weights so that only the input gradient is paid for.

// MARK: - Linear

/// y = x W^T + b, with W stored [Out, In] as PyTorch does.
///
/// `packed` is the backend's copy of the frozen weight (on the CPU, oneDNN's own layout, in bf16
/// under bf16 products), made at first use and dropped when `weight` changes.
public struct Linear: Sendable {
    public var weight: Tensor {  // Out, In
        didSet { packed = PackedWeight() }
    }
    public var bias: Tensor?   // Out
    public private(set) var packed = PackedWeight()
    /// What runs the products.
    public var backend: any ComputeBackend = defaultBackend

    public init(weight: Tensor, bias: Tensor?) {
        precondition(weight.rank == 2, "Linear weight must be 2-D, got \(weight.shape)")
        if let bias { precondition(bias.shape == [weight.shape[0]], "Linear bias \(bias.shape) vs weight \(weight.shape)") }
        self.weight = weight
        self.bias = bias
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
        precondition(x.lastDim == inFeatures, "Linear: input width \(x.lastDim), expected \(inFeatures)")
        var y = backend.tensor(workspace, Array(x.shape.dropLast()) + [outFeatures], zeroed: false)  // every value written
        backend.linear(x, weight: weight, bias: bias, packed: packed, into: &y)
        return y
    }

    // dy: N, Out; x: the forward input N, In; dx: N, In (accumulated). `x` is read only for the
    // weight gradient: with `grads` nil it may be an empty placeholder.
    public func backward(_ dy: Tensor, input x: Tensor, dx: inout Tensor, grads: inout Grads?) {
        backend.linearInputGradient(dy, weight: weight, packed: packed, dx: &dx)
        guard grads != nil else { return }
        backend.matmul(dy.reshaped([dy.rows, outFeatures]), x.reshaped([x.rows, inFeatures]), transA: true, transB: false,
                       alpha: 1, beta: 1, into: &grads!.weight)
        if grads!.bias != nil { backend.columnSums(dy, accumulating: &grads!.bias!) }
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
    /// What runs the normalisation.
    public var backend: any ComputeBackend = defaultBackend

    public init(weight: Tensor, bias: Tensor, eps: Float = 1e-5) {
        precondition(weight.shape == bias.shape && weight.rank == 1, "LayerNorm weight \(weight.shape) / bias \(bias.shape)")
        self.weight = weight
        self.bias = bias
        self.eps = eps
    }

    public struct Cache: Sendable {
        public var input: Tensor
        public var mean: Tensor  // N
        public var rstd: Tensor  // N

        public init(input: Tensor, mean: Tensor, rstd: Tensor) {
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
        precondition(x.lastDim == weight.count, "LayerNorm: input width \(x.lastDim), expected \(weight.count)")
        var y = backend.tensor(workspace, x.shape, zeroed: false)  // every value written
        var mean = backend.zeros([x.rows]), rstd = backend.zeros([x.rows])
        backend.layerNorm(x, weight: weight, bias: bias, eps: eps, into: &y, mean: &mean, rstd: &rstd)
        return (y, Cache(input: x, mean: mean, rstd: rstd))
    }

    public func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, grads: inout Grads?) {
        var gw = grads?.weight, gb = grads?.bias
        backend.layerNormBackward(dy, input: cache.input, weight: weight, mean: cache.mean, rstd: cache.rstd,
                                  dx: &dx, dWeight: &gw, dBias: &gb)
        if grads != nil { grads!.weight = gw!; grads!.bias = gb! }
    }
}

// MARK: - QuickGELU

public enum QuickGELU {
    public static func forward(_ x: Tensor, workspace: Workspace? = nil, backend: any ComputeBackend = defaultBackend) -> Tensor {
        var y = backend.tensor(workspace, x.shape, zeroed: false)  // every value written
        backend.quickGELU(x, into: &y)
        return y
    }

    public static func backward(_ dy: Tensor, input x: Tensor, dx: inout Tensor, backend: any ComputeBackend = defaultBackend) {
        backend.quickGELUBackward(dy, input: x, dx: &dx)
    }

    // CLIP's `x * torch.sigmoid(1.702 * x)` on fp16 tensors is three ops, each rounded to fp16:
    // t = fp16(1.702 x), s = fp16(sigmoid(t)), y = fp16(x s). The backward is autograd's through
    // them: fp16(dy s) + fp16(fp16(fp16(dy x) (1 - s) s) 1.702), summed and rounded, with CUDA's
    // sigmoid backward (one rounding; PyTorch's CPU kernel rounds each of its three ops).

    /// The fp16 model's QuickGELU (`ActivationRounding.half`); x holds fp16 values.
    public static func forwardHalf(_ x: Tensor, workspace: Workspace? = nil, backend: any ComputeBackend = defaultBackend) -> Tensor {
        var y = backend.tensor(workspace, x.shape, zeroed: false)  // every value written
        backend.quickGELUHalf(x, into: &y)
        return y
    }

    /// The backward of `forwardHalf`, accumulated into dx; dy holds fp16 values.
    public static func backwardHalf(_ dy: Tensor, input x: Tensor, dx: inout Tensor, backend: any ComputeBackend = defaultBackend) {
        backend.quickGELUHalfBackward(dy, input: x, dx: &dx)
    }
}

// MARK: - Element-wise helpers

extension Tensor {
    /// self += other (same element count).
    public mutating func accumulate(_ other: Tensor) {
        defaultBackend.add(other, to: &self)
    }
}

/// Row-wise L2 normalisation, forward and backward.
public enum L2Normalize {
    public struct Cache: Sendable {
        public var output: Tensor
        public var norms: Tensor  // N
    }

    public static func forward(_ x: Tensor, backend: any ComputeBackend = defaultBackend) -> (Tensor, Cache) {
        var y = backend.zeros(x.shape)
        var norms = backend.zeros([x.rows])
        backend.l2Normalize(x, into: &y, norms: &norms)
        return (y, Cache(output: y, norms: norms))
    }

    public static func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, backend: any ComputeBackend = defaultBackend) {
        backend.l2NormalizeBackward(dy, output: cache.output, norms: cache.norms, dx: &dx)
    }
}

extension Tensor {
    /// Adds `v` (the last dimension's length) to every row (a Linear layer's bias).
    public mutating func addRowVector(_ v: Tensor) {
        precondition(v.count == lastDim, "addRowVector: \(v.count) values for rows of \(lastDim)")
        defaultBackend.addBroadcast(v, to: &self)
    }

    /// The sum of the rows (a Linear layer's bias gradient): a vector of the last dimension's length.
    public func columnSums() -> Tensor {
        var out = Tensor(zeros: [lastDim])
        defaultBackend.columnSums(self, accumulating: &out)
        return out
    }
}
