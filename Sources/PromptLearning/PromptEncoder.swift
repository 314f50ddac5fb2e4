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
        let (h, layout, shared) = packedPrompts(learner, context: context)
        let (features, trace) = text.forward(packed: h, layout: layout, keepCaches: keepCaches, workspace: workspace,
                                             keepLinearInputs: workspace == nil)
        return (features, Trace(tower: trace, shared: shared))
    }

    /// Every class's prompt as the tower's packed input rows (positional embeddings added): with a
    /// shared context at the end, SOS and the context once as a prefix (positions 0..<P), then each
    /// class's own rows (positions P...); otherwise each class's whole prompt.
    func packedPrompts(_ learner: PromptLearner, context: Tensor) -> (Tensor, SequenceLayout, shared: Bool) {
        let (k, backend) = (learner.classCount, text.backend)
        if learner.config.sharesPrefix {
            let p = 1 + learner.config.contextLength
            let layout = SequenceLayout(prefix: p, lengths: (0..<k).map { learner.eot[$0] + 1 - p })
            var h = backend.zeros([layout.rows, text.width])
            backend.copyRows(learner.embeddings, into: &h,
                             spans: [RowSpan(source: learner.sosRow, target: 0, count: 1)] + learner.suffixSpans(0..<k, at: p),
                             accumulate: false)
            backend.copyRows(context, into: &h, spans: [RowSpan(source: 0, target: 1, count: p - 1)], accumulate: false)
            text.addPositionalEmbedding(to: &h, layout: layout)
            return (h, layout, true)
        }
        let layout = SequenceLayout(lengths: learner.eot.map { $0 + 1 })
        let spans = learner.promptSpans(layout)
        var h = backend.zeros([layout.rows, text.width])
        backend.copyRows(learner.embeddings, into: &h, spans: spans.frozen, accumulate: false)
        backend.copyRows(context, into: &h, spans: spans.context, accumulate: false)
        text.addPositionalEmbedding(to: &h, layout: layout)
        return (h, layout, false)
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
        let m = learner.config.contextLength
        var dContext = text.backend.zeros(learner.context.shape)
        if trace.shared {
            // The prefix rows after SOS, already summed over classes.
            text.backend.copyRows(dRows, into: &dContext, spans: [RowSpan(source: 1, target: 0, count: m)], accumulate: false)
            return dContext
        }
        // Every class's context rows back onto the context, classes in order.
        let spans = learner.promptSpans(trace.tower.layout).context.map { RowSpan(source: $0.target, target: $0.source, count: 1) }
        text.backend.copyRows(dRows, into: &dContext, spans: spans, accumulate: true)
        return dContext
    }
}
