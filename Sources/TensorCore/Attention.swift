import CKernels
import Foundation

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
        public var input: Tensor   // B*T, C
        public var qkv: Tensor     // B*T, 3C
        public var probs: Tensor   // B, H, T, T (attention weights after softmax)
        public var context: Tensor // B*T, C (heads concatenated, before the out-projection)
        public var batch: Int
        public var tokens: Int
    }

    public struct Grads: Sendable {
        public var inProj: Linear.Grads
        public var outProj: Linear.Grads
        public init(zerosLike a: MultiheadAttention) {
            inProj = .init(zerosLike: a.inProj)
            outProj = .init(zerosLike: a.outProj)
        }
    }

    // x: B*T, C -> B*T, C
    public func forward(_ x: Tensor, batch: Int, tokens: Int, causal: Bool) -> (Tensor, Cache) {
        let (c, h, t) = (width, heads, tokens)
        let d = c / h
        precondition(x.rows == batch * tokens && x.lastDim == c, "attention input \(x.shape) vs B=\(batch) T=\(tokens) C=\(c)")
        let qkv = inProj.forward(x)
        var probs = Tensor(zeros: [batch, h, t, t])
        var context = Tensor(zeros: [batch * t, c])
        let scale = 1 / Float(d).squareRoot()
        qkv.withPointer { pqkv in probs.withMutablePointer { pp in context.withMutablePointer { pctx in
            let ldq = 3 * c
            for b in 0..<batch {
                for head in 0..<h {
                    let q = pqkv + b * t * ldq + head * d
                    let p = pp + (b * h + head) * t * t
                    // scores = q k^T / sqrt(d): T x T
                    gemm(transB: true, m: t, n: t, k: d, alpha: scale, a: q, lda: ldq, b: q + c, ldb: ldq,
                         c: p, ldc: t)
                    pt_softmax_rows(p, t, t, causal ? 0 : -1)
                    // context = p v: T x d, written into this head's columns
                    gemm(m: t, n: d, k: t, a: p, lda: t, b: q + 2 * c, ldb: ldq,
                         c: pctx + b * t * c + head * d, ldc: c)
                }
            }
        } } }
        let y = outProj.forward(context)
        return (y, Cache(input: x, qkv: qkv, probs: probs, context: context, batch: batch, tokens: tokens))
    }

    public func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, grads: inout Grads?) {
        let (c, h, t) = (width, heads, cache.tokens)
        let d = c / h
        let scale = 1 / Float(d).squareRoot()
        var dContext = Tensor(zeros: cache.context.shape)
        var outGrads = grads?.outProj
        outProj.backward(dy, input: cache.context, dx: &dContext, grads: &outGrads)
        var dqkv = Tensor(zeros: cache.qkv.shape)
        var dScores = [Float](repeating: 0, count: t * t)
        cache.qkv.withPointer { pqkv in cache.probs.withPointer { pp in dContext.withPointer { pdctx in
            dqkv.withMutablePointer { pdqkv in dScores.withUnsafeMutableBufferPointer { dsBuf in
                let ds = dsBuf.baseAddress!
                let ldq = 3 * c
                for b in 0..<cache.batch {
                    for head in 0..<h {
                        let off = b * t * ldq + head * d
                        let (q, k, v) = (pqkv + off, pqkv + off + c, pqkv + off + 2 * c)
                        let (dq, dk, dv) = (pdqkv + off, pdqkv + off + c, pdqkv + off + 2 * c)
                        let p = pp + (b * h + head) * t * t
                        let dctx = pdctx + b * t * c + head * d
                        // dP = dctx v^T; dv = p^T dctx
                        gemm(transB: true, m: t, n: t, k: d, a: dctx, lda: c, b: v, ldb: ldq, c: ds, ldc: t)
                        gemm(transA: true, m: t, n: d, k: t, a: p, lda: t, b: dctx, ldb: c, c: dv, ldc: ldq)
                        // dS = softmax backward (masked entries have p = 0, so their gradient is 0)
                        pt_softmax_backward(ds, ds, p, t, t)
                        // dq = scale dS k; dk = scale dS^T q
                        gemm(m: t, n: d, k: t, alpha: scale, a: ds, lda: t, b: k, ldb: ldq, c: dq, ldc: ldq)
                        gemm(transA: true, m: t, n: d, k: t, alpha: scale, a: ds, lda: t, b: q, ldb: ldq,
                             c: dk, ldc: ldq)
                    }
                }
            } }
        } } }
        var inGrads = grads?.inProj
        inProj.backward(dqkv, input: cache.input, dx: &dx, grads: &inGrads)
        if grads != nil { grads!.outProj = outGrads!; grads!.inProj = inGrads! }
    }
}

