import CLIP
import TensorCore

/// Text features of every class's prompt, and the gradient back to the learned context.
///
/// Two exact paths:
/// - shared context, class at the end: positions 0...M (SOS + context) are identical for all K
///   classes, so they are computed once as a shared prefix that every class's remaining rows
///   (name, ".", EOT) attend to; the prefix's gradient is the sum over classes;
/// - otherwise (class-specific context, class in the middle or front): each class's prompt is
///   encoded on its own rows, cut after its EOT.
/// Either way no row after an EOT is ever computed.
public struct PromptEncoder: Sendable {
    public let text: TextTower
    public init(text: TextTower) { self.text = text }

    public struct Trace: Sendable {
        var tower: TextTower.Trace
        var shared: Bool
    }

    /// -> text features K, E (not normalised). With a `workspace`, the activations come from it and
    /// the caches hold only what `backward(_:releasing:learner:workspace:)` reads.
    public func forward(_ learner: PromptLearner, context: Tensor, keepCaches: Bool = true,
                        workspace: Workspace? = nil) -> (Tensor, Trace) {
        let k = learner.classCount
        if learner.config.sharesPrefix {
            let p = 1 + learner.config.contextLength
            let layout = SequenceLayout(prefix: p, lengths: (0..<k).map { learner.eot[$0] + 1 - p })
            let d = text.width
            var rows: [Float] = []
            rows.reserveCapacity(layout.rows * d)
            rows += learner.sosRow.data
            rows += context.data
            for c in 0..<k { rows += learner.suffixRows(c).data }
            var h = Tensor(shape: [layout.rows, d], data: rows)
            // Positions: 0..<P for the prefix, P... for each class's own rows.
            let pos = text.positionalEmbedding
            h.withMutablePointer { ph in pos.withPointer { pp in
                for i in 0..<(p * d) { ph[i] += pp[i] }
                for c in 0..<k {
                    let base = ph + layout.rowOffsets[c] * d, from = pp + p * d
                    for i in 0..<(layout.lengths[c] * d) { base[i] += from[i] }
                }
            } }
            let (features, trace) = text.forward(packed: h, layout: layout, keepCaches: keepCaches, workspace: workspace,
                                                     keepLinearInputs: workspace == nil)
            return (features, Trace(tower: trace, shared: true))
        }
        let layout = SequenceLayout(lengths: learner.eot.map { $0 + 1 })
        var rows: [Float] = []
        rows.reserveCapacity(layout.rows * text.width)
        for c in 0..<k { rows += learner.promptRows(c, context: context).data }
        var h = Tensor(shape: [layout.rows, text.width], data: rows)
        h.addPositions(layout, text.positionalEmbedding)
        let (features, trace) = text.forward(packed: h, layout: layout, keepCaches: keepCaches, workspace: workspace,
                                                     keepLinearInputs: workspace == nil)
        return (features, Trace(tower: trace, shared: false))
    }

    /// dFeatures: K, E -> gradient of the context (shape of `learner.context`).
    public func backward(_ dFeatures: Tensor, trace: Trace, learner: PromptLearner) -> Tensor {
        contextGradient(text.backwardPacked(dFeatures, trace: trace.tower), trace: trace, learner: learner)
    }

    /// The same, releasing the trace's caches into `workspace` as the backward goes (the forward
    /// ran with that workspace); equal to `backward(_:trace:learner:)`.
    public func backward(_ dFeatures: Tensor, releasing trace: inout Trace, learner: PromptLearner,
                         workspace: Workspace) -> Tensor {
        let dRows = text.backwardPacked(dFeatures, releasing: &trace.tower, workspace: workspace)
        let dContext = contextGradient(dRows, trace: trace, learner: learner)
        workspace.recycle(dRows)
        return dContext
    }

    /// The gradient of the packed input rows -> the context's (summed over the classes sharing it).
    private func contextGradient(_ dRows: Tensor, trace: Trace, learner: PromptLearner) -> Tensor {
        let (m, d) = (learner.config.contextLength, text.width)
        if trace.shared {
            return dRows.slice(rows: 1..<(1 + m))  // the prefix rows after SOS, already summed over classes
        }
        var dCtx = Tensor(zeros: learner.context.shape)
        let layout = trace.tower.layout
        for c in 0..<learner.classCount {
            for j in 0..<m {
                let src = (layout.rowOffsets[c] + learner.contextRow(j, classIndex: c)) * d
                let dst = (learner.config.classSpecific ? c * m * d : 0) + j * d
                for x in 0..<d { dCtx[dst + x] += dRows[src + x] }
            }
        }
        return dCtx
    }
}

extension Tensor {
    /// Adds positional rows 0..<T_s to each packed sequence (no shared prefix).
    mutating func addPositions(_ layout: SequenceLayout, _ positions: Tensor) {
        let d = lastDim
        withMutablePointer { ph in positions.withPointer { pp in
            for (s, t) in layout.lengths.enumerated() {
                let base = ph + layout.rowOffsets[s] * d
                for i in 0..<(t * d) { base[i] += pp[i] }
            }
        } }
    }
}
