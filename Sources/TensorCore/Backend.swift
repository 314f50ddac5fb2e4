/// What runs a model's arithmetic: the one interface between the layers, towers and prompt
/// architectures above TensorCore and the kernels below it.
///
/// Every operation of a forward or backward on a tower's activations is one call here; code above
/// TensorCore never loops over a tensor's values or takes its pointers for that work. Today's
/// implementation is `CPUBackend` (oneDNN, OpenBLAS and CKernels' vector loops); a device backend
/// implements the same calls on its own memory.
///
/// Conventions: rows are the 2-D view of a tensor (every axis but the last, by the last); an
/// operation writing `into` overwrites, one taking `dx`/`accumulating` adds (backwards accumulate,
/// as the layers' contract says). Operations that sum several contributions into one value sum
/// them in the order given, so results do not depend on threads.
///
/// A value of this type is also the compute context: it carries the choices that used to be
/// process-wide settings (which products run, in which precision). A model holds one
/// (`backend` on every layer and tower, set for a whole model at once); two models, or two
/// tests, in one process may use different ones.
public protocol ComputeBackend: Sendable {
    /// "cpu onednn fp32": the device, its product library and the precision, for messages.
    var name: String { get }
    /// The input format of the products with layer weights and the attention grids.
    var precision: Precision { get }
    /// The same backend with products in `precision`; throws where that precision cannot run.
    func withPrecision(_ precision: Precision) throws -> any ComputeBackend

    // MARK: Storage

    /// New storage for a tensor of `shape` on this backend: zeros when `zeroed`, else values to be
    /// overwritten before they are read. A model's activations, caches and gradients are made here
    /// or taken from a `Workspace` of this backend.
    func makeTensor(_ shape: [Int], zeroed: Bool) -> Tensor

    // MARK: Products

    /// c = alpha op(a) op(b) + beta c for 2-D tensors (c's values are read only when beta != 0).
    func matmul(_ a: Tensor, _ b: Tensor, transA: Bool, transB: Bool, alpha: Float, beta: Float, into c: inout Tensor)
    /// y = x W^T + b (W: [Out, In]); `packed` holds the backend's copy of the frozen weight.
    func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, packed: PackedWeight, into y: inout Tensor)
    /// dx += dy W (the input gradient of `linear`).
    func linearInputGradient(_ dy: Tensor, weight: Tensor, packed: PackedWeight, dx: inout Tensor)
    /// Multi-head self-attention between the fused in- and out-projections: per sequence of
    /// `layout` and head, probs = softmax(q k^T / sqrt(d) [causal]) and context = probs v, reading
    /// q, k, v from the rows of `qkv` (R x 3C). `probs` holds `layout.attentionOffsets(heads:).total` values.
    func attention(qkv: Tensor, layout: SequenceLayout, heads: Int, causal: Bool, rounding: ActivationRounding,
                   probs: inout Tensor, context: inout Tensor)
    /// The attention's backward: dqkv (R x 3C) from dContext; written whole, except that a shared
    /// prefix's rows accumulate (dqkv then starts at zero).
    func attentionBackward(qkv: Tensor, probs: Tensor, dContext: Tensor, layout: SequenceLayout, heads: Int,
                           dqkv: inout Tensor, workspace: Workspace?)

    // MARK: Row-wise layers

    /// y = (x - mean) / sqrt(var + eps) * weight + bias per row; mean and 1/std kept per row.
    func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, into y: inout Tensor,
                   mean: inout Tensor, rstd: inout Tensor)
    /// dx += d/dx; dWeight, dBias (when given) += their gradients.
    func layerNormBackward(_ dy: Tensor, input x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor,
                           dx: inout Tensor, dWeight: inout Tensor?, dBias: inout Tensor?)
    /// Softmax of each row of `x` (rows of `columns`), in place; with `causalOffset` >= 0, row r
    /// sees columns 0 ... causalOffset + r only (the others become 0).
    func softmaxRows(_ x: inout Tensor, columns: Int, causalOffset: Int)
    /// y = x sigmoid(1.702 x).
    func quickGELU(_ x: Tensor, into y: inout Tensor)
    func quickGELUBackward(_ dy: Tensor, input x: Tensor, dx: inout Tensor)
    /// y = x / |x| per row; the norms kept.
    func l2Normalize(_ x: Tensor, into y: inout Tensor, norms: inout Tensor)
    func l2NormalizeBackward(_ dy: Tensor, output y: Tensor, norms: Tensor, dx: inout Tensor)

    // MARK: fp16 values (`ActivationRounding.half`: the references' fp16 CLIP approached in fp32)

    /// Every value rounded to the nearest fp16 value, in place.
    func roundToHalf(_ x: inout Tensor)
    /// An fp16 CLIP's QuickGELU: fp16(x fp16(sigmoid(fp16(1.702 x)))); x holds fp16 values.
    func quickGELUHalf(_ x: Tensor, into y: inout Tensor)
    /// Its backward as autograd takes it through the three fp16 ops, accumulated into dx.
    func quickGELUHalfBackward(_ dy: Tensor, input x: Tensor, dx: inout Tensor)

    // MARK: Element-wise and layout

    /// y += x (same element count).
    func add(_ x: Tensor, to y: inout Tensor)
    /// y += alpha x.
    func axpy(_ alpha: Float, _ x: Tensor, _ y: inout Tensor)
    /// x += `block` repeated over x's rows: block is [T, C] and x holds whole blocks of T rows
    /// (a bias is T = 1; positional embeddings T tokens).
    func addBroadcast(_ block: Tensor, to x: inout Tensor)
    /// out[j] += sum over rows of x[r, j] (rows in order).
    func columnSums(_ x: Tensor, accumulating out: inout Tensor)
    /// out[i, :] = x[rows[i], :].
    func gatherRows(_ x: Tensor, _ rows: [Int], into out: inout Tensor)
    /// dst[rows[i], :] += src[i, :] (i in order).
    func scatterAddRows(_ src: Tensor, rows: [Int], into dst: inout Tensor)
    /// For each span in order, `count` rows of `src` from `source` onto the rows of `dst` from
    /// `target`: copied, or added with `accumulate` (spans with one target then sum in order).
    /// Row assembly (class and patch tokens, prompts around their context), extra-token insertion
    /// and their gradients.
    func copyRows(_ src: Tensor, into dst: inout Tensor, spans: [RowSpan], accumulate: Bool)
    /// pixels [B, 3, R, R] -> [B * G * G, 3 * P * P]: patches in row-major grid order, values in
    /// (channel, y, x) order, as a patch-sized convolution kernel is laid out.
    func patchify(_ pixels: Tensor, patchSize: Int, into out: inout Tensor)
}

