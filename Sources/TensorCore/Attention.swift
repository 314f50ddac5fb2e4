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

    /// Where each block of attention weights lives: each prefix's (H blocks of P x P) first, then
    /// each sequence's (H blocks of T_s x (P_s + T_s), P_s the rows of its prefix).
    func probOffsets(_ layout: SequenceLayout) -> (prefixes: [Int], sequences: [Int], total: Int) {
        var prefixes: [Int] = [], offsets: [Int] = [], total = 0
        for pr in layout.prefixes { prefixes.append(total); total += heads * pr.length * pr.length }
        for (i, t) in layout.lengths.enumerated() { offsets.append(total); total += heads * t * (layout.prefix(of: i).length + t) }
        return (prefixes, offsets, total)
    }

    // x: R, C -> R, C, where the rows hold the (prefix and) sequences of `layout`; with
    // `outputRows`, only those rows leave the out-projection: S, C. With `keepLinearInputs` false
    // the cache holds no input or context (enough for a backward without weight gradients), and the
    // context goes back to `workspace` at once. `rounding` .half rounds qkv, the context and the
    // output to fp16 values (what an fp16 model stores) and the probabilities as fused fp16
    // attention kernels do (`roundProbabilitiesToHalf`); scores and softmax stay fp32.
    public func forward(_ x: Tensor, layout: SequenceLayout, causal: Bool, outputRows: [Int]? = nil,
                        workspace: Workspace? = nil, keepLinearInputs: Bool = true,
                        rounding: ActivationRounding = .none) -> (Tensor, Cache) {
        let (c, h) = (width, heads)
        let d = c / h
        precondition(x.rows == layout.rows && x.lastDim == c, "attention input \(x.shape) vs \(layout.rows) rows of width \(c)")
        precondition(layout.prefixes.isEmpty || causal, "a shared prefix needs causal attention")
        var qkv = inProj.forward(x, workspace: workspace)
        rounding.apply(&qkv)
        let offsets = probOffsets(layout)
        // Every value of both is written below (the first product into each block has beta 0).
        var probs = Workspace.tensor(workspace, [offsets.total], zeroed: false).data
        var context = Workspace.tensor(workspace, [layout.rows, c], zeroed: false)
        let scale = 1 / Float(d).squareRoot()
        qkv.withPointer { pqkv in probs.withUnsafeMutableBufferPointer { pbuf in context.withMutablePointer { pctx in
            let pp = pbuf.baseAddress!
            let ldq = 3 * c
            if let grid = gridShape(layout),
               forwardGrid(qkv: pqkv, probs: pp, context: pctx, batch: grid.batch, tokens: grid.tokens, causal: causal,
                           rounding: rounding) {
                return
            }
            parallelOverHeads { head, _ in
                for (g, pr) in layout.prefixes.enumerated() {
                    let (p, qp) = (pr.length, pqkv + pr.rowOffset * ldq + head * d)
                    let s = pp + offsets.prefixes[g] + head * p * p
                    gemm(transB: true, m: p, n: p, k: d, alpha: scale, a: qp, lda: ldq, b: qp + c, ldb: ldq, c: s, ldc: p)
                    pt_softmax_rows(s, p, p, 0)
                    if rounding == .half { Self.roundProbabilitiesToHalf(s, rows: p, columns: p) }
                    gemm(m: p, n: d, k: p, a: s, lda: p, b: qp + 2 * c, ldb: ldq, c: pctx + pr.rowOffset * c + head * d, ldc: c)
                }
                for (i, t) in layout.lengths.enumerated() {
                    let r0 = layout.rowOffsets[i]
                    let (p0, p) = layout.prefix(of: i)
                    let kp = pqkv + p0 * ldq + head * d + c, vp = kp + c  // the prefix's keys / values
                    let q = pqkv + r0 * ldq + head * d
                    let n = p + t  // keys: the prefix's, then this sequence's
                    let s = pp + offsets.sequences[i] + head * t * n
                    // scores = q [k_prefix; k]^T / sqrt(d): T x (P + T)
                    if p > 0 { gemm(transB: true, m: t, n: p, k: d, alpha: scale, a: q, lda: ldq, b: kp, ldb: ldq, c: s, ldc: n) }
                    gemm(transB: true, m: t, n: t, k: d, alpha: scale, a: q, lda: ldq, b: q + c, ldb: ldq, c: s + p, ldc: n)
                    pt_softmax_rows(s, t, n, causal ? p : -1)
                    if rounding == .half { Self.roundProbabilitiesToHalf(s, rows: t, columns: n) }
                    // context = s [v_prefix; v]: T x d, written into this head's columns
                    let out = pctx + r0 * c + head * d
                    if p > 0 { gemm(m: t, n: d, k: p, a: s, lda: n, b: vp, ldb: ldq, c: out, ldc: c) }
                    gemm(m: t, n: d, k: t, a: s + p, lda: n, b: q + 2 * c, ldb: ldq, beta: p > 0 ? 1 : 0, c: out, ldc: c)
                }
            }
        } } }
        rounding.apply(&context)
        var y = outProj.forward(outputRows.map { context.gatherRows($0) } ?? context, workspace: workspace)
        rounding.apply(&y)
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
        var dqkv = Workspace.tensor(workspace, cache.qkv.shape, zeroed: !layout.prefixes.isEmpty)
        let ranGrid = gridShape(layout).map {
            backwardGrid(qkv: cache.qkv, probs: cache.probs, dContext: dContext, dqkv: &dqkv, batch: $0.batch,
                         tokens: $0.tokens, workspace: workspace)
        } ?? false
        if !ranGrid {
            let offsets = probOffsets(layout)
            let longest = max(layout.prefixes.map { $0.length * $0.length }.max() ?? 0,
                              layout.lengths.indices.map { layout.lengths[$0] * (layout.prefix(of: $0).length + layout.lengths[$0]) }.max() ?? 0)
            let workers = min(Self.workers, h)
            var scratch = [Float](repeating: 0, count: workers * longest)
            cache.qkv.withPointer { pqkv in cache.probs.withUnsafeBufferPointer { pbuf in dContext.withPointer { pdctx in
                dqkv.withMutablePointer { pdqkv in scratch.withUnsafeMutableBufferPointer { sbuf in
                    let pp = pbuf.baseAddress!
                    let ldq = 3 * c
                    parallelOverHeads { head, worker in
                        let ds = sbuf.baseAddress! + worker * longest
                        for (i, t) in layout.lengths.enumerated() {
                            let r0 = layout.rowOffsets[i]
                            let (p0, p) = layout.prefix(of: i)
                            let (kp, vp) = (pqkv + p0 * ldq + head * d + c, pqkv + p0 * ldq + head * d + 2 * c)
                            let (dkp, dvp) = (pdqkv + p0 * ldq + head * d + c, pdqkv + p0 * ldq + head * d + 2 * c)
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
                        for (g, pr) in layout.prefixes.enumerated() {
                            // The prefix's own causal self-attention; its gradients add to what its sequences gave.
                            let (p, off) = (pr.length, pr.rowOffset * ldq + head * d)
                            let (qp, kp, vp) = (pqkv + off, pqkv + off + c, pqkv + off + 2 * c)
                            let (dqp, dkp, dvp) = (pdqkv + off, pdqkv + off + c, pdqkv + off + 2 * c)
                            let s = pp + offsets.prefixes[g] + head * p * p
                            let dctx = pdctx + pr.rowOffset * c + head * d
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
        guard layout.prefixes.isEmpty, Compute.gemmBackend == .oneDNN, let t = layout.lengths.first,
              layout.lengths.allSatisfy({ $0 == t }), t * t * (width / heads) > smallGEMMLimit else { return nil }
        return (layout.lengths.count, t)
    }

    /// The forward's per-head products as two grids over (sequence, head): scores into `probs`
    /// (sequence-major, then head: the layout `probOffsets` gives), then context. False, with
    /// nothing written, when oneDNN has no kernel for the strides.
    private func forwardGrid(qkv: UnsafePointer<Float>, probs: UnsafeMutablePointer<Float>,
                             context: UnsafeMutablePointer<Float>, batch: Int, tokens t: Int, causal: Bool,
                             rounding: ActivationRounding) -> Bool {
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
            if rounding == .half, hi > lo { Self.roundProbabilitiesToHalf(probs + lo * t * t, rows: (hi - lo) * t, columns: t) }
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

    /// Fused fp16 attention kernels (PyTorch's CPU flash attention, CUDA's flash and memory-efficient
    /// kernels) round the unnormalised probabilities exp(s - max) to fp16 for their product with V
    /// and divide by the fp32 sum afterwards. With p = softmax(s) in fp32, exp(s_j - max) is
    /// p_j / max(p), so each row becomes fp16(p_j / max(p)) * max(p): equal to the kernels' result
    /// but for fp32 rounding.
    static func roundProbabilitiesToHalf(_ p: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        for r in 0..<rows {
            let row = p + r * columns
            var m: Float = 0
            for j in 0..<columns { m = max(m, row[j]) }
            guard m > 0 else { continue }
            for j in 0..<columns { row[j] /= m }
            pt_round_half(row, row, columns)
            for j in 0..<columns { row[j] *= m }
        }
    }

    /// Threads that share the per-head loops. Each runs single-threaded GEMMs on its own heads
    /// (all sequences of a head stay on one thread, so each shared prefix's gradient has one writer).
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
