
/// Multi-head self-attention with a fused in-projection, as `nn.MultiheadAttention` in CLIP:
/// qkv = x W_in^T + b_in; per head softmax(q k^T / sqrt(d) [+ causal mask]) v; then out-projection.
/// Heads are read straight out of the fused qkv rows through GEMM leading dimensions, so no
/// reshapes or copies happen.
public struct MultiheadAttention: Sendable {
    public var inProj: Linear   // 3C, C
    public var outProj: Linear  // C, C
    public let heads: Int

    public init(inProj: Linear, outProj: Linear, heads: Int) {
        let c = outProj.outFeatures
        precondition(inProj.weight.shape == [3 * c, c], "attention in-projection \(inProj.weight.shape), expected [\(3 * c), \(c)]")
        precondition(heads > 0 && c % heads == 0, "attention width \(c) is not divisible by \(heads) heads")
        self.inProj = inProj
        self.outProj = outProj
        self.heads = heads
    }

    public var width: Int { outProj.outFeatures }

    public struct Cache: Sendable {
        public var input: Tensor   // R, C (R = rows of all sequences); empty when not kept
        public var qkv: Tensor     // R, 3C
        public var probs: Tensor   // per prefix, sequence and head, its attention weights (`SequenceLayout.attentionOffsets`)
        public var context: Tensor // R, C (heads concatenated, before the out-projection); empty when not kept
        public var layout: SequenceLayout
        public var outputRows: [Int]?
        /// Whether `input` and `context` (read only by the weight gradients) were kept.
        public var hasLinearInputs: Bool { !context.data.isEmpty }

        /// Gives every buffer back to `workspace` (the cache must not be read afterwards).
        public mutating func recycle(into workspace: Workspace) {
            workspace.recycle(input); workspace.recycle(qkv); workspace.recycle(context)
            workspace.recycle(probs)
            input = Tensor(zeros: [0]); qkv = Tensor(zeros: [0]); context = Tensor(zeros: [0]); probs = Tensor(zeros: [0])
        }
    }

    public struct Grads: Sendable {
        public var inProj: Linear.Grads
        public var outProj: Linear.Grads
        public init(zerosLike a: MultiheadAttention) {
            inProj = .init(zerosLike: a.inProj)
            outProj = .init(zerosLike: a.outProj)
        }
    }

    /// What runs the products and the attention (set with the model's).
    public var backend: any ComputeBackend {
        get { inProj.backend }
        set { inProj.backend = newValue; outProj.backend = newValue }
    }

    // x: R, C -> R, C, where the rows hold the (prefix and) sequences of `layout`; with
    // `outputRows`, only those rows leave the out-projection: S, C. With `keepLinearInputs` false
    // the cache holds no input or context (enough for a backward without weight gradients), and the
    // context goes back to `workspace` at once. `rounding` .half rounds qkv, the context and the
    // output to fp16 values (what an fp16 model stores) and the probabilities as fused fp16
    // attention kernels do; scores and softmax stay fp32.
    public func forward(_ x: Tensor, layout: SequenceLayout, causal: Bool, outputRows: [Int]? = nil,
                        workspace: Workspace? = nil, keepLinearInputs: Bool = true,
                        rounding: ActivationRounding = .none) -> (Tensor, Cache) {
        let c = width
        precondition(x.rows == layout.rows && x.lastDim == c, "attention input \(x.shape) vs \(layout.rows) rows of width \(c)")
        precondition(layout.prefixes.isEmpty || causal, "a shared prefix needs causal attention")
        var qkv = inProj.forward(x, workspace: workspace)
        rounding.apply(&qkv, backend: backend)
        // Every value of both is written by the backend (the first product into each block has beta 0).
        var probs = backend.tensor(workspace, [layout.attentionOffsets(heads: heads).total], zeroed: false)
        var context = backend.tensor(workspace, [layout.rows, c], zeroed: false)
        backend.attention(qkv: qkv, layout: layout, heads: heads, causal: causal, rounding: rounding,
                          probs: &probs, context: &context)
        rounding.apply(&context, backend: backend)
        var y = outProj.forward(outputRows.map { backend.gatherRows(context, $0) } ?? context, workspace: workspace)
        rounding.apply(&y, backend: backend)
        if !keepLinearInputs {
            workspace?.recycle(context)
            return (y, Cache(input: Tensor(zeros: [0]), qkv: qkv, probs: probs, context: Tensor(zeros: [0]),
                             layout: layout, outputRows: outputRows))
        }
        return (y, Cache(input: x, qkv: qkv, probs: probs, context: context, layout: layout, outputRows: outputRows))
    }

    /// Temporaries come from `workspace` when given and go back to it.
    public func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, grads: inout Grads?, workspace: Workspace? = nil) {
        let layout = cache.layout
        precondition(grads == nil || cache.hasLinearInputs,
                     "attention weight gradients need the forward run with keepLinearInputs")
        var dContext = backend.tensor(workspace, [layout.rows, width])
        var outGrads = grads?.outProj
        if let rows = cache.outputRows {
            var dRows = backend.zeros([rows.count, width])
            outProj.backward(dy, input: grads == nil ? cache.context : backend.gatherRows(cache.context, rows), dx: &dRows,
                             grads: &outGrads)
            backend.scatterAddRows(dRows, rows: rows, into: &dContext)
        } else {
            outProj.backward(dy, input: cache.context, dx: &dContext, grads: &outGrads)
        }
        // Every dq, dk, dv row is written with beta 0, except a shared prefix's, which accumulates
        // over sequences: only then does dqkv start from zero.
        var dqkv = backend.tensor(workspace, cache.qkv.shape, zeroed: !layout.prefixes.isEmpty)
        backend.attentionBackward(qkv: cache.qkv, probs: cache.probs, dContext: dContext, layout: layout, heads: heads,
                                  dqkv: &dqkv, workspace: workspace)
        var inGrads = grads?.inProj
        inProj.backward(dqkv, input: cache.input, dx: &dx, grads: &inGrads)
        if grads != nil { grads!.outProj = outGrads!; grads!.inProj = inGrads! }
        if let workspace { workspace.recycle(dContext); workspace.recycle(dqkv) }
    }
}
