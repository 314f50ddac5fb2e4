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
        public var batch: Int
        public var tokens: Int
    }

    /// embeddings: B, T, C with T <= context length; eot: B positions -> features B, E (not normalised).
    /// Rows after the last EOT may be cut off beforehand: the causal mask makes that exact.
    public func forward(embeddings x: Tensor, eot: [Int], keepCaches: Bool = false,
                        keepHiddenStates: Bool = false) -> (Tensor, Trace) {
        precondition(x.rank == 3 && x.shape[2] == width, "text tower input \(x.shape), expected [B, T, \(width)]")
        let (b, t, c) = (x.shape[0], x.shape[1], width)
        precondition(t <= contextLength, "text tower: \(t) tokens exceed the context length \(contextLength)")
        precondition(eot.count == b && eot.allSatisfy { $0 >= 0 && $0 < t }, "text tower: EOT positions \(eot) for \(b) rows of \(t) tokens")
        var h = x.reshaped([b * t, c])
        h.addToEachBlock(positionalEmbedding.slice(rows: 0..<t))
        let (out, blocks) = transformer.forward(h, batch: b, tokens: t, causal: true,
                                                keepCaches: keepCaches, keepHiddenStates: keepHiddenStates)
        let gathered = out.gatherRows((0..<b).map { $0 * t + eot[$0] })
        let (pooled, lnCache) = lnFinal.forward(gathered)
        let features = matmul(pooled, projection)
        return (features, Trace(blocks: blocks, lnFinal: lnCache, pooled: pooled, eot: eot, batch: b, tokens: t))
    }

    /// dFeatures: B, E -> gradient w.r.t. the input embeddings, B, T, C. Weights stay frozen.
    public func backward(_ dFeatures: Tensor, trace: Trace) -> Tensor {
        let (b, t, c) = (trace.batch, trace.tokens, width)
        let dPooled = matmul(dFeatures, projection, transB: true)
        var dGathered = Tensor(zeros: [b, c])
        var noGrads: LayerNorm.Grads? = nil
        lnFinal.backward(dPooled, cache: trace.lnFinal, dx: &dGathered, grads: &noGrads)
        var dOut = Tensor(zeros: [b * t, c])
        for i in 0..<b {
            for j in 0..<c { dOut[(i * t + trace.eot[i]) * c + j] = dGathered[i * c + j] }
        }
        var none: [ResidualBlock.Grads]? = nil
        return transformer.backward(dOut, trace: trace.blocks, grads: &none).reshaped([b, t, c])
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
