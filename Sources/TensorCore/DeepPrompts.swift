/// Rows of a block's input replaced by given values before the block runs: a deep prompt
/// (MaPLe and PromptSRC put learned rows in place of the prompt positions in later blocks).
/// Span j is the `count` rows from packed row `starts[j]`; `values` is [count, W], one set for
/// every span (its gradient is the sum over spans), or [spans, count, W], one set per span.
public struct RowReplacement: Sendable {
    public let starts: [Int]
    public let values: Tensor

    public init(starts: [Int], values: Tensor) {
        precondition(values.rank == 2 || (values.rank == 3 && values.shape[0] == starts.count),
                     "row replacement values \(values.shape), expected [n, W] or [\(starts.count), n, W]")
        self.starts = starts
        self.values = values
    }

    /// Rows per span.
    public var count: Int { values.rank == 2 ? values.shape[0] : values.shape[1] }
    /// One set of values for every span.
    public var isShared: Bool { values.rank == 2 }

    /// x[starts[j] + i, :] = values[(j,) i, :]
    func apply(to x: inout Tensor, backend: any ComputeBackend) {
        let n = count
        precondition(values.lastDim == x.lastDim && starts.allSatisfy { $0 >= 0 && $0 + n <= x.rows },
                     "row replacement of \(n) rows at \(starts) into \(x.shape)")
        backend.copyRows(values, into: &x, spans: spans, accumulate: false)
    }

    /// Span j: the values' rows for span j onto the `count` rows from `starts[j]`.
    private var spans: [RowSpan] {
        starts.enumerated().map { j, r in RowSpan(source: isShared ? 0 : j * count, target: r, count: count) }
    }

    /// Moves the replaced rows' gradient out of `dx` (the gradient of the block's input) into
    /// `grad` (shaped as `values`, accumulated into, spans in order): those rows of `dx` become zero,
    /// since what ran before the block never reached them.
    func takeGradient(from dx: inout Tensor, into grad: inout Tensor, backend: any ComputeBackend) {
        precondition(grad.shape == values.shape, "deep prompt gradient \(grad.shape) vs values \(values.shape)")
        let spans = self.spans
        backend.copyRows(dx, into: &grad, spans: spans.map { RowSpan(source: $0.target, target: $0.source, count: $0.count) },
                         accumulate: true)
        let zeros = backend.zeros([count, dx.lastDim])
        backend.copyRows(zeros, into: &dx, spans: spans.map { RowSpan(source: 0, target: $0.target, count: $0.count) },
                         accumulate: false)
    }
}

/// The row replacements a transformer makes, by block: `blocks[i]` replaces rows of block i's
/// input before it runs (block 0: rows of the transformer's input). Passed to
/// `Transformer.forward`, kept in its trace; the backward returns each block's values' gradient.
public struct DeepPrompts: Sendable {
    public var blocks: [Int: RowReplacement]

    public init(_ blocks: [Int: RowReplacement] = [:]) { self.blocks = blocks }

    /// `values[i]` ([n, W] or [spans, n, W]) replaces positions `position ..< position + n` of every
    /// sequence of `layout` before block i (in a shared prefix, once: the spans of
    /// `layout.spanStarts`). MaPLe's and PromptSRC's text prompts: position 1 (after SOS).
    public init(values: [Int: Tensor], position: Int, layout: SequenceLayout) {
        blocks = values.mapValues { v in
            RowReplacement(starts: layout.spanStarts(position: position, count: v.rank == 2 ? v.shape[0] : v.shape[1]), values: v)
        }
    }

    public var isEmpty: Bool { blocks.isEmpty }
}
