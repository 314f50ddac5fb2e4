import TensorCore

/// CLIP's vision transformer. Optional extra tokens (visual prompts) are inserted after `ln_pre`
/// between the class token and the patch tokens, without positional embedding, and the backward
/// returns their gradient through the frozen tower.
public struct ImageTower: Sendable {
    public var patchEmbedding: Linear       // W, 3*P*P (the conv1 kernel flattened; no bias)
    public var classEmbedding: Tensor       // W
    public var positionalEmbedding: Tensor  // 1 + G*G, W
    public var lnPre: LayerNorm
    public var transformer: Transformer
    public var lnPost: LayerNorm
    public var projection: Tensor           // W, E
    public let patchSize: Int

    public init(patchEmbedding: Linear, classEmbedding: Tensor, positionalEmbedding: Tensor, lnPre: LayerNorm,
                transformer: Transformer, lnPost: LayerNorm, projection: Tensor, patchSize: Int) {
        self.patchEmbedding = patchEmbedding; self.classEmbedding = classEmbedding
        self.positionalEmbedding = positionalEmbedding; self.lnPre = lnPre; self.transformer = transformer
        self.lnPost = lnPost; self.projection = projection; self.patchSize = patchSize
    }

    public var width: Int { classEmbedding.count }
    public var patchesPerImage: Int { positionalEmbedding.shape[0] - 1 }
    public var gridSize: Int { Int(Double(patchesPerImage).squareRoot().rounded()) }
    public var resolution: Int { gridSize * patchSize }

    /// pixels: B, 3, R, R -> B*G*G, 3*P*P; patches in row-major grid order, values in (c, y, x) order
    /// to match the convolution kernel's layout.
    public func patchify(_ pixels: Tensor) -> Tensor {
        let (r, p, g) = (resolution, patchSize, gridSize)
        precondition(pixels.rank == 4 && Array(pixels.shape.dropFirst()) == [3, r, r],
                     "image tower input \(pixels.shape), expected [B, 3, \(r), \(r)]")
        let b = pixels.shape[0]
        let cols = 3 * p * p
        var out = Tensor(zeros: [b * g * g, cols])
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
        return out
    }

    public struct Trace: Sendable {
        public var blocks: Transformer.Trace
        public var lnPost: LayerNorm.Cache
        public var batch: Int
        public var tokens: Int
        public var extraTokens: Int
        public var sharedExtra: Bool
    }

    /// pixels: B, 3, R, R; extraTokens: nil, [N, W] (shared by every image) or [B, N, W]
    /// -> features B, E (not normalised).
    public func forward(pixels: Tensor, extraTokens: Tensor? = nil, keepCaches: Bool = false,
                        keepHiddenStates: Bool = false) -> (Tensor, Trace) {
        let b = pixels.shape[0], w = width, gg = patchesPerImage
        let patches = patchEmbedding.forward(patchify(pixels))  // B*G*G, W
        // Class token then patches, plus positional embedding.
        var x = Tensor(zeros: [b * (1 + gg), w])
        x.withMutablePointer { px in patches.withPointer { pp in classEmbedding.withPointer { pc in
            for i in 0..<b {
                (px + i * (1 + gg) * w).update(from: pc, count: w)
                (px + (i * (1 + gg) + 1) * w).update(from: pp + i * gg * w, count: gg * w)
            }
        } } }
        x.addToEachBlock(positionalEmbedding)
        var (h, _) = lnPre.forward(x)
        // Visual prompts after ln_pre, between the class token and the patches.
        var n = 0, shared = true
        if let extra = extraTokens {
            shared = extra.rank == 2
            n = shared ? extra.shape[0] : extra.shape[1]
            precondition(extra.lastDim == w && (shared || extra.shape[0] == b),
                         "extra image tokens \(extra.shape), expected [N, \(w)] or [\(b), N, \(w)]")
            var y = Tensor(zeros: [b * (1 + n + gg), w])
            y.withMutablePointer { py in h.withPointer { ph in extra.withPointer { pe in
                for i in 0..<b {
                    let dst = py + i * (1 + n + gg) * w, src = ph + i * (1 + gg) * w
                    dst.update(from: src, count: w)
                    (dst + w).update(from: pe + (shared ? 0 : i * n * w), count: n * w)
                    (dst + (1 + n) * w).update(from: src + w, count: gg * w)
                }
            } } }
            h = y
        }
        let t = 1 + n + gg
        // Only the class tokens are read: the last block computes just those after its attention.
        let classRows = (0..<b).map { $0 * t }
        let (out, blocks) = transformer.forward(h, layout: .uniform(batch: b, tokens: t), causal: false,
                                                outputRows: keepHiddenStates ? nil : classRows,
                                                keepCaches: keepCaches, keepHiddenStates: keepHiddenStates)
        let (pooled, lnCache) = lnPost.forward(keepHiddenStates ? out.gatherRows(classRows) : out)
        let features = matmul(pooled, projection)
        return (features, Trace(blocks: blocks, lnPost: lnCache, batch: b, tokens: t, extraTokens: n, sharedExtra: shared))
    }

    /// dFeatures: B, E -> gradient w.r.t. the extra tokens, in the shape they were given
    /// (summed over images when shared). The tower's weights stay frozen.
    public func backwardToExtraTokens(_ dFeatures: Tensor, trace: Trace) -> Tensor {
        let (b, t, n, w) = (trace.batch, trace.tokens, trace.extraTokens, width)
        let dPooled = matmul(dFeatures, projection, transB: true)
        var dClass = Tensor(zeros: [b, w])
        var noGrads: LayerNorm.Grads? = nil
        lnPost.backward(dPooled, cache: trace.lnPost, dx: &dClass, grads: &noGrads)
        var dOut = dClass
        if trace.blocks.outputRows == nil {
            dOut = Tensor(zeros: [b * t, w])
            dOut.addRows(dClass, at: (0..<b).map { $0 * t })
        }
        var none: [ResidualBlock.Grads]? = nil
        let dIn = transformer.backward(dOut, trace: trace.blocks, grads: &none)
        var dExtra = Tensor(zeros: trace.sharedExtra ? [n, w] : [b, n, w])
        for i in 0..<b {
            for k in 0..<(n * w) {
                dExtra[(trace.sharedExtra ? 0 : i * n * w) + k] += dIn[(i * t + 1) * w + k]
            }
        }
        return dExtra
    }
}
