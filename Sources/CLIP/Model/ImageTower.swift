import TensorCore

/// Where the image tower's extra tokens (visual prompts) enter its sequence; neither gets a
/// positional embedding.
public enum ImagePromptEntry: Sendable, Equatable {
    /// After `ln_pre`, between the class token and the patch tokens (VPT, DAPT).
    case afterLnPre
    /// Appended after the patch tokens (which already hold their positional embedding) before
    /// `ln_pre`, which normalises them with the rest (MaPLe, PromptSRC).
    case appendedBeforeLnPre
}

/// CLIP's vision transformer. Optional extra tokens (visual prompts) enter where `promptEntry`
/// says, deep prompts may replace them before later blocks, and the backward returns their
/// gradients through the frozen tower.
///
/// Or CLIP's ModifiedResNet (RN50, RN101, RN50x4, ...) when `resnet` is set: the forward without
/// visual prompts runs it, and the ViT's tensors are empty. Extra tokens, deep prompts, kept caches
/// and every backward need a ViT; the methods that use them refuse a ResNet model first
/// (PromptLearning's `PromptError.needsViT`).
public struct ImageTower: Sendable {
    public var patchEmbedding: Linear       // W, 3*P*P (the conv1 kernel flattened; no bias)
    public var classEmbedding: Tensor       // W
    public var positionalEmbedding: Tensor  // 1 + G*G, W
    public var lnPre: LayerNorm
    public var transformer: Transformer
    public var lnPost: LayerNorm
    public var projection: Tensor           // W, E
    public let patchSize: Int
    /// The ResNet tower, for a ResNet CLIP.
    public var resnet: ResNetTower?

    /// A ResNet CLIP's image tower (no ViT tensors; `patchSize` is the tower's downsampling, 32).
    public init(resnet: ResNetTower) {
        let w = resnet.architecture.featureWidth
        self.init(patchEmbedding: Linear(weight: Tensor(zeros: [0, 0]), bias: nil), classEmbedding: Tensor(zeros: [0]),
                  positionalEmbedding: Tensor(zeros: [0, w]), lnPre: LayerNorm(weight: Tensor(zeros: [0]), bias: Tensor(zeros: [0])),
                  transformer: Transformer(blocks: []), lnPost: LayerNorm(weight: Tensor(zeros: [0]), bias: Tensor(zeros: [0])),
                  projection: Tensor(zeros: [0, resnet.embedDim]), patchSize: 32)
        self.resnet = resnet
    }

    /// What runs the tower (every layer's backend).
    public var backend: any ComputeBackend {
        get { transformer.backend }
        set {
            patchEmbedding.backend = newValue; lnPre.backend = newValue; transformer.backend = newValue
            lnPost.backend = newValue; resnet?.backend = newValue
        }
    }

    /// Whether this is a vision transformer (visual prompts, image-tower backward), not a ResNet.
    public var isViT: Bool { resnet == nil }

    public init(patchEmbedding: Linear, classEmbedding: Tensor, positionalEmbedding: Tensor, lnPre: LayerNorm,
                transformer: Transformer, lnPost: LayerNorm, projection: Tensor, patchSize: Int) {
        self.patchEmbedding = patchEmbedding; self.classEmbedding = classEmbedding
        self.positionalEmbedding = positionalEmbedding; self.lnPre = lnPre; self.transformer = transformer
        self.lnPost = lnPost; self.projection = projection; self.patchSize = patchSize
    }

    /// The ViT's width; a ResNet's channels entering its attention pool.
    public var width: Int { resnet?.architecture.featureWidth ?? classEmbedding.count }
    public var patchesPerImage: Int { resnet.map { $0.architecture.gridSize * $0.architecture.gridSize } ?? positionalEmbedding.shape[0] - 1 }
    public var gridSize: Int { Int(Double(patchesPerImage).squareRoot().rounded()) }
    public var resolution: Int { resnet?.resolution ?? gridSize * patchSize }
    /// `.half`: the pixels, the patch embeddings, the embedded tokens, ln_pre's output, every block,
    /// ln_post's output and the features (and the gradients back from the features) are rounded
    /// to fp16 values, as the reference's fp16 CLIP holds them; stored on the transformer.
    public var activationRounding: ActivationRounding {
        get { transformer.activationRounding }
        set { transformer.activationRounding = newValue }
    }

