import CKernels
import Foundation

/// How the rows of a packed activation split into sequences: sequence s is `lengths[s]` rows
/// starting at row `rowOffsets[s]`. Sequences of different lengths share one GEMM in every
/// linear layer; attention runs per sequence. Cutting each text row after its own EOT is exact
/// under the causal mask, so no padding row is ever computed.
///
/// With `prefix` > 0 (causal attention only), the first `prefix` rows are a shared beginning of
/// every sequence: computed once, attended to by each sequence's rows before their own, and
/// receiving the sum of every sequence's gradient in the backward. This is CoOp's shared context
/// (SOS + M context vectors, identical for all classes) done once instead of K times.
public struct SequenceLayout: Sendable, Equatable {
    public let prefix: Int
    public let lengths: [Int]
    public let rowOffsets: [Int]
    public let rows: Int

    public init(prefix: Int = 0, lengths: [Int]) {
        precondition(prefix >= 0 && lengths.allSatisfy { $0 > 0 }, "SequenceLayout: bad prefix \(prefix) or empty sequence in \(lengths)")
        var offsets: [Int] = [], r = prefix
        for t in lengths { offsets.append(r); r += t }
        self.prefix = prefix
        self.lengths = lengths
        self.rowOffsets = offsets
        self.rows = r
    }

