import TensorCore

/// CLIP's causal text transformer. It takes token *embeddings* (so prompt methods can put learned
/// vectors in place of words) and the EOT position of each row, and returns the projected feature
/// at that position.
public struct TextTower: Sendable {
    public var tokenEmbedding: Tensor       // V, C
    public var positionalEmbedding: Tensor  // L, C
    public var transformer: Transformer
    public var lnFinal: LayerNorm
    public var projection: Tensor           // C, E

    public init(tokenEmbedding: Tensor, positionalEmbedding: Tensor, transformer: Transformer,
                lnFinal: LayerNorm, projection: Tensor) {
        self.tokenEmbedding = tokenEmbedding; self.positionalEmbedding = positionalEmbedding
        self.transformer = transformer; self.lnFinal = lnFinal; self.projection = projection
    }

    /// What runs the tower (every layer's backend).
    public var backend: any ComputeBackend {
        get { transformer.backend }
        set { transformer.backend = newValue; lnFinal.backend = newValue }
    }

    public var width: Int { tokenEmbedding.shape[1] }
    public var contextLength: Int { positionalEmbedding.shape[0] }
    /// `.half`: the packed input, every block, ln_final's output and the features (and their
    /// gradients back to the input) are rounded to fp16 values, as the reference's fp16 CLIP holds
    /// them; stored on the transformer.
    public var activationRounding: ActivationRounding {
        get { transformer.activationRounding }
        set { transformer.activationRounding = newValue }
    }

    /// Token embeddings of id rows (all rows the same length T): B, T, C. No positional embedding.
    public func embed(_ tokens: [[Int]]) -> Tensor {
        let t = tokens.first?.count ?? 0
        precondition(tokens.allSatisfy { $0.count == t }, "embed: token rows differ in length")
        return backend.gatherRows(tokenEmbedding, tokens.flatMap { $0 }).reshaped([tokens.count, t, width])
    }

    public struct Trace: Sendable {
        public var blocks: Transformer.Trace
        public var lnFinal: LayerNorm.Cache
        public var pooled: Tensor       // B, C (after ln_final, at the output rows)
        public var layout: SequenceLayout
        public var outputRows: [Int]    // packed row of each sequence's EOT
    }

    /// embeddings: B, T, C with T <= context length; eot: B positions -> features B, E (not normalised).
    ///
    /// Each row is cut after its own EOT before the transformer: under the causal mask the feature
    /// at the EOT never sees later positions, so this is exact, and the rows are packed so that no
    /// padding is computed. Hidden states (when kept) are in that packed layout: row i's positions
    /// 0...eot[i] one after another.
    public func forward(embeddings x: Tensor, eot: [Int], keepCaches: Bool = false,
                        keepHiddenStates: Bool = false) -> (Tensor, Trace) {
        precondition(x.rank == 3 && x.shape[2] == width, "text tower input \(x.shape), expected [B, T, \(width)]")
        let (b, t) = (x.shape[0], x.shape[1])
        precondition(t <= contextLength, "text tower: \(t) tokens exceed the context length \(contextLength)")
        precondition(eot.count == b && eot.allSatisfy { $0 >= 0 && $0 < t }, "text tower: EOT positions \(eot) for \(b) rows of \(t) tokens")
        let layout = SequenceLayout(lengths: eot.map { $0 + 1 })
        // Each row's first eot + 1 embeddings, one row after another, plus its positions.
        var h = backend.zeros([layout.rows, width])
        backend.copyRows(x.reshaped([b * t, width]), into: &h,
                         spans: layout.lengths.indices.map { RowSpan(source: $0 * t, target: layout.rowOffsets[$0], count: layout.lengths[$0]) },
                         accumulate: false)
        addPositionalEmbedding(to: &h, layout: layout)
        return forward(packed: h, layout: layout, keepCaches: keepCaches, keepHiddenStates: keepHiddenStates)
    }

    /// Adds each packed row's positional embedding: a prefix's rows are positions 0..<P, its
    /// sequences' own rows P, P+1, ... (`SequenceLayout.positions`).
    public func addPositionalEmbedding(to h: inout Tensor, layout: SequenceLayout) {
        var spans = layout.prefixes.map { RowSpan(source: 0, target: $0.rowOffset, count: $0.length) }
        for (s, t) in layout.lengths.enumerated() {
            spans.append(RowSpan(source: layout.prefix(of: s).length, target: layout.rowOffsets[s], count: t))
        }
        backend.copyRows(positionalEmbedding, into: &h, spans: spans, accumulate: true)
    }