    /// pixels: B, 3, R, R -> B*G*G, 3*P*P; patches in row-major grid order, values in (c, y, x) order
    /// to match the convolution kernel's layout.
    public func patchify(_ pixels: Tensor, workspace: Workspace? = nil) -> Tensor {
        let (r, p, g) = (resolution, patchSize, gridSize)
        precondition(pixels.rank == 4 && Array(pixels.shape.dropFirst()) == [3, r, r],
                     "image tower input \(pixels.shape), expected [B, 3, \(r), \(r)]")
        var out = backend.tensor(workspace, [pixels.shape[0] * g * g, 3 * p * p], zeroed: false)  // every value written
        backend.patchify(pixels, patchSize: p, into: &out)
        return out
    }

    public struct Trace: Sendable {
        public var blocks: Transformer.Trace
        public var lnPost: LayerNorm.Cache
        public var batch: Int
        public var tokens: Int
        public var extraTokens: Int
        public var sharedExtra: Bool
        public var promptEntry: ImagePromptEntry = .afterLnPre
        /// ln_pre's cache of the extra tokens alone (`.appendedBeforeLnPre`): [N, W] when shared,
        /// else [B*N, W]; every image's copy of a shared prompt is normalised alike.
        public var promptLnPre: LayerNorm.Cache? = nil
        /// Each image's first extra-token row: 1 after ln_pre, 1 + G*G appended.
        public var promptRow: Int { promptEntry == .afterLnPre ? 1 : tokens - extraTokens }
        /// What the weight gradients need, kept with `keepCaches`: the patches (B*G*G, 3*P*P),
        /// ln_pre's cache and the pooled class tokens (B, W).
        public var patches: Tensor? = nil
        public var lnPre: LayerNorm.Cache? = nil
        public var pooled: Tensor? = nil
    }