    public static func uniform(batch: Int, tokens: Int) -> SequenceLayout {
        SequenceLayout(lengths: Array(repeating: tokens, count: batch))
    }
}

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
        public var probs: [Float]  // per sequence s and head: T_s x T_s attention weights
        public var context: Tensor // R, C (heads concatenated, before the out-projection); empty when not kept
        public var layout: SequenceLayout
        public var outputRows: [Int]?
        /// Whether `input` and `context` (read only by the weight gradients) were kept.
        public var hasLinearInputs: Bool { !context.data.isEmpty }

        /// Gives every buffer back to `workspace` (the cache must not be read afterwards).
        public mutating func recycle(into workspace: Workspace) {
            workspace.recycle(input); workspace.recycle(qkv); workspace.recycle(context)
            workspace.recycle(Tensor(shape: [probs.count], data: probs))
            input = Tensor(zeros: [0]); qkv = Tensor(zeros: [0]); context = Tensor(zeros: [0]); probs = []
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

    /// Where each block of attention weights lives: the prefix's (H blocks of P x P) first, then
    /// each sequence's (H blocks of T_s x (P + T_s)).
    func probOffsets(_ layout: SequenceLayout) -> (prefix: Int, sequences: [Int], total: Int) {
        let p = layout.prefix
        var offsets: [Int] = [], total = heads * p * p
        for t in layout.lengths { offsets.append(total); total += heads * t * (p + t) }
        return (0, offsets, total)
    }

    // x: R, C -> R, C, where the rows hold the (prefix and) sequences of `layout`; with
    // `outputRows`, only those rows leave the out-projection: S, C. With `keepLinearInputs` false
    // the cache holds no input or context (enough for a backward without weight gradients), and the
    // context goes back to `workspace` at once.
    public func forward(_ x: Tensor, layout: SequenceLayout, causal: Bool, outputRows: [Int]? = nil,
                        workspace: Workspace? = nil, keepLinearInputs: Bool = true) -> (Tensor, Cache) {
        let (c, h) = (width, heads)
        let d = c / h
        precondition(x.rows == layout.rows && x.lastDim == c, "attention input \(x.shape) vs \(layout.rows) rows of width \(c)")
        precondition(layout.prefix == 0 || causal, "a shared prefix needs causal attention")
        let qkv = inProj.forward(x, workspace: workspace)
        let offsets = probOffsets(layout)
        // Every value of both is written below (the first product into each block has beta 0).
        var probs = Workspace.tensor(workspace, [offsets.total], zeroed: false).data
        var context = Workspace.tensor(workspace, [layout.rows, c], zeroed: false)
        let scale = 1 / Float(d).squareRoot()
        let p = layout.prefix
        qkv.withPointer { pqkv in probs.withUnsafeMutableBufferPointer { pbuf in context.withMutablePointer { pctx in
            let pp = pbuf.baseAddress!
            let ldq = 3 * c
            if let grid = gridShape(layout),
               forwardGrid(qkv: pqkv, probs: pp, context: pctx, batch: grid.batch, tokens: grid.tokens, causal: causal) {
                return
            }
            parallelOverHeads { head, _ in
                let kp = pqkv + head * d + c, vp = pqkv + head * d + 2 * c  // prefix keys / values
                if p > 0 {
                    let s = pp + offsets.prefix + head * p * p
                    gemm(transB: true, m: p, n: p, k: d, alpha: scale, a: pqkv + head * d, lda: ldq, b: kp, ldb: ldq, c: s, ldc: p)
                    pt_softmax_rows(s, p, p, 0)
                    gemm(m: p, n: d, k: p, a: s, lda: p, b: vp, ldb: ldq, c: pctx + head * d, ldc: c)
                }
                for (i, t) in layout.lengths.enumerated() {
                    let r0 = layout.rowOffsets[i]
                    let q = pqkv + r0 * ldq + head * d
                    let n = p + t  // keys: the prefix's, then this sequence's
                    let s = pp + offsets.sequences[i] + head * t * n
                    // scores = q [k_prefix; k]^T / sqrt(d): T x (P + T)
                    if p > 0 { gemm(transB: true, m: t, n: p, k: d, alpha: scale, a: q, lda: ldq, b: kp, ldb: ldq, c: s, ldc: n) }
                    gemm(transB: true, m: t, n: t, k: d, alpha: scale, a: q, lda: ldq, b: q + c, ldb: ldq, c: s + p, ldc: n)
                    pt_softmax_rows(s, t, n, causal ? p : -1)
                    // context = s [v_prefix; v]: T x d, written into this head's columns
                    let out = pctx + r0 * c + head * d
                    if p > 0 { gemm(m: t, n: d, k: p, a: s, lda: n, b: vp, ldb: ldq, c: out, ldc: c) }
                    gemm(m: t, n: d, k: t, a: s + p, lda: n, b: q + 2 * c, ldb: ldq, beta: p > 0 ? 1 : 0, c: out, ldc: c)
                }
            }
        } } }
        let y = outProj.forward(outputRows.map { context.gatherRows($0) } ?? context, workspace: workspace)
        if !keepLinearInputs {
            workspace?.recycle(context)
            return (y, Cache(input: Tensor(zeros: [0]), qkv: qkv, probs: probs, context: Tensor(zeros: [0]),
                             layout: layout, outputRows: outputRows))
        }
        return (y, Cache(input: x, qkv: qkv, probs: probs, context: context, layout: layout, outputRows: outputRows))
    }

    /// Temporaries come from `workspace` when given and go back to it.
    public func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, grads: inout Grads?, workspace: Workspace? = nil) {
        let (c, h) = (width, heads)
        let d = c / h
        let scale = 1 / Float(d).squareRoot()
        let layout = cache.layout
        let p = layout.prefix
        precondition(grads == nil || cache.hasLinearInputs,
                     "attention weight gradients need the forward run with keepLinearInputs")
        var dContext = Workspace.tensor(workspace, [layout.rows, c])
        var outGrads = grads?.outProj
        if let rows = cache.outputRows {
            var dRows = Tensor(zeros: [rows.count, width])
            outProj.backward(dy, input: grads == nil ? cache.context : cache.context.gatherRows(rows), dx: &dRows, grads: &outGrads)
            dContext.addRows(dRows, at: rows)
        } else {
            outProj.backward(dy, input: cache.context, dx: &dContext, grads: &outGrads)
        }
        // Every dq, dk, dv row is written with beta 0 below, except a shared prefix's, which
        // accumulates over sequences: only then does dqkv start from zero.
        var dqkv = Workspace.tensor(workspace, cache.qkv.shape, zeroed: layout.prefix > 0)
        let ranGrid = gridShape(layout).map {
            backwardGrid(qkv: cache.qkv, probs: cache.probs, dContext: dContext, dqkv: &dqkv, batch: $0.batch,
                         tokens: $0.tokens, workspace: workspace)
        } ?? false
        if !ranGrid {
            let offsets = probOffsets(layout)
            let longest = max(p * p, layout.lengths.map { $0 * (p + $0) }.max() ?? 0)
            let workers = min(Self.workers, h)
            var scratch = [Float](repeating: 0, count: workers * longest)
            cache.qkv.withPointer { pqkv in cache.probs.withUnsafeBufferPointer { pbuf in dContext.withPointer { pdctx in
                dqkv.withMutablePointer { pdqkv in scratch.withUnsafeMutableBufferPointer { sbuf in
                    let pp = pbuf.baseAddress!
                    let ldq = 3 * c
                    parallelOverHeads { head, worker in
                        let ds = sbuf.baseAddress! + worker * longest
                        let (qp, kp, vp) = (pqkv + head * d, pqkv + head * d + c, pqkv + head * d + 2 * c)
                        let (dqp, dkp, dvp) = (pdqkv + head * d, pdqkv + head * d + c, pdqkv + head * d + 2 * c)
                        for (i, t) in layout.lengths.enumerated() {
                            let r0 = layout.rowOffsets[i]
                            let n = p + t
                            let off = r0 * ldq + head * d
                            let (q, k, v) = (pqkv + off, pqkv + off + c, pqkv + off + 2 * c)
                            let (dq, dk, dv) = (pdqkv + off, pdqkv + off + c, pdqkv + off + 2 * c)
                            let s = pp + offsets.sequences[i] + head * t * n
                            let dctx = pdctx + r0 * c + head * d
                            // dS = dctx [v_prefix; v]^T; dv = s^T dctx (the prefix's part accumulates over sequences)
                            if p > 0 {
                                gemm(transB: true, m: t, n: p, k: d, a: dctx, lda: c, b: vp, ldb: ldq, c: ds, ldc: n)
                                gemm(transA: true, m: p, n: d, k: t, a: s, lda: n, b: dctx, ldb: c, beta: 1, c: dvp, ldc: ldq)
                            }
                            gemm(transB: true, m: t, n: t, k: d, a: dctx, lda: c, b: v, ldb: ldq, c: ds + p, ldc: n)
                            gemm(transA: true, m: t, n: d, k: t, a: s + p, lda: n, b: dctx, ldb: c, c: dv, ldc: ldq)
                            // softmax backward (masked entries have s = 0, so their gradient is 0)
                            pt_softmax_backward(ds, ds, s, t, n)
                            // dq = scale dS [k_prefix; k]; dk = scale dS^T q (prefix part accumulates)
                            if p > 0 {
                                gemm(m: t, n: d, k: p, alpha: scale, a: ds, lda: n, b: kp, ldb: ldq, c: dq, ldc: ldq)
                                gemm(transA: true, m: p, n: d, k: t, alpha: scale, a: ds, lda: n, b: q, ldb: ldq, beta: 1, c: dkp, ldc: ldq)
                            }
                            gemm(m: t, n: d, k: t, alpha: scale, a: ds + p, lda: n, b: k, ldb: ldq, beta: p > 0 ? 1 : 0, c: dq, ldc: ldq)
                            gemm(transA: true, m: t, n: d, k: t, alpha: scale, a: ds + p, lda: n, b: q, ldb: ldq, c: dk, ldc: ldq)
                        }
                        if p > 0 {
                            // The prefix's own causal self-attention; its gradients add to what the sequences gave.
                            let s = pp + offsets.prefix + head * p * p
                            let dctx = pdctx + head * d
                            gemm(transB: true, m: p, n: p, k: d, a: dctx, lda: c, b: vp, ldb: ldq, c: ds, ldc: p)
                            gemm(transA: true, m: p, n: d, k: p, a: s, lda: p, b: dctx, ldb: c, beta: 1, c: dvp, ldc: ldq)
                            pt_softmax_backward(ds, ds, s, p, p)
                            gemm(m: p, n: d, k: p, alpha: scale, a: ds, lda: p, b: kp, ldb: ldq, beta: 1, c: dqp, ldc: ldq)
                            gemm(transA: true, m: p, n: d, k: p, alpha: scale, a: ds, lda: p, b: qp, ldb: ldq, beta: 1, c: dkp, ldc: ldq)
                        }
                    }
                } }
            } } }
        }
        var inGrads = grads?.inProj
        inProj.backward(dqkv, input: cache.input, dx: &dx, grads: &inGrads)
        if grads != nil { grads!.outProj = outGrads!; grads!.inProj = inGrads! }
        if let workspace { workspace.recycle(dContext); workspace.recycle(dqkv) }
    }

    /// (sequences, tokens) when the per-head products run as one oneDNN grid over sequences x
    /// heads: every sequence of one length (an image tower's batch), no prefix, and products large
    /// enough that oneDNN would run each of them anyway (a ViT-B/16 layer then makes 2 calls
    /// instead of 2 per image and head).
    func gridShape(_ layout: SequenceLayout) -> (batch: Int, tokens: Int)? {
        guard layout.prefix == 0, Compute.gemmBackend == .oneDNN, let t = layout.lengths.first,
              layout.lengths.allSatisfy({ $0 == t }), t * t * (width / heads) > smallGEMMLimit else { return nil }
        return (layout.lengths.count, t)
    }

    /// The forward's per-head products as two grids over (sequence, head): scores into `probs`
    /// (sequence-major, then head: the layout `probOffsets` gives), then context. False, with
    /// nothing written, when oneDNN has no kernel for the strides.
    private func forwardGrid(qkv: UnsafePointer<Float>, probs: UnsafeMutablePointer<Float>,
                             context: UnsafeMutablePointer<Float>, batch: Int, tokens t: Int, causal: Bool) -> Bool {
        let (c, h) = (width, heads)
        let d = c / h, ldq = 3 * c
        let grid = (batch, h), scale = 1 / Float(d).squareRoot()
        let bf16 = Compute.precision == .bf16  // as the layers' products: bf16 inputs, fp32 accumulation
        let qkvStrides = (t * ldq, d), probStrides = (h * t * t, t * t)
        // scores = q k^T / sqrt(d), softmax per row, context = scores v (into each head's columns)
        let scores = GridGEMM(outer: grid, transB: true, m: t, n: t, k: d, alpha: scale, lda: ldq, strideA: qkvStrides,
                              ldb: ldq, strideB: qkvStrides, ldc: t, strideC: probStrides, bf16: bf16)
        let mix = GridGEMM(outer: grid, m: t, n: d, k: t, lda: t, strideA: probStrides, ldb: ldq, strideB: qkvStrides,
                           ldc: c, strideC: (t * c, d), bf16: bf16)
        guard scores.runsOnOneDNN, mix.runsOnOneDNN else { return false }
        scores.run(a: qkv, b: qkv + c, c: probs)
        let blocks = batch * h
        Compute.parallel(workers: min(Self.workers, blocks)) { w, team in
            let (lo, hi) = (blocks * w / team, blocks * (w + 1) / team)
            if causal {
                for blk in lo..<hi { pt_softmax_rows(probs + blk * t * t, t, t, 0) }
            } else if hi > lo {
                pt_softmax_rows(probs + lo * t * t, (hi - lo) * t, t, -1)
            }
        }
        mix.run(a: probs, b: qkv + 2 * c, c: context)
        return true
    }

    /// The backward's per-head products as grids over (sequence, head), writing all of `dqkv`.
    /// False, with nothing written, when oneDNN has no kernel for the strides.
    private func backwardGrid(qkv: Tensor, probs: [Float], dContext: Tensor, dqkv: inout Tensor, batch: Int,
                              tokens t: Int, workspace: Workspace?) -> Bool {
        let (c, h) = (width, heads)
        let d = c / h, ldq = 3 * c
        let grid = (batch, h), scale = 1 / Float(d).squareRoot()
        let bf16 = Compute.precision == .bf16  // as the layers' products: bf16 inputs, fp32 accumulation
        let qkvStrides = (t * ldq, d), probStrides = (h * t * t, t * t), contextStrides = (t * c, d)
        // dS = dctx v^T; dv = S^T dctx; dq = scale dS k; dk = scale dS^T q
        let dScoresProduct = GridGEMM(outer: grid, transB: true, m: t, n: t, k: d, lda: c, strideA: contextStrides,
                                      ldb: ldq, strideB: qkvStrides, ldc: t, strideC: probStrides, bf16: bf16)
        let dValues = GridGEMM(outer: grid, transA: true, m: t, n: d, k: t, lda: t, strideA: probStrides,
                               ldb: c, strideB: contextStrides, ldc: ldq, strideC: qkvStrides, bf16: bf16)
        let dQueries = GridGEMM(outer: grid, m: t, n: d, k: t, alpha: scale, lda: t, strideA: probStrides,
                                ldb: ldq, strideB: qkvStrides, ldc: ldq, strideC: qkvStrides, bf16: bf16)
        let dKeys = GridGEMM(outer: grid, transA: true, m: t, n: d, k: t, alpha: scale, lda: t, strideA: probStrides,
                             ldb: ldq, strideB: qkvStrides, ldc: ldq, strideC: qkvStrides, bf16: bf16)
        guard [dScoresProduct, dValues, dQueries, dKeys].allSatisfy(\.runsOnOneDNN) else { return false }
        var dScores = Workspace.tensor(workspace, [batch * h * t * t], zeroed: false)  // written by the first product
        qkv.withPointer { pqkv in probs.withUnsafeBufferPointer { pbuf in dContext.withPointer { pdctx in
            dqkv.withMutablePointer { pdqkv in dScores.withMutablePointer { ds in
                let s = pbuf.baseAddress!
                dScoresProduct.run(a: pdctx, b: pqkv + 2 * c, c: ds)
                dValues.run(a: s, b: pdctx, c: pdqkv + 2 * c)
                let rows = batch * h * t
                Compute.parallel(workers: min(Self.workers, rows)) { w, team in
                    let (lo, hi) = (rows * w / team, rows * (w + 1) / team)
                    if hi > lo { pt_softmax_backward(ds + lo * t, ds + lo * t, s + lo * t, hi - lo, t) }
                }
                dQueries.run(a: ds, b: pqkv + c, c: pdqkv)
                dKeys.run(a: ds, b: pqkv, c: pdqkv + c)
            } }
        } } }
        workspace?.recycle(dScores)
        return true
    }

    /// Threads that share the per-head loops. Each runs single-threaded GEMMs on its own heads
    /// (all sequences of a head stay on one thread, so the shared prefix's gradient has one writer).
    static var workers: Int { max(1, Compute.threads) }

    /// Runs body(head, worker) for every head, heads split across `workers` threads (worker <
    /// min(workers, heads), one thread each: per-worker scratch is safe).
    func parallelOverHeads(_ body: (_ head: Int, _ worker: Int) -> Void) {
        let workers = min(Self.workers, heads)
        if workers <= 1 {
            for head in 0..<heads { body(head, 0) }
            return
        }
        Compute.withSingleThreadedGEMM {
            Compute.parallel(workers: workers) { w, team in
                for head in stride(from: w, to: heads, by: team) { body(head, w) }
            }
        }
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
    public func forward(_ x: Tensor, layout: SequenceLayout, causal: Bool, outputRows: [Int]? = nil,
                        workspace: Workspace? = nil, keepLinearInputs: Bool = true) -> (Tensor, Cache) {
        let ws = keepLinearInputs ? nil : workspace
        let empty = Tensor(zeros: [0])
        let (a, ln1Cache) = ln1.forward(x, workspace: workspace)
        var (h, attnCache) = attention.forward(a, layout: layout, causal: causal, outputRows: outputRows,
                                               workspace: workspace, keepLinearInputs: keepLinearInputs)
        ws?.recycle(a)
        h.accumulate(outputRows.map { x.gatherRows($0) } ?? x)
        let (b, ln2Cache) = ln2.forward(h, workspace: workspace)
        let hidden = fc.forward(b, workspace: workspace)
        ws?.recycle(b)
        let g = QuickGELU.forward(hidden, workspace: workspace)
        var y = proj.forward(g, workspace: workspace)
        ws?.recycle(g)
        y.accumulate(h)
        return (y, Cache(ln1: ln1Cache, ln1Out: keepLinearInputs ? a : empty, attention: attnCache, ln2: ln2Cache,
                         ln2Out: keepLinearInputs ? b : empty, hidden: hidden, gelu: keepLinearInputs ? g : empty))
    }

    /// Temporaries come from `workspace` when given and go back to it.
    public func backward(_ dy: Tensor, cache: Cache, dx: inout Tensor, grads: inout Grads?, workspace: Workspace? = nil) {
        precondition(grads == nil || !cache.gelu.data.isEmpty, "block weight gradients need the forward run with keepLinearInputs")
        // Second residual: dh = dy + d(mlp branch)
        var dh = Workspace.tensor(workspace, dy.shape, zeroed: false)
        dh.withMutablePointer { p in dy.withPointer { q in p.update(from: q, count: dy.count) } }
        var projGrads = grads?.proj, fcGrads = grads?.fc, ln2Grads = grads?.ln2
        var dg = Workspace.tensor(workspace, cache.hidden.shape)
        proj.backward(dy, input: cache.gelu, dx: &dg, grads: &projGrads)
        var dHidden = Workspace.tensor(workspace, cache.hidden.shape)
        QuickGELU.backward(dg, input: cache.hidden, dx: &dHidden)
        var dB = Workspace.tensor(workspace, cache.ln2.input.shape)
        fc.backward(dHidden, input: cache.ln2Out, dx: &dB, grads: &fcGrads)
        ln2.backward(dB, cache: cache.ln2, dx: &dh, grads: &ln2Grads)
        // First residual: dx += dh + d(attention branch)
        var attnGrads = grads?.attention, ln1Grads = grads?.ln1
        var dA = Workspace.tensor(workspace, cache.ln1.input.shape)
        attention.backward(dh, cache: cache.attention, dx: &dA, grads: &attnGrads, workspace: workspace)
        if let rows = cache.attention.outputRows { dx.addRows(dh, at: rows) } else { dx.accumulate(dh) }
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

// MARK: - Transformer (a stack of blocks)

public struct Transformer: Sendable {
    public var blocks: [ResidualBlock]
    public init(blocks: [ResidualBlock]) { self.blocks = blocks }

    public struct Trace: Sendable {
        /// Per-block caches, when kept for a backward pass.
        public var caches: [ResidualBlock.Cache] = []
        /// Every block's output, when asked for (parity checks).
        public var hiddenStates: [Tensor] = []
        /// The rows the last block was restricted to (nil: all rows).
        public var outputRows: [Int]? { caches.last?.attention.outputRows }
    }

    // x: R, C -> R, C, or S, C with `outputRows`: the rows the caller reads (e.g. each sequence's
    // EOT or class token). The last block then computes only those rows after its attention.
    //
    // With a `workspace`, activations come from it; caches not kept go back to it block by block.
    // `keepLinearInputs` false keeps only what a backward without weight gradients reads.
    public func forward(_ x: Tensor, layout: SequenceLayout, causal: Bool, outputRows: [Int]? = nil,
                        keepCaches: Bool = false, keepHiddenStates: Bool = false,
                        workspace: Workspace? = nil, keepLinearInputs: Bool = true) -> (Tensor, Trace) {
        // An inference forward without a workspace still reuses each block's buffers for the next
        // (fresh buffers would fault in new pages every block).
        let workspace = workspace ?? (keepCaches || keepHiddenStates ? nil : Workspace())
        var h = x
        var trace = Trace()
        for (i, blk) in blocks.enumerated() {
            var (y, cache) = blk.forward(h, layout: layout, causal: causal, outputRows: i == blocks.count - 1 ? outputRows : nil,
                                         workspace: workspace, keepLinearInputs: keepLinearInputs || !keepCaches)
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
    /// backward reuses the memory its forward kept. `trace` is left without caches.
    public func backward(_ dy: Tensor, releasing trace: inout Trace, grads: inout [ResidualBlock.Grads]?,
                         workspace: Workspace) -> Tensor {
        precondition(trace.caches.count == blocks.count, "Transformer.backward needs the forward run with keepCaches")
        var d = dy
        for i in blocks.indices.reversed() {
            var cache = trace.caches.removeLast()
            var dx = workspace.tensor(cache.ln1.input.shape)
            var g = grads?[i]
            blocks[i].backward(d, cache: cache, dx: &dx, grads: &g, workspace: workspace)
            if let g { grads![i] = g }
            cache.recycle(into: workspace)
            if i != blocks.count - 1 { workspace.recycle(d) }  // the first d is the caller's
            d = dx
        }
        return d
    }

    /// dy: gradient of the last block's output; returns the gradient of the first block's input.
    /// `grads`, when given, must hold one entry per block and is accumulated into.
    public func backward(_ dy: Tensor, trace: Trace, grads: inout [ResidualBlock.Grads]?) -> Tensor {
        precondition(trace.caches.count == blocks.count, "Transformer.backward needs the forward run with keepCaches")
        var d = dy
        for i in blocks.indices.reversed() {
            var dx = Tensor(zeros: trace.caches[i].ln1.input.shape)
            var g = grads?[i]
            blocks[i].backward(d, cache: trace.caches[i], dx: &dx, grads: &g)
            if let g { grads![i] = g }
            d = dx
        }
        return d
    }
}

extension Tensor {
    /// self: B, T, C -> R, C with the first `layout.lengths[i]` rows of each sequence i, one after
    /// another, plus `addend` (rows 0..<length of a [>=T, C] tensor, e.g. positional embeddings).
    public func packed(_ layout: SequenceLayout, adding addend: Tensor? = nil) -> Tensor {
        precondition(rank == 3 && shape[0] == layout.lengths.count, "packed: \(shape) vs \(layout.lengths.count) sequences")
        let (t, c) = (shape[1], shape[2])
        precondition(layout.lengths.allSatisfy { $0 <= t }, "packed: a sequence is longer than \(t) rows")
        var out = Tensor(zeros: [layout.rows, c])
        out.withMutablePointer { po in withPointer { px in
            for (i, n) in layout.lengths.enumerated() {
                let dst = po + layout.rowOffsets[i] * c, src = px + i * t * c
                if let addend {
                    addend.withPointer { pa in pt_add(dst, src, pa, n * c) }
                } else {
                    dst.update(from: src, count: n * c)
                }
            }
        } }
        return out
    }

    /// The inverse of `packed`: R, C -> B, T, C with zeros after each sequence's rows.
    public func unpacked(_ layout: SequenceLayout, tokens t: Int) -> Tensor {
        let c = lastDim
        precondition(rows == layout.rows, "unpacked: \(rows) rows vs layout of \(layout.rows)")
        var out = Tensor(zeros: [layout.lengths.count, t, c])
        out.withMutablePointer { po in withPointer { px in
            for (i, n) in layout.lengths.enumerated() {
                (po + i * t * c).update(from: px + layout.rowOffsets[i] * c, count: n * c)
            }
        } }
        return out
    }
}

extension Tensor {
    /// self[rows[i], :] += src[i, :] (a scatter-add of S rows into a 2-D tensor).
    public mutating func addRows(_ src: Tensor, at rows: [Int]) {
        let c = lastDim
        precondition(src.rows == rows.count && src.lastDim == c, "addRows: \(src.shape) into rows \(rows.count) of width \(c)")
        withMutablePointer { p in src.withPointer { q in
            for (i, r) in rows.enumerated() { pt_accumulate(p + r * c, q + i * c, c) }
        } }
    }
}