    /// The transformer on packed rows that already include positional embeddings; the feature of
    /// each sequence is taken at its last row (its EOT). A prefix of `layout` is the shared beginning
    /// of its sequences (CoOp's context shared by every class; CoCoOp's per image, by its classes).
    /// `deepPrompts` replaces rows before given blocks (MaPLe's and PromptSRC's deep text prompts:
    /// `DeepPrompts(values:position: 1, layout:)`); the backward's `deepPromptGrads` returns their
    /// gradients.
    ///
    /// With a `workspace`, the activations (and the caches kept) come from it; `keepLinearInputs`
    /// false keeps only what a backward without weight gradients reads (`backwardPacked(_:releasing:workspace:)`).
    public func forward(packed h: Tensor, layout: SequenceLayout, deepPrompts: DeepPrompts = DeepPrompts(), keepCaches: Bool = false,
                        keepHiddenStates: Bool = false, workspace: Workspace? = nil,
                        keepLinearInputs: Bool = true) -> (Tensor, Trace) {
        let rows = layout.lengths.indices.map { layout.rowOffsets[$0] + layout.lengths[$0] - 1 }
        // Only the EOT rows are read, so the last block computes just those after its attention
        // (all of them when hidden states are kept for inspection).
        let (out, blocks) = transformer.forward(h, layout: layout, causal: true, outputRows: keepHiddenStates ? nil : rows,
                                                deepPrompts: deepPrompts, keepCaches: keepCaches, keepHiddenStates: keepHiddenStates,
                                                workspace: workspace, keepLinearInputs: keepLinearInputs)
        var (pooled, lnCache) = lnFinal.forward(keepHiddenStates ? backend.gatherRows(out, rows) : out)
        activationRounding.apply(&pooled, backend: backend)
        var features = backend.matmul(pooled, projection)
        activationRounding.apply(&features, backend: backend)
        return (features, Trace(blocks: blocks, lnFinal: lnCache, pooled: pooled, layout: layout, outputRows: rows))
    }

    /// dFeatures: B, E -> gradient w.r.t. the packed input rows (R, C). Weights stay frozen.
    public func backwardPacked(_ dFeatures: Tensor, trace: Trace) -> Tensor {
        var none: TextTower? = nil
        return backwardPacked(dFeatures, trace: trace, grads: &none)
    }

    /// `backwardPacked(_:trace:)` releasing the trace as it goes: each block's cache goes back to
    /// `workspace` once its backward has run, and the temporaries come from it, so a training
    /// step's backward reuses the memory its forward kept (the forward ran with `keepCaches`,
    /// ideally with the same workspace and `keepLinearInputs: false`). `trace` is left without
    /// block caches; the result's storage may go back to `workspace` once read.
    public func backwardPacked(_ dFeatures: Tensor, releasing trace: inout Trace, workspace: Workspace) -> Tensor {
        var dropped: [Int: Tensor] = [:]
        return backwardPacked(dFeatures, releasing: &trace, deepPromptGrads: &dropped, workspace: workspace)
    }

    /// The releasing backward that also accumulates the deep prompts' gradients into
    /// `deepPromptGrads` (by block, shaped as the values; created at zero when absent).
    public func backwardPacked(_ dFeatures: Tensor, releasing trace: inout Trace, deepPromptGrads: inout [Int: Tensor],
                               workspace: Workspace) -> Tensor {
        var noTower: TextTower? = nil
        let dOut = gradientAtOutputRows(dFeatures, trace: trace, grads: &noTower)
        var noBlocks: [ResidualBlock.Grads]? = nil
        return transformer.backward(dOut, releasing: &trace.blocks, grads: &noBlocks, deepPromptGrads: &deepPromptGrads,
                                    workspace: workspace)
    }

    /// dFeatures: B, E -> gradient w.r.t. the packed input rows (R, C), with the deep prompts'
    /// gradients accumulated into `deepPromptGrads` (by block, shaped as the values). Weights stay frozen.
    public func backwardPacked(_ dFeatures: Tensor, trace: Trace, deepPromptGrads: inout [Int: Tensor]) -> Tensor {
        var noTower: TextTower? = nil
        let dOut = gradientAtOutputRows(dFeatures, trace: trace, grads: &noTower)
        var noBlocks: [ResidualBlock.Grads]? = nil
        return transformer.backward(dOut, trace: trace.blocks, grads: &noBlocks, deepPromptGrads: &deepPromptGrads)
    }

