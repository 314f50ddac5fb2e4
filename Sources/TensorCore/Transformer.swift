public struct Transformer: Sendable {
    public var blocks: [ResidualBlock]
    /// `.half`: the input, every block's activations and output, and the gradients between and
    /// inside blocks are rounded to fp16 values, as the reference code's fp16 CLIP stores them
    /// (`CLIPModel.roundedToHalf()`); `.none` (default): fp32 throughout.
    public var activationRounding: ActivationRounding = .none
    /// What runs the blocks; setting it sets every block's.
    public var backend: any ComputeBackend = defaultBackend {
        didSet { for i in blocks.indices { blocks[i].backend = backend } }
    }
    public init(blocks: [ResidualBlock]) { self.blocks = blocks }

    public struct Trace: Sendable {
        /// Per-block caches, when kept for a backward pass.
        public var caches: [ResidualBlock.Cache] = []
        /// Every block's output, when asked for (parity checks); before the next block's row
        /// replacement.
        public var hiddenStates: [Tensor] = []
        /// The row replacements the forward made (the backward returns their gradients).
        public var deepPrompts = DeepPrompts()
        /// The rows the last block was restricted to (nil: all rows).
        public var outputRows: [Int]? { caches.last?.attention.outputRows }

        /// No caches: a forward that keeps nothing.
        public init() {}
    }

    // x: R, C -> R, C, or S, C with `outputRows`: the rows the caller reads (e.g. each sequence's
    // EOT or class token). The last block then computes only those rows after its attention.
    // `deepPrompts` replaces rows of a block's input before that block runs.
    //
    // With a `workspace`, activations come from it; caches not kept go back to it block by block.
    // `keepLinearInputs` false keeps only what a backward without weight gradients reads.
    public func forward(_ x: Tensor, layout: SequenceLayout, causal: Bool, outputRows: [Int]? = nil,
                        deepPrompts: DeepPrompts = DeepPrompts(),
                        keepCaches: Bool = false, keepHiddenStates: Bool = false,
                        workspace: Workspace? = nil, keepLinearInputs: Bool = true) -> (Tensor, Trace) {
        precondition(deepPrompts.blocks.keys.allSatisfy { blocks.indices.contains($0) },
                     "deep prompts for blocks \(deepPrompts.blocks.keys.sorted()) of \(blocks.count)")
        // An inference forward without a workspace still reuses each block's buffers for the next
        // (fresh buffers would fault in new pages every block).
        let workspace = workspace ?? (keepCaches || keepHiddenStates ? nil : Workspace(backend: backend))
        var h = x
        activationRounding.apply(&h, backend: backend)
        var trace = Trace()
        trace.deepPrompts = deepPrompts
        for (i, blk) in blocks.enumerated() {
            // The previous block's output is only ours (a kept hidden state is copied on write).
            deepPrompts.blocks[i]?.apply(to: &h, backend: backend)
            var (y, cache) = blk.forward(h, layout: layout, causal: causal, outputRows: i == blocks.count - 1 ? outputRows : nil,
                                         workspace: workspace, keepLinearInputs: keepLinearInputs || !keepCaches,
                                         rounding: activationRounding)
            if keepCaches { trace.caches.append(cache) }
            if keepHiddenStates { trace.hiddenStates.append(y) }
            h = y
            if !keepCaches && !keepHiddenStates, let workspace, i > 0 { cache.recycle(into: workspace) }
        }
        return (h, trace)
    }

    public func forward(_ x: Tensor, batch: Int, tokens: Int, causal: Bool,
                        keepCaches: Bool = false, keepHiddenStates: Bool = false) -> (Tensor, Trace) {
        forward(x, layout: .uniform(batch: batch, tokens: tokens), causal: causal,
                keepCaches: keepCaches, keepHiddenStates: keepHiddenStates)
    }

    /// The backward releasing the trace as it goes: each block's cache goes back to `workspace`
    /// once that block's backward has run, and the backward's temporaries come from it, so a step's
    /// backward reuses the memory its forward kept. `trace` is left without caches. The
    /// gradients of the forward's deep prompts are dropped (`backward(_:releasing:grads:deepPromptGrads:workspace:)` returns them).
    public func backward(_ dy: Tensor, releasing trace: inout Trace, grads: inout [ResidualBlock.Grads]?,
                         workspace: Workspace) -> Tensor {
        var dropped: [Int: Tensor] = [:]
        return backward(dy, releasing: &trace, grads: &grads, deepPromptGrads: &dropped, workspace: workspace)
    }

    /// The releasing backward that also accumulates into `deepPromptGrads[i]` the gradient of the
    /// values replacing rows before block i (shaped as those values; created at zero when absent).
    public func backward(_ dy: Tensor, releasing trace: inout Trace, grads: inout [ResidualBlock.Grads]?,
                         deepPromptGrads: inout [Int: Tensor], workspace: Workspace) -> Tensor {
        precondition(trace.caches.count == blocks.count, "Transformer.backward needs the forward run with keepCaches")
        var d = dy
        for i in blocks.indices.reversed() {
            var cache = trace.caches.removeLast()
            var dx = workspace.tensor(cache.ln1.input.shape)
            var g = grads?[i]
            blocks[i].backward(d, cache: cache, dx: &dx, grads: &g, workspace: workspace, rounding: activationRounding)
            activationRounding.apply(&dx, backend: backend)
            if let g { grads![i] = g }
            if let r = trace.deepPrompts.blocks[i] {
                r.takeGradient(from: &dx, into: &deepPromptGrads[i, default: backend.zeros(r.values.shape)], backend: backend)
            }
            cache.recycle(into: workspace)
            if i != blocks.count - 1 { workspace.recycle(d) }  // the first d is the caller's
            d = dx
        }
        return d
    }

    /// dy: gradient of the last block's output; returns the gradient of the first block's input
    /// (zero in rows that block 0's deep prompt replaced).
    /// `grads`, when given, must hold one entry per block and is accumulated into.
    public func backward(_ dy: Tensor, trace: Trace, grads: inout [ResidualBlock.Grads]?) -> Tensor {
        var dropped: [Int: Tensor] = [:]
        return backward(dy, trace: trace, grads: &grads, deepPromptGrads: &dropped)
    }

    /// The backward that also accumulates into `deepPromptGrads[i]` the gradient of the values
    /// replacing rows before block i (shaped as those values; created at zero when absent).
    public func backward(_ dy: Tensor, trace: Trace, grads: inout [ResidualBlock.Grads]?,
                         deepPromptGrads: inout [Int: Tensor]) -> Tensor {
        precondition(trace.caches.count == blocks.count, "Transformer.backward needs the forward run with keepCaches")
        var d = dy
        for i in blocks.indices.reversed() {
            var dx = backend.zeros(trace.caches[i].ln1.input.shape)
            var g = grads?[i]
            blocks[i].backward(d, cache: trace.caches[i], dx: &dx, grads: &g, rounding: activationRounding)
            activationRounding.apply(&dx, backend: backend)
            if let g { grads![i] = g }
            if let r = trace.deepPrompts.blocks[i] {
                r.takeGradient(from: &dx, into: &deepPromptGrads[i, default: backend.zeros(r.values.shape)], backend: backend)
            }
            d = dx
        }
        return d
    }
}