// MARK: - Residual block

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

    public struct Cache: Sendable {
        var ln1: LayerNorm.Cache
        var ln1Out: Tensor
        var attention: MultiheadAttention.Cache
        var ln2: LayerNorm.Cache
        var ln2Out: Tensor
        var hidden: Tensor  // c_fc output, before QuickGELU
        var gelu: Tensor
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

    // x: B*T, C -> B*T, C
    public func forward(_ x: Tensor, batch: Int, tokens: Int, causal: Bool) -> (Tensor, Cache) {
        let (a, ln1Cache) = ln1.forward(x)
        var (h, attnCache) = attention.forward(a, batch: batch, tokens: tokens, causal: causal)
        h.accumulate(x)
        let (b, ln2Cache) = ln2.forward(h)
        let hidden = fc.forward(b)
        let g = QuickGELU.forward(hidden)
        var y = proj.forward(g)
        y.accumulate(h)
        return (y, Cache(ln1: ln1Cache, ln1Out: a, attention: attnCache, ln2: ln2Cache, ln2Out: b,
                         hidden: hidden, gelu: g))
    }

    public func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, grads: inout Grads?) {
        // Second residual: dh = dy + d(mlp branch)
        var dh = dy
        var projGrads = grads?.proj, fcGrads = grads?.fc, ln2Grads = grads?.ln2
        var dg = Tensor(zeros: cache.gelu.shape)
        proj.backward(dy, input: cache.gelu, dx: &dg, grads: &projGrads)
        var dHidden = Tensor(zeros: cache.hidden.shape)
        QuickGELU.backward(dg, input: cache.hidden, dx: &dHidden)
        var dB = Tensor(zeros: cache.ln2Out.shape)
        fc.backward(dHidden, input: cache.ln2Out, dx: &dB, grads: &fcGrads)
        ln2.backward(dB, cache: cache.ln2, dx: &dh, grads: &ln2Grads)
        // First residual: dx += dh + d(attention branch)
        var attnGrads = grads?.attention, ln1Grads = grads?.ln1
        var dA = Tensor(zeros: cache.ln1Out.shape)
        attention.backward(dh, cache: cache.attention, dx: &dA, grads: &attnGrads)
        dx.accumulate(dh)
        ln1.backward(dA, cache: cache.ln1, dx: &dx, grads: &ln1Grads)
        if grads != nil {
            grads!.proj = projGrads!; grads!.fc = fcGrads!; grads!.ln2 = ln2Grads!
            grads!.attention = attnGrads!; grads!.ln1 = ln1Grads!
        }
    }
}

// MARK: - Transformer (a stack of blocks)

public struct Transformer: Sendable {
    public var blocks: [ResidualBlock]
    public init(blocks: [ResidualBlock]) { self.blocks = blocks }

    public struct Trace: Sendable {
        /// Per-block caches, when kept for a backward pass.
        public var caches: [ResidualBlock.Cache] = []
        /// Every block's output, when asked for (parity checks).
        public var hiddenStates: [Tensor] = []
    }

    // x: B*T, C -> B*T, C
    public func forward(_ x: Tensor, batch: Int, tokens: Int, causal: Bool,
                        keepCaches: Bool = false, keepHiddenStates: Bool = false) -> (Tensor, Trace) {
        var h = x
        var trace = Trace()
        for blk in blocks {
            let (y, cache) = blk.forward(h, batch: batch, tokens: tokens, causal: causal)
            if keepCaches { trace.caches.append(cache) }
            if keepHiddenStates { trace.hiddenStates.append(y) }
            h = y
        }
        return (h, trace)
    }

    /// dy: gradient of the last block's output; returns the gradient of the first block's input.
    /// `grads`, when given, must hold one entry per block and is accumulated into.
    public func backward(_ dy: Tensor, trace: Trace, grads: inout [ResidualBlock.Grads]?) -> Tensor {
        precondition(trace.caches.count == blocks.count, "Transformer.backward needs the forward run with keepCaches")
        var d = dy
        for i in blocks.indices.reversed() {
            var dx = Tensor(zeros: d.shape)
            var g = grads?[i]
            blocks[i].backward(d, cache: trace.caches[i], dx: &dx, grads: &g)
            if let g { grads![i] = g }
            d = dx
        }
        return d
    }
}
