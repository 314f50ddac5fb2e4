import CKernels

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
