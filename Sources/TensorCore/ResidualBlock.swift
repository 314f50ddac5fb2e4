/// CLIP's pre-LN block: x = x + attn(ln_1(x)); x = x + c_proj(QuickGELU(c_fc(ln_2(x)))).
public struct ResidualBlock: Sendable {
    public var ln1: LayerNorm
    public var attention: MultiheadAttention
    public var ln2: LayerNorm
    public var fc: Linear    // 4C, C
    public var proj: Linear  // C, 4C

    public init(ln1: LayerNorm, attention: MultiheadAttention, ln2: LayerNorm, fc: Linear, proj: Linear) {
        self.ln1 = ln1; self.attention = attention; self.ln2 = ln2; self.fc = fc; self.proj = proj
    }

    /// What runs the block (every layer's backend).
    public var backend: any ComputeBackend {
        get { fc.backend }
        set { ln1.backend = newValue; attention.backend = newValue; ln2.backend = newValue; fc.backend = newValue; proj.backend = newValue }
    }

    /// ln1Out, ln2Out and gelu (and the attention's input and context) are the linear layers'
    /// inputs, read only by weight gradients: empty when the forward ran with keepLinearInputs false.
    public struct Cache: Sendable {
        var ln1: LayerNorm.Cache
        var ln1Out: Tensor
        var attention: MultiheadAttention.Cache
        var ln2: LayerNorm.Cache
        var ln2Out: Tensor
        var hidden: Tensor  // c_fc output, before QuickGELU
        var gelu: Tensor

        /// Gives every buffer back to `workspace` (the cache must not be read afterwards).
        public mutating func recycle(into workspace: Workspace) {
            workspace.recycle(ln1.input); workspace.recycle(ln1Out); workspace.recycle(ln2.input)
            workspace.recycle(ln2Out); workspace.recycle(hidden); workspace.recycle(gelu)
            attention.recycle(into: workspace)
            let empty = Tensor(zeros: [0])
            ln1.input = empty; ln1Out = empty; ln2.input = empty; ln2Out = empty; hidden = empty; gelu = empty
        }
    }

    public struct Grads: Sendable {
        public var ln1: LayerNorm.Grads
        public var attention: MultiheadAttention.Grads
        public var ln2: LayerNorm.Grads
        public var fc: Linear.Grads
        public var proj: Linear.Grads
        public init(zerosLike blk: ResidualBlock) {
            ln1 = .init(zerosLike: blk.ln1); attention = .init(zerosLike: blk.attention)
            ln2 = .init(zerosLike: blk.ln2); fc = .init(zerosLike: blk.fc); proj = .init(zerosLike: blk.proj)
        }
    }

    // x: R, C -> R, C; with `outputRows`, S, C: after attention (which every row's keys and values
    // feed) only those rows go on through the out-projection, the residuals and the MLP.
    // Outputs and kept activations come from `workspace` when given; with `keepLinearInputs`
    // false the linear layers' inputs go back to it as soon as they are used (the cache then serves
    // a backward without weight gradients only).
    // `rounding` .half rounds to fp16 values every tensor an fp16 CLIP stores: each LayerNorm's output
    // (computed in fp32 and cast back, as CLIP's LayerNorm does), the attention's (see its forward),
    // c_fc's, QuickGELU's and c_proj's outputs and both residual sums.
    public func forward(_ x: Tensor, layout: SequenceLayout, causal: Bool, outputRows: [Int]? = nil,
                        workspace: Workspace? = nil, keepLinearInputs: Bool = true,
                        rounding: ActivationRounding = .none) -> (Tensor, Cache) {
        let ws = keepLinearInputs ? nil : workspace
        let empty = Tensor(zeros: [0])
        var (a, ln1Cache) = ln1.forward(x, workspace: workspace)
        rounding.apply(&a, backend: backend)
        var (h, attnCache) = attention.forward(a, layout: layout, causal: causal, outputRows: outputRows,
                                               workspace: workspace, keepLinearInputs: keepLinearInputs, rounding: rounding)
        ws?.recycle(a)
        backend.add(outputRows.map { backend.gatherRows(x, $0) } ?? x, to: &h)
        rounding.apply(&h, backend: backend)
        var (b, ln2Cache) = ln2.forward(h, workspace: workspace)
        rounding.apply(&b, backend: backend)
        var hidden = fc.forward(b, workspace: workspace)
        rounding.apply(&hidden, backend: backend)
        ws?.recycle(b)
        let g = rounding == .half ? QuickGELU.forwardHalf(hidden, workspace: workspace, backend: backend) : QuickGELU.forward(hidden, workspace: workspace, backend: backend)
        var y = proj.forward(g, workspace: workspace)
        rounding.apply(&y, backend: backend)
        ws?.recycle(g)
        backend.add(h, to: &y)
        rounding.apply(&y, backend: backend)
        return (y, Cache(ln1: ln1Cache, ln1Out: keepLinearInputs ? a : empty, attention: attnCache, ln2: ln2Cache,
                         ln2Out: keepLinearInputs ? b : empty, hidden: hidden, gelu: keepLinearInputs ? g : empty))
    }