/// `count` rows from row `source` of one tensor to row `target` of another.
public struct RowSpan: Sendable, Equatable {
    public var source: Int
    public var target: Int
    public var count: Int

    public init(source: Int, target: Int, count: Int) {
        self.source = source; self.target = target; self.count = count
    }
}

extension ComputeBackend {
    /// A zero tensor of `shape` on this backend.
    public func zeros(_ shape: [Int]) -> Tensor { makeTensor(shape, zeroed: true) }

    /// Storage for `shape` from `workspace`'s pool when given, else new storage on this backend.
    public func tensor(_ workspace: Workspace?, _ shape: [Int], zeroed: Bool = true) -> Tensor {
        workspace?.tensor(shape, zeroed: zeroed) ?? makeTensor(shape, zeroed: zeroed)
    }

    /// op(a) op(b) as a new tensor.
    public func matmul(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2, "matmul needs 2-D tensors, got \(a.shape) and \(b.shape)")
        let m = transA ? a.shape[1] : a.shape[0], n = transB ? b.shape[0] : b.shape[1]
        var out = makeTensor([m, n], zeroed: false)  // beta 0: every value written
        matmul(a, b, transA: transA, transB: transB, alpha: 1, beta: 0, into: &out)
        return out
    }

    /// x's rows `rows` as a new [rows.count, C] tensor.
    public func gatherRows(_ x: Tensor, _ rows: [Int], workspace: Workspace? = nil) -> Tensor {
        var out = tensor(workspace, [rows.count, x.lastDim], zeroed: false)  // every row written
        gatherRows(x, rows, into: &out)
        return out
    }
}

/// The backend a layer or model starts with: the CPU, with the product library of
/// `PROMPTTUNE_GEMM` (else oneDNN where its engine starts) in fp32. Fixed for the process: a
/// model that needs other settings is given its own backend.
public let defaultBackend: any ComputeBackend = CPUBackend.default
