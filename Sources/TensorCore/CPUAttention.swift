import CKernels

// The CPU backend's attention: per sequence and head, GEMMs that read the heads straight out of
// the fused qkv rows through leading dimensions (no reshapes or copies), or one oneDNN grid over
// (sequence, head) where every sequence has one length.

extension SequenceLayout {
    /// Where each block of attention weights lives for `heads` heads: each prefix's (H blocks of
    /// P x P) first, then each sequence's (H blocks of T_s x (P_s + T_s), P_s its prefix's rows).
    public func attentionOffsets(heads: Int) -> (prefixes: [Int], sequences: [Int], total: Int) {
        var starts: [Int] = [], offsets: [Int] = [], total = 0
        for pr in prefixes { starts.append(total); total += heads * pr.length * pr.length }
        for (i, t) in lengths.enumerated() { offsets.append(total); total += heads * t * (prefix(of: i).length + t) }
        return (starts, offsets, total)
    }
}

extension CPUBackend {
    public func attention(qkv: Tensor, layout: SequenceLayout, heads h: Int, causal: Bool, rounding: ActivationRounding,
                          probs: inout Tensor, context: inout Tensor) {
        let c = qkv.lastDim / 3
        let d = c / h
        let offsets = layout.attentionOffsets(heads: h)
        precondition(probs.count == offsets.total && context.count == layout.rows * c,
                     "attention: probabilities \(probs.shape) / context \(context.shape) for \(layout.rows) rows of \(c)")
        let scale = 1 / Float(d).squareRoot()
        qkv.withPointer { pqkv in probs.withMutablePointer { pp in context.withMutablePointer { pctx in
            let ldq = 3 * c
            if let grid = attentionGrid(layout, width: c, heads: h),
               attentionGridForward(qkv: pqkv, probs: pp, context: pctx, width: c, heads: h, batch: grid.batch,
                                    tokens: grid.tokens, causal: causal, rounding: rounding) {
                return
            }
            parallelOverHeads(h) { head, _ in
                for (g, pr) in layout.prefixes.enumerated() {
                    let (p, qp) = (pr.length, pqkv + pr.rowOffset * ldq + head * d)
                    let s = pp + offsets.prefixes[g] + head * p * p
                    TensorCore.gemm(transB: true, m: p, n: p, k: d, alpha: scale, a: qp, lda: ldq, b: qp + c, ldb: ldq,
                                    c: s, ldc: p, backend: gemm)
                    pt_softmax_rows(s, p, p, 0)
                    if rounding == .half { Self.roundProbabilitiesToHalf(s, rows: p, columns: p) }
                    TensorCore.gemm(m: p, n: d, k: p, a: s, lda: p, b: qp + 2 * c, ldb: ldq,
                                    c: pctx + pr.rowOffset * c + head * d, ldc: c, backend: gemm)
                }
                for (i, t) in layout.lengths.enumerated() {
                    let r0 = layout.rowOffsets[i]
                    let (p0, p) = layout.prefix(of: i)
                    let kp = pqkv + p0 * ldq + head * d + c, vp = kp + c  // the prefix's keys / values
                    let q = pqkv + r0 * ldq + head * d
                    let n = p + t  // keys: the prefix's, then this sequence's
                    let s = pp + offsets.sequences[i] + head * t * n
                    // scores = q [k_prefix; k]^T / sqrt(d): T x (P + T)
                    if p > 0 {
                        TensorCore.gemm(transB: true, m: t, n: p, k: d, alpha: scale, a: q, lda: ldq, b: kp, ldb: ldq,
                                        c: s, ldc: n, backend: gemm)
                    }
                    TensorCore.gemm(transB: true, m: t, n: t, k: d, alpha: scale, a: q, lda: ldq, b: q + c, ldb: ldq,
                                    c: s + p, ldc: n, backend: gemm)
                    pt_softmax_rows(s, t, n, causal ? p : -1)
                    if rounding == .half { Self.roundProbabilitiesToHalf(s, rows: t, columns: n) }
                    // context = s [v_prefix; v]: T x d, written into this head's columns
                    let out = pctx + r0 * c + head * d
                    if p > 0 { TensorCore.gemm(m: t, n: d, k: p, a: s, lda: n, b: vp, ldb: ldq, c: out, ldc: c, backend: gemm) }
                    TensorCore.gemm(m: t, n: d, k: t, a: s + p, lda: n, b: q + 2 * c, ldb: ldq, beta: p > 0 ? 1 : 0,
                                    c: out, ldc: c, backend: gemm)
                }
            }
        } } }
    }