    /// dFeatures -> the gradient of the last block's output (its EOT rows, or every row when the
    /// trace kept hidden states), through the projection and ln_final.
    /// With `grads`, the projection's and ln_final's weight gradients accumulate into it.
    private func gradientAtOutputRows(_ dFeatures: Tensor, trace: Trace, grads: inout TextTower?) -> Tensor {
        let (b, c) = (trace.outputRows.count, width)
        var dFeatures = dFeatures
        activationRounding.apply(&dFeatures, backend: backend)
        var dPooled = backend.matmul(dFeatures, projection, transB: true)
        activationRounding.apply(&dPooled, backend: backend)
        if grads != nil { backend.add(backend.matmul(trace.pooled, dFeatures, transA: true), to: &grads!.projection) }
        var dGathered = backend.zeros([b, c])
        var lnGrads = grads?.lnFinal.asGrads
        lnFinal.backward(dPooled, cache: trace.lnFinal, dx: &dGathered, grads: &lnGrads)
        activationRounding.apply(&dGathered, backend: backend)
        if grads != nil { grads!.lnFinal.set(lnGrads!) }
        guard trace.blocks.outputRows == nil else { return dGathered }
        var dOut = backend.zeros([trace.layout.rows, c])
        backend.scatterAddRows(dGathered, rows: trace.outputRows, into: &dOut)
        return dOut
    }

    /// dFeatures: B, E -> gradient w.r.t. the packed input rows (R, C). With `grads` (a tower-shaped
    /// gradient, e.g. `CLIPModel.zeroGradient().text`), the weight gradients accumulate into it:
    /// projection, ln_final, every block, and the positional embedding (the packed rows include it);
    /// the token embedding's gradient needs the token ids (`backward(_:trace:tokens:grads:)`).
    public func backwardPacked(_ dFeatures: Tensor, trace: Trace, grads: inout TextTower?) -> Tensor {
        let dOut = gradientAtOutputRows(dFeatures, trace: trace, grads: &grads)
        var blockGrads = grads?.transformer.asGrads
        let dIn = transformer.backward(dOut, trace: trace.blocks, grads: &blockGrads)
        if grads != nil {
            grads!.transformer.set(blockGrads!)
            // Row j of a prefix is position j; row j of a sequence is position (its prefix's rows) + j.
            backend.scatterAddRows(dIn, rows: trace.layout.positions, into: &grads!.positionalEmbedding)
        }
        return dIn
    }

    /// dFeatures: B, E -> gradient w.r.t. the input embeddings of `forward(embeddings:eot:)`,
    /// B, T, C (zero after each EOT).
    public func backward(_ dFeatures: Tensor, trace: Trace, tokens t: Int) -> Tensor {
        let layout = trace.layout, dIn = backwardPacked(dFeatures, trace: trace)
        var out = backend.zeros([layout.lengths.count * t, width])
        backend.copyRows(dIn, into: &out,
                         spans: layout.lengths.indices.map { RowSpan(source: layout.rowOffsets[$0], target: $0 * t, count: layout.lengths[$0]) },
                         accumulate: false)
        return out.reshaped([layout.lengths.count, t, width])
    }

    /// The full backward of `forward(embeddings: embed(tokens), eot:)`: every weight gradient,
    /// the token embedding's included, accumulates into `grads`.
    public func backward(_ dFeatures: Tensor, trace: Trace, tokens: [[Int]], grads: inout TextTower) {
        precondition(trace.layout.prefixes.isEmpty, "token embedding gradients need sequences without a shared prefix")
        var g: TextTower? = grads
        grads = TextTower.placeholder
        let dIn = backwardPacked(dFeatures, trace: trace, grads: &g)
        var ids: [Int] = []
        for (s, n) in trace.layout.lengths.enumerated() { ids += tokens[s].prefix(n) }
        backend.scatterAddRows(dIn, rows: ids, into: &g!.tokenEmbedding)
        grads = g!
    }

    /// An empty tower that stands in while a gradient is moved out (keeps the real one uniquely
    /// referenced, so accumulating into it does not copy).
    static let placeholder = TextTower(tokenEmbedding: Tensor(zeros: [0, 0]), positionalEmbedding: Tensor(zeros: [0, 0]),
                                       transformer: Transformer(blocks: []),
                                       lnFinal: LayerNorm(weight: Tensor(zeros: [0]), bias: Tensor(zeros: [0])),
                                       projection: Tensor(zeros: [0, 0]))
}

/// Where each row's EOT sits: the position of its largest token id, as CLIP's `argmax` finds it.
public func eotPositions(_ tokens: [[Int]]) -> [Int] {
    tokens.map { row in
        var best = 0
        for (i, id) in row.enumerated() where id > row[best] { best = i }
        return best
    }
}
