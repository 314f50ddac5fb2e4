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

    public var width: Int { tokenEmbedding.shape[1] }
    public var contextLength: Int { positionalEmbedding.shape[0] }

    /// Token embeddings of id rows (all rows the same length T): B, T, C. No positional embedding.
    public func embed(_ tokens: [[Int]]) -> Tensor {
        let t = tokens.first?.count ?? 0
        precondition(tokens.allSatisfy { $0.count == t }, "embed: token rows differ in length")
        return tokenEmbedding.gatherRows(tokens.flatMap { $0 }).reshaped([tokens.count, t, width])
    }

    public struct Trace: Sendable {
        public var blocks: Transformer.Trace
        public var lnFinal: LayerNorm.Cache
        public var pooled: Tensor  // B, C (after ln_final, at EOT)
        public var eot: [Int]
        public var tokens: Int     // T of the input
        public var layout: SequenceLayout
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
        let h = x.packed(layout, adding: positionalEmbedding)
        let (out, blocks) = transformer.forward(h, layout: layout, causal: true,
                                                keepCaches: keepCaches, keepHiddenStates: keepHiddenStates)
        let gathered = out.gatherRows((0..<b).map { layout.rowOffsets[$0] + eot[$0] })
        let (pooled, lnCache) = lnFinal.forward(gathered)
        let features = matmul(pooled, projection)
        return (features, Trace(blocks: blocks, lnFinal: lnCache, pooled: pooled, eot: eot, tokens: t, layout: layout))
    }

    /// dFeatures: B, E -> gradient w.r.t. the input embeddings, B, T, C (zero after each EOT).
    /// Weights stay frozen.
    public func backward(_ dFeatures: Tensor, trace: Trace) -> Tensor {
        let (b, c, layout) = (trace.eot.count, width, trace.layout)
        let dPooled = matmul(dFeatures, projection, transB: true)
        var dGathered = Tensor(zeros: [b, c])
        var noGrads: LayerNorm.Grads? = nil
        lnFinal.backward(dPooled, cache: trace.lnFinal, dx: &dGathered, grads: &noGrads)
        var dOut = Tensor(zeros: [layout.rows, c])
        for i in 0..<b {
            for j in 0..<c { dOut[(layout.rowOffsets[i] + trace.eot[i]) * c + j] = dGathered[i * c + j] }
        }
        var none: [ResidualBlock.Grads]? = nil
        return transformer.backward(dOut, trace: trace.blocks, grads: &none).unpacked(layout, tokens: trace.tokens)
    }
}

/// Where each row's EOT sits: the position of its largest token id, as CLIP's `argmax` finds it.
public func eotPositions(_ tokens: [[Int]]) -> [Int] {
    tokens.map { row in
        var best = 0
        for (i, id) in row.enumerated() where id > row[best] { best = i }
        return best
    }
}