    public func attentionBackward(qkv: Tensor, probs: Tensor, dContext: Tensor, layout: SequenceLayout, heads h: Int,
                                  dqkv: inout Tensor, workspace: Workspace?) {
        let c = qkv.lastDim / 3
        let d = c / h
        let scale = 1 / Float(d).squareRoot()
        if let grid = attentionGrid(layout, width: c, heads: h),
           attentionGridBackward(qkv: qkv, probs: probs, dContext: dContext, dqkv: &dqkv, width: c, heads: h,
                                 batch: grid.batch, tokens: grid.tokens, workspace: workspace) {
            return
        }
        let offsets = layout.attentionOffsets(heads: h)
        let longest = max(layout.prefixes.map { $0.length * $0.length }.max() ?? 0,
                          layout.lengths.indices.map { layout.lengths[$0] * (layout.prefix(of: $0).length + layout.lengths[$0]) }.max() ?? 0)
        let workers = min(Self.attentionWorkers, h)
        var scratch = tensor(workspace, [workers * longest], zeroed: false)  // each product writes before reading
        qkv.withPointer { pqkv in probs.withPointer { pp in dContext.withPointer { pdctx in
            dqkv.withMutablePointer { pdqkv in scratch.withMutablePointer { sbuf in
                let ldq = 3 * c
                parallelOverHeads(h) { head, worker in
                    let ds = sbuf + worker * longest
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
                            TensorCore.gemm(transB: true, m: t, n: p, k: d, a: dctx, lda: c, b: vp, ldb: ldq, c: ds, ldc: n, backend: gemm)
                            TensorCore.gemm(transA: true, m: p, n: d, k: t, a: s, lda: n, b: dctx, ldb: c, beta: 1, c: dvp, ldc: ldq,
                                            backend: gemm)
                        }
                        TensorCore.gemm(transB: true, m: t, n: t, k: d, a: dctx, lda: c, b: v, ldb: ldq, c: ds + p, ldc: n, backend: gemm)
                        TensorCore.gemm(transA: true, m: t, n: d, k: t, a: s + p, lda: n, b: dctx, ldb: c, c: dv, ldc: ldq, backend: gemm)
                        // softmax backward (masked entries have s = 0, so their gradient is 0)
                        pt_softmax_backward(ds, ds, s, t, n)
                        // dq = scale dS [k_prefix; k]; dk = scale dS^T q (prefix part accumulates)
                        if p > 0 {
                            TensorCore.gemm(m: t, n: d, k: p, alpha: scale, a: ds, lda: n, b: kp, ldb: ldq, c: dq, ldc: ldq, backend: gemm)
                            TensorCore.gemm(transA: true, m: p, n: d, k: t, alpha: scale, a: ds, lda: n, b: q, ldb: ldq, beta: 1,
                                            c: dkp, ldc: ldq, backend: gemm)
                        }
                        TensorCore.gemm(m: t, n: d, k: t, alpha: scale, a: ds + p, lda: n, b: k, ldb: ldq, beta: p > 0 ? 1 : 0,
                                        c: dq, ldc: ldq, backend: gemm)
                        TensorCore.gemm(transA: true, m: t, n: d, k: t, alpha: scale, a: ds + p, lda: n, b: q, ldb: ldq,
                                        c: dk, ldc: ldq, backend: gemm)
                    }
                    for (g, pr) in layout.prefixes.enumerated() {
                        // The prefix's own causal self-attention; its gradients add to what its sequences gave.
                        let (p, off) = (pr.length, pr.rowOffset * ldq + head * d)
                        let (qp, kp, vp) = (pqkv + off, pqkv + off + c, pqkv + off + 2 * c)
                        let (dqp, dkp, dvp) = (pdqkv + off, pdqkv + off + c, pdqkv + off + 2 * c)
                        let s = pp + offsets.prefixes[g] + head * p * p
                        let dctx = pdctx + pr.rowOffset * c + head * d
                        TensorCore.gemm(transB: true, m: p, n: p, k: d, a: dctx, lda: c, b: vp, ldb: ldq, c: ds, ldc: p, backend: gemm)
                        TensorCore.gemm(transA: true, m: p, n: d, k: p, a: s, lda: p, b: dctx, ldb: c, beta: 1, c: dvp, ldc: ldq,
                                        backend: gemm)
                        pt_softmax_backward(ds, ds, s, p, p)
                        TensorCore.gemm(m: p, n: d, k: p, alpha: scale, a: ds, lda: p, b: kp, ldb: ldq, beta: 1, c: dqp, ldc: ldq,
                                        backend: gemm)
                        TensorCore.gemm(transA: true, m: p, n: d, k: p, alpha: scale, a: ds, lda: p, b: qp, ldb: ldq, beta: 1,
                                        c: dkp, ldc: ldq, backend: gemm)
                    }
                }
            } }
        } } }
        workspace?.recycle(scratch)
    }

    /// (sequences, tokens) when the per-head products run as one oneDNN grid over sequences x
    /// heads: every sequence of one length (an image tower's batch), no prefix, and products large
    /// enough that oneDNN would run each of them anyway (a ViT-B/16 layer then makes 2 calls
    /// instead of 2 per image and head).
    func attentionGrid(_ layout: SequenceLayout, width: Int, heads: Int) -> (batch: Int, tokens: Int)? {
        guard layout.prefixes.isEmpty, gemm == .oneDNN, let t = layout.lengths.first,
              layout.lengths.allSatisfy({ $0 == t }), t * t * (width / heads) > smallGEMMLimit else { return nil }
        return (layout.lengths.count, t)
    }

    /// The forward's per-head products as two grids over (sequence, head): scores into `probs`
    /// (sequence-major, then head: the layout `attentionOffsets` gives), then context. False, with
    /// nothing written, when oneDNN has no kernel for the strides.
    private func attentionGridForward(qkv: UnsafePointer<Float>, probs: UnsafeMutablePointer<Float>,
                                      context: UnsafeMutablePointer<Float>, width c: Int, heads h: Int, batch: Int,
                                      tokens t: Int, causal: Bool, rounding: ActivationRounding) -> Bool {
        let d = c / h, ldq = 3 * c
        let grid = (batch, h), scale = 1 / Float(d).squareRoot()
        let bf16 = precision == .bf16  // as the layers' products: bf16 inputs, fp32 accumulation
        let qkvStrides = (t * ldq, d), probStrides = (h * t * t, t * t)
        // scores = q k^T / sqrt(d), softmax per row, context = scores v (into each head's columns)
        let scores = GridGEMM(outer: grid, transB: true, m: t, n: t, k: d, alpha: scale, lda: ldq, strideA: qkvStrides,
                              ldb: ldq, strideB: qkvStrides, ldc: t, strideC: probStrides, bf16: bf16)
        let mix = GridGEMM(outer: grid, m: t, n: d, k: t, lda: t, strideA: probStrides, ldb: ldq, strideB: qkvStrides,
                           ldc: c, strideC: (t * c, d), bf16: bf16)
        guard scores.runsOnOneDNN(gemm), mix.runsOnOneDNN(gemm) else { return false }
        scores.run(a: qkv, b: qkv + c, c: probs, backend: gemm)
        let blocks = batch * h
        Compute.parallel(workers: min(Self.attentionWorkers, blocks)) { w, team in
            let (lo, hi) = (blocks * w / team, blocks * (w + 1) / team)
            if causal {
                for blk in lo..<hi { pt_softmax_rows(probs + blk * t * t, t, t, 0) }
            } else if hi > lo {
                pt_softmax_rows(probs + lo * t * t, (hi - lo) * t, t, -1)
            }
            if rounding == .half, hi > lo { Self.roundProbabilitiesToHalf(probs + lo * t * t, rows: (hi - lo) * t, columns: t) }
        }
        mix.run(a: probs, b: qkv + 2 * c, c: context, backend: gemm)
        return true
    }

    /// The backward's per-head products as grids over (sequence, head), writing all of `dqkv`.
    /// False, with nothing written, when oneDNN has no kernel for the strides.
    private func attentionGridBackward(qkv: Tensor, probs: Tensor, dContext: Tensor, dqkv: inout Tensor, width c: Int,
                                       heads h: Int, batch: Int, tokens t: Int, workspace: Workspace?) -> Bool {
        let d = c / h, ldq = 3 * c
        let grid = (batch, h), scale = 1 / Float(d).squareRoot()
        let bf16 = precision == .bf16  // as the layers' products: bf16 inputs, fp32 accumulation
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
        guard [dScoresProduct, dValues, dQueries, dKeys].allSatisfy({ $0.runsOnOneDNN(gemm) }) else { return false }
        var dScores = tensor(workspace, [batch * h * t * t], zeroed: false)  // written by the first product
        qkv.withPointer { pqkv in probs.withPointer { s in dContext.withPointer { pdctx in
            dqkv.withMutablePointer { pdqkv in dScores.withMutablePointer { ds in
                dScoresProduct.run(a: pdctx, b: pqkv + 2 * c, c: ds, backend: gemm)
                dValues.run(a: s, b: pdctx, c: pdqkv + 2 * c, backend: gemm)
                let rows = batch * h * t
                Compute.parallel(workers: min(Self.attentionWorkers, rows)) { w, team in
                    let (lo, hi) = (rows * w / team, rows * (w + 1) / team)
                    if hi > lo { pt_softmax_backward(ds + lo * t, ds + lo * t, s + lo * t, hi - lo, t) }
                }
                dQueries.run(a: ds, b: pqkv + c, c: pdqkv, backend: gemm)
                dKeys.run(a: ds, b: pqkv, c: pdqkv + c, backend: gemm)
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
    static var attentionWorkers: Int { max(1, Compute.threads) }

    /// Runs body(head, worker) for every head, heads split across the workers (worker <
    /// min(workers, heads), one thread each: per-worker scratch is safe).
    func parallelOverHeads(_ heads: Int, _ body: (_ head: Int, _ worker: Int) -> Void) {
        let workers = min(Self.attentionWorkers, heads)
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