    /// pixels: B, 3, R, R; extraTokens: nil, [N, W] (shared by every image) or [B, N, W]
    /// -> features B, E (not normalised). `promptEntry` says where the extra tokens enter;
    /// `deepPrompts[i]` ([N, W] or [B, N, W], N as the extra tokens) replaces the extra tokens'
    /// rows before block i (MaPLe's and PromptSRC's deep visual prompts: blocks 1..<depth).
    ///
    /// With a `workspace`, the activations (and the caches kept) come from it. `keepLinearInputs`
    /// false keeps only what `backwardToExtraTokens` reads (no weight gradients): about a third
    /// less memory per block.
    public func forward(pixels: Tensor, extraTokens: Tensor? = nil, promptEntry: ImagePromptEntry = .afterLnPre,
                        deepPrompts: [Int: Tensor] = [:], keepCaches: Bool = false,
                        keepHiddenStates: Bool = false, workspace: Workspace? = nil,
                        keepLinearInputs: Bool = true) -> (Tensor, Trace) {
        if let resnet {
            precondition(extraTokens == nil && deepPrompts.isEmpty && !keepCaches && !keepHiddenStates,
                         "visual prompts, kept caches and hidden states need a ViT image tower, not \(resnet.architecture.name)")
            // Inside the ResNet everything is fp32; the features are rounded as a ViT's would be.
            var features = resnet.forward(pixels: pixels, workspace: workspace ?? Workspace(backend: backend))
            activationRounding.apply(&features, backend: backend)
            let trace = Trace(blocks: Transformer.Trace(), lnPost: LayerNorm.Cache(input: Tensor(zeros: [0]), mean: Tensor(zeros: [0]), rstd: Tensor(zeros: [0])),
                              batch: pixels.shape[0], tokens: 0, extraTokens: 0, sharedExtra: true)
            return (features, trace)
        }
        let b = pixels.shape[0], w = width, gg = patchesPerImage
        let weightCaches = keepCaches && keepLinearInputs
        let rounding = activationRounding
        var patchRows = patchify(pixels, workspace: workspace)
        rounding.apply(&patchRows, backend: backend)
        var patches = patchEmbedding.forward(patchRows, workspace: workspace)  // B*G*G, W
        rounding.apply(&patches, backend: backend)
        if !weightCaches { workspace?.recycle(patchRows) }
        // Class token then patches, plus positional embedding.
        var x = backend.tensor(workspace, [b * (1 + gg), w], zeroed: false)  // every value written below
        backend.copyRows(classEmbedding, into: &x, spans: (0..<b).map { RowSpan(source: 0, target: $0 * (1 + gg), count: 1) },
                         accumulate: false)
        backend.copyRows(patches, into: &x, spans: (0..<b).map { RowSpan(source: $0 * gg, target: $0 * (1 + gg) + 1, count: gg) },
                         accumulate: false)
        workspace?.recycle(patches)
        backend.addBroadcast(positionalEmbedding, to: &x)
        rounding.apply(&x, backend: backend)
        var (h, lnPreCache) = lnPre.forward(x, workspace: workspace)
        rounding.apply(&h, backend: backend)
        if !weightCaches { lnPreCache.input = Tensor(zeros: [0]); workspace?.recycle(x) }
        var n = 0, shared = true, promptLnPre: LayerNorm.Cache? = nil
        if let extra = extraTokens {
            shared = extra.rank == 2
            n = shared ? extra.shape[0] : extra.shape[1]
            precondition(extra.lastDim == w && (shared || extra.shape[0] == b),
                         "extra image tokens \(extra.shape), expected [N, \(w)] or [\(b), N, \(w)]")
        }
        if let extra = extraTokens, promptEntry == .appendedBeforeLnPre {
            // ln_pre is row-wise: normalising the prompt rows apart from the image's rows is the
            // same, and a shared prompt is normalised once for every image.
            var (e, cache) = lnPre.forward(extra.reshaped([extra.rows, w]))
            rounding.apply(&e, backend: backend)
            promptLnPre = cache
            var y = backend.tensor(workspace, [b * (1 + gg + n), w], zeroed: false)  // every value written below
            backend.copyRows(h, into: &y, spans: (0..<b).map { RowSpan(source: $0 * (1 + gg), target: $0 * (1 + gg + n), count: 1 + gg) },
                             accumulate: false)
            backend.copyRows(e, into: &y, spans: (0..<b).map {
                RowSpan(source: shared ? 0 : $0 * n, target: $0 * (1 + gg + n) + 1 + gg, count: n)
            }, accumulate: false)
            workspace?.recycle(h)
            h = y
        } else if let extra = extraTokens {
            // Visual prompts after ln_pre, between the class token and the patches.
            var y = backend.tensor(workspace, [b * (1 + n + gg), w], zeroed: false)  // every value written below
            var spans: [RowSpan] = []
            for i in 0..<b {
                spans.append(RowSpan(source: i * (1 + gg), target: i * (1 + n + gg), count: 1))
                spans.append(RowSpan(source: i * (1 + gg) + 1, target: i * (1 + n + gg) + 1 + n, count: gg))
            }
            backend.copyRows(h, into: &y, spans: spans, accumulate: false)
            backend.copyRows(extra, into: &y, spans: (0..<b).map {
                RowSpan(source: shared ? 0 : $0 * n, target: $0 * (1 + n + gg) + 1, count: n)
            }, accumulate: false)
            workspace?.recycle(h)
            h = y
        }
        let t = 1 + n + gg
        precondition(deepPrompts.isEmpty || n > 0, "deep image prompts replace the extra tokens' rows: give extra tokens")
        let layout = SequenceLayout.uniform(batch: b, tokens: t)
        let deep = DeepPrompts(values: deepPrompts, position: promptEntry == .afterLnPre ? 1 : 1 + gg, layout: layout)
        precondition(deep.blocks.values.allSatisfy { $0.count == n && ($0.isShared || $0.values.shape[0] == b) },
                     "deep image prompts \(deepPrompts.mapValues(\.shape)), expected [\(n), \(w)] or [\(b), \(n), \(w)]")
        // Only the class tokens are read: the last block computes just those after its attention.
        let classRows = (0..<b).map { $0 * t }
        let (out, blocks) = transformer.forward(h, layout: layout, causal: false,
                                                outputRows: keepHiddenStates ? nil : classRows,
                                                deepPrompts: deep, keepCaches: keepCaches, keepHiddenStates: keepHiddenStates,
                                                workspace: workspace, keepLinearInputs: keepLinearInputs)
        var (pooled, lnCache) = lnPost.forward(keepHiddenStates ? backend.gatherRows(out, classRows) : out)
        rounding.apply(&pooled, backend: backend)
        var features = backend.matmul(pooled, projection)
        rounding.apply(&features, backend: backend)
        var trace = Trace(blocks: blocks, lnPost: lnCache, batch: b, tokens: t, extraTokens: n, sharedExtra: shared,
                          promptEntry: promptEntry, promptLnPre: promptLnPre)
        if weightCaches { trace.patches = patchRows; trace.lnPre = lnPreCache; trace.pooled = pooled }
        return (features, trace)
    }