    /// Temporaries come from `workspace` when given and go back to it. `rounding` .half rounds the
    /// gradients an fp16 model's autograd stores: QuickGELU's and c_fc's output gradients, the
    /// residual stream's after the MLP and ln_1's output gradient (`dx` is the caller's to round).
    public func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, grads: inout Grads?, workspace: Workspace? = nil,
                         rounding: ActivationRounding = .none) {
        precondition(grads == nil || !cache.gelu.data.isEmpty, "block weight gradients need the forward run with keepLinearInputs")
        // Second residual: dh = dy + d(mlp branch)
        var dh = backend.tensor(workspace, dy.shape, zeroed: false)
        backend.copyRows(dy, into: &dh, spans: [RowSpan(source: 0, target: 0, count: dy.rows)], accumulate: false)
        var projGrads = grads?.proj, fcGrads = grads?.fc, ln2Grads = grads?.ln2
        var dg = backend.tensor(workspace, cache.hidden.shape)
        proj.backward(dy, input: cache.gelu, dx: &dg, grads: &projGrads)
        rounding.apply(&dg, backend: backend)
        var dHidden = backend.tensor(workspace, cache.hidden.shape)
        if rounding == .half {
            QuickGELU.backwardHalf(dg, input: cache.hidden, dx: &dHidden, backend: backend)
        } else {
            QuickGELU.backward(dg, input: cache.hidden, dx: &dHidden, backend: backend)
        }
        var dB = backend.tensor(workspace, cache.ln2.input.shape)
        fc.backward(dHidden, input: cache.ln2Out, dx: &dB, grads: &fcGrads)
        rounding.apply(&dB, backend: backend)
        ln2.backward(dB, cache: cache.ln2, dx: &dh, grads: &ln2Grads)
        rounding.apply(&dh, backend: backend)
        // First residual: dx += dh + d(attention branch)
        var attnGrads = grads?.attention, ln1Grads = grads?.ln1
        var dA = backend.tensor(workspace, cache.ln1.input.shape)
        attention.backward(dh, cache: cache.attention, dx: &dA, grads: &attnGrads, workspace: workspace)
        rounding.apply(&dA, backend: backend)
        if let rows = cache.attention.outputRows { backend.scatterAddRows(dh, rows: rows, into: &dx) } else { backend.add(dh, to: &dx) }
        ln1.backward(dA, cache: cache.ln1, dx: &dx, grads: &ln1Grads)
        if grads != nil {
            grads!.proj = projGrads!; grads!.fc = fcGrads!; grads!.ln2 = ln2Grads!
            grads!.attention = attnGrads!; grads!.ln1 = ln1Grads!
        }
        if let workspace {
            workspace.recycle(dh); workspace.recycle(dg); workspace.recycle(dHidden)
            workspace.recycle(dB); workspace.recycle(dA)
        }
    }
}
