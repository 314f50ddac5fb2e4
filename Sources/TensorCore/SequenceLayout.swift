import CKernels

/// How the rows of a packed activation split into sequences: sequence s is `lengths[s]` rows
/// starting at row `rowOffsets[s]`. Sequences of different lengths share one GEMM in every
/// linear layer; attention runs per sequence. Cutting each text row after its own EOT is exact
/// under the causal mask, so no padding row is ever computed.
///
/// Shared prefixes (causal attention only): a prefix is the identical beginning of a group of
/// sequences, computed once, attended to by each of its sequences' rows before their own, and
/// receiving the sum of those sequences' gradients in the backward. One prefix shared by every
/// sequence is CoOp's shared context (SOS + M context vectors, identical for all classes) done
/// once instead of K times; one prefix per image, shared by its K classes, is CoCoOp's.
public struct SequenceLayout: Sendable, Equatable {
    /// `length` rows from `rowOffset`, the beginning of sequences `sequences`.
    public struct Prefix: Sendable, Equatable {
        public let rowOffset: Int
        public let length: Int
        public let sequences: Range<Int>
    }

    public let prefixes: [Prefix]
    public let lengths: [Int]
    public let rowOffsets: [Int]
    public let rows: Int
    /// The index in `prefixes` of the prefix each sequence begins with (nil: none).
    public let prefixIndex: [Int?]

    /// One group: `prefix` rows (0: none) shared by every sequence, then the sequences' own rows.
    public init(prefix: Int = 0, lengths: [Int]) {
        self.init(groups: [(prefix: prefix, lengths: lengths)])
    }

    /// Groups one after another, each a shared prefix of `prefix` rows (0: none) followed by its
    /// sequences' own rows; sequences are numbered across groups in order.
    public init(groups: [(prefix: Int, lengths: [Int])]) {
        var prefixes: [Prefix] = [], lengths: [Int] = [], offsets: [Int] = [], index: [Int?] = [], r = 0
        for (p, group) in groups {
            precondition(p >= 0 && group.allSatisfy { $0 > 0 }, "SequenceLayout: bad prefix \(p) or empty sequence in \(group)")
            precondition(p == 0 || !group.isEmpty, "SequenceLayout: a prefix of \(p) rows without sequences")
            if p > 0 { prefixes.append(Prefix(rowOffset: r, length: p, sequences: lengths.count ..< lengths.count + group.count)) }
            r += p
            for t in group { offsets.append(r); index.append(p > 0 ? prefixes.count - 1 : nil); r += t }
            lengths += group
        }
        self.prefixes = prefixes
        self.lengths = lengths
        self.rowOffsets = offsets
        self.prefixIndex = index
        self.rows = r
    }

    public static func uniform(batch: Int, tokens: Int) -> SequenceLayout {
        SequenceLayout(lengths: Array(repeating: tokens, count: batch))
    }

    /// The prefix sequence s begins with: its first row and length ((0, 0) without one).
    @inlinable
    public func prefix(of s: Int) -> (rowOffset: Int, length: Int) {
        guard let i = prefixIndex[s] else { return (0, 0) }
        return (prefixes[i].rowOffset, prefixes[i].length)
    }

    /// The position (token index in its sequence) of every packed row: a prefix's rows are
    /// positions 0..<P, its sequences' own rows P, P+1, ... (positional embeddings, deep prompts).
    public var positions: [Int] {
        var out = [Int](repeating: 0, count: rows)
        for pr in prefixes { for j in 0..<pr.length { out[pr.rowOffset + j] = j } }
        for (s, t) in lengths.enumerated() {
            let p = prefix(of: s).length
            for j in 0..<t { out[rowOffsets[s] + j] = p + j }
        }
        return out
    }

    /// The first packed row of positions `position ..< position + count` in every sequence; where
    /// these positions lie in a shared prefix, once for the prefix (its rows are the sequences').
    public func spanStarts(position: Int, count: Int) -> [Int] {
        var starts: [Int] = [], seen = Set<Int>()
        for (s, t) in lengths.enumerated() {
            let (offset, p) = prefix(of: s)
            if position < p {
                precondition(position + count <= p, "positions \(position)..<\(position + count) straddle a prefix of \(p) rows")
                if seen.insert(prefixIndex[s]!).inserted { starts.append(offset + position) }
            } else {
                precondition(position + count <= p + t, "positions \(position)..<\(position + count) past sequence \(s) of \(p + t) rows")
                starts.append(rowOffsets[s] + position - p)
            }
        }
        return starts
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