    /// dFeatures: B, E -> gradient w.r.t. the extra tokens, in the shape they were given
    /// (summed over images when shared). The tower's weights stay frozen.
    public func backwardToExtraTokens(_ dFeatures: Tensor, trace: Trace) -> Tensor {
        var dropped: [Int: Tensor] = [:]
        return backwardToExtraTokens(dFeatures, trace: trace, deepPromptGrads: &dropped)
    }

    /// The same, and the deep prompts' gradients accumulate into `deepPromptGrads` (by block,
    /// shaped as given; created at zero when absent).
    public func backwardToExtraTokens(_ dFeatures: Tensor, trace: Trace, deepPromptGrads: inout [Int: Tensor]) -> Tensor {
        var none: ImageTower? = nil
        let dIn = backwardToTokens(dFeatures, trace: trace, grads: &none, deepPromptGrads: &deepPromptGrads)
        return extraTokenGradient(dIn, trace: trace)
    }

    /// `backwardToExtraTokens` releasing the trace as it goes: each block's cache goes back to
    /// `workspace` once its backward has run, and the temporaries come from it (the forward ran with
    /// `keepCaches`, ideally with the same workspace and `keepLinearInputs: false`). Equal to
    /// `backwardToExtraTokens(_:trace:)` bit for bit. `trace` is left without block caches.
    public func backwardToExtraTokens(_ dFeatures: Tensor, releasing trace: inout Trace, workspace: Workspace) -> Tensor {
        var dropped: [Int: Tensor] = [:]
        return backwardToExtraTokens(dFeatures, releasing: &trace, deepPromptGrads: &dropped, workspace: workspace)
    }

    /// The releasing backward that also accumulates the deep prompts' gradients into
    /// `deepPromptGrads` (by block, shaped as given; created at zero when absent).
    public func backwardToExtraTokens(_ dFeatures: Tensor, releasing trace: inout Trace, deepPromptGrads: inout [Int: Tensor],
                                      workspace: Workspace) -> Tensor {
        let (b, t, w) = (trace.batch, trace.tokens, width)
        var dFeatures = dFeatures
        activationRounding.apply(&dFeatures, backend: backend)
        var dPooled = backend.matmul(dFeatures, projection, transB: true)
        activationRounding.apply(&dPooled, backend: backend)
        var dClass = backend.zeros([b, w])
        var lnGrads: LayerNorm.Grads? = nil
        lnPost.backward(dPooled, cache: trace.lnPost, dx: &dClass, grads: &lnGrads)
        activationRounding.apply(&dClass, backend: backend)
        var dOut = dClass
        if trace.blocks.outputRows == nil {
            dOut = workspace.tensor([b * t, w])
            backend.scatterAddRows(dClass, rows: (0..<b).map { $0 * t }, into: &dOut)
        }
        var none: [ResidualBlock.Grads]? = nil
        let dIn = transformer.backward(dOut, releasing: &trace.blocks, grads: &none, deepPromptGrads: &deepPromptGrads,
                                       workspace: workspace)
        let dExtra = extraTokenGradient(dIn, trace: trace)
        workspace.recycle(dIn)
        return dExtra
    }

    /// The full backward (the forward run with `keepCaches`): every weight gradient accumulates into
    /// `grads`, a tower-shaped gradient (e.g. `CLIPModel.zeroGradient().image`); returns the gradient
    /// w.r.t. the extra tokens when there were any.
    @discardableResult
    public func backward(_ dFeatures: Tensor, trace: Trace, grads: inout ImageTower) -> Tensor? {
        guard let patches = trace.patches, let lnPreCache = trace.lnPre else {
            preconditionFailure("ImageTower.backward with weight gradients needs the forward run with keepCaches")
        }
        let (b, t, n, w, gg) = (trace.batch, trace.tokens, trace.extraTokens, width, patchesPerImage)
        var g: ImageTower? = grads
        var dropped: [Int: Tensor] = [:]
        let dIn = backwardToTokens(dFeatures, trace: trace, grads: &g, deepPromptGrads: &dropped)
        // The rows ln_pre produced from the image: each image's class token and patches (extra
        // tokens entering after ln_pre skipped).
        let patchRow = trace.promptEntry == .afterLnPre ? 1 + n : 1
        var rows: [Int] = []
        for i in 0..<b { rows.append(i * t); rows += (0..<gg).map { i * t + patchRow + $0 } }
        var dx = backend.zeros([b * (1 + gg), w])
        var lnGrads: LayerNorm.Grads? = g!.lnPre.asGrads
        lnPre.backward(backend.gatherRows(dIn, rows), cache: lnPreCache, dx: &dx, grads: &lnGrads)
        let dExtra: Tensor? = n > 0 ? extraTokenGradient(dIn, trace: trace, lnPreGrads: &lnGrads) : nil
        g!.lnPre.set(lnGrads!)
        // x = [class; patches W_conv^T] + positional, per image.
        var dPatches = backend.zeros([b * gg, w])
        backend.copyRows(dx, into: &g!.positionalEmbedding,
                         spans: (0..<b).map { RowSpan(source: $0 * (1 + gg), target: 0, count: 1 + gg) }, accumulate: true)
        backend.copyRows(dx, into: &g!.classEmbedding,
                         spans: (0..<b).map { RowSpan(source: $0 * (1 + gg), target: 0, count: 1) }, accumulate: true)
        backend.copyRows(dx, into: &dPatches,
                         spans: (0..<b).map { RowSpan(source: $0 * (1 + gg) + 1, target: $0 * gg, count: gg) }, accumulate: true)
        backend.add(backend.matmul(dPatches, patches, transA: true), to: &g!.patchEmbedding.weight)
        grads = g!
        return dExtra
    }

    /// dFeatures: B, E -> gradient w.r.t. the transformer's input rows (B*T, W), with the weight
    /// gradients of projection, ln_post and the blocks accumulated into `grads` when given.
    func backwardToTokens(_ dFeatures: Tensor, trace: Trace, grads: inout ImageTower?, deepPromptGrads: inout [Int: Tensor]) -> Tensor {
        let (b, t, w) = (trace.batch, trace.tokens, width)
        var dFeatures = dFeatures
        activationRounding.apply(&dFeatures, backend: backend)
        var dPooled = backend.matmul(dFeatures, projection, transB: true)
        activationRounding.apply(&dPooled, backend: backend)
        if grads != nil {
            guard let pooled = trace.pooled else { preconditionFailure("weight gradients need the forward run with keepCaches") }
            backend.add(backend.matmul(pooled, dFeatures, transA: true), to: &grads!.projection)
        }
        var dClass = backend.zeros([b, w])
        var lnGrads = grads?.lnPost.asGrads
        lnPost.backward(dPooled, cache: trace.lnPost, dx: &dClass, grads: &lnGrads)
        activationRounding.apply(&dClass, backend: backend)
        var dOut = dClass
        if trace.blocks.outputRows == nil {
            dOut = backend.zeros([b * t, w])
            backend.scatterAddRows(dClass, rows: (0..<b).map { $0 * t }, into: &dOut)
        }
        var blockGrads = grads?.transformer.asGrads
        let dIn = transformer.backward(dOut, trace: trace.blocks, grads: &blockGrads, deepPromptGrads: &deepPromptGrads)
        if grads != nil { grads!.lnPost.set(lnGrads!); grads!.transformer.set(blockGrads!) }
        return dIn
    }

    /// The gradient of the transformer's input rows -> the extra tokens' (through ln_pre when they
    /// entered before it; its weight gradients then accumulate into `lnPreGrads` when given).
    func extraTokenGradient(_ dIn: Tensor, trace: Trace) -> Tensor {
        var none: LayerNorm.Grads? = nil
        return extraTokenGradient(dIn, trace: trace, lnPreGrads: &none)
    }

    func extraTokenGradient(_ dIn: Tensor, trace: Trace, lnPreGrads: inout LayerNorm.Grads?) -> Tensor {
        let (b, t, n, w, row) = (trace.batch, trace.tokens, trace.extraTokens, width, trace.promptRow)
        var dExtra = backend.zeros(trace.sharedExtra ? [n, w] : [b, n, w])
        // Images in order, so a shared prompt's sum is the same as element by element.
        backend.copyRows(dIn, into: &dExtra, spans: (0..<b).map {
            RowSpan(source: $0 * t + row, target: trace.sharedExtra ? 0 : $0 * n, count: n)
        }, accumulate: true)
        guard trace.promptEntry == .appendedBeforeLnPre else { return dExtra }
        // ln_pre's backward is linear in its output gradient: a shared prompt's copies, normalised
        // alike, take the sum of their gradients at once.
        guard let cache = trace.promptLnPre else { preconditionFailure("appended extra tokens without ln_pre's cache") }
        var dTokens = backend.zeros([cache.input.rows, w])
        lnPre.backward(dExtra.reshaped([cache.input.rows, w]), cache: cache, dx: &dTokens, grads: &lnPreGrads)
        return dTokens.reshaped(dExtra.shape)
    }
}
