import TensorCore

/// Fixed inputs some terms need, computed once per run.
public struct TermInputs: Sendable {
    /// K x D normalised zero-shot text features of the hand template (KgCoOp, aligned anchors).
    public var zeroShot: Tensor?
    /// K x D anchors (NPT).
    public var anchors: Tensor?
    /// K x D class prototypes of the image features (NPT).
    public var prototypes: Tensor?
    public init(zeroShot: Tensor? = nil, anchors: Tensor? = nil, prototypes: Tensor? = nil) {
        self.zeroShot = zeroShot; self.anchors = anchors; self.prototypes = prototypes
    }
}

public struct ObjectiveValue: Sendable {
    public var total: Double
    /// "ce" and each term's key -> unweighted value.
    public var terms: [String: Double]
    /// Fraction of the batch predicted right.
    public var accuracy: Double
    /// Gradient w.r.t. the (unnormalised) text features, K x E.
    public var dText: Tensor
}

/// CE over scaled cosine logits plus the method's weighted terms, with the gradient to the raw
/// text features. images: B x E, already L2-normalised (as CoOp normalises image features).
public func objective(method: Method, textFeatures: Tensor, images: Tensor, labels: [Int], logitScale: Float,
                      inputs: TermInputs) -> ObjectiveValue {
    let (t, cache) = L2Normalize.forward(textFeatures)
    let logits = clipLogits(image: images, text: t, scale: logitScale)
    let (ce, dLogits) = crossEntropy(logits: logits, labels: labels)
    var dT = matmul(dLogits, images, transA: true) * logitScale
    var total = ce
    var terms = ["ce": ce]
    for term in method.terms {
        let (value, grad): (Double, Tensor)
        switch term {
        case .knowledgeConsistency:
            (value, grad) = knowledgeConsistency(text: t, zeroShot: inputs.zeroShot!)
        case .interClassDispersion(_, let tau):
            (value, grad) = interClassDispersion(text: t, tau: tau)
        case .languageCollapse:
            (value, grad) = languageCollapse(text: t, anchors: inputs.anchors!)
        case .modalityIsomorphism:
            (value, grad) = modalityIsomorphism(text: t, prototypes: inputs.prototypes!)
        }
        total += Double(term.weight) * value
        terms[term.key] = value
        dT.accumulate(grad * term.weight)
    }
    var correct = 0
    let k = logits.lastDim
    for (i, y) in labels.enumerated() {
        var best = 0
        for j in 1..<k where logits[i * k + j] > logits[i * k + best] { best = j }
        if best == y { correct += 1 }
    }
    var dText = Tensor(zeros: textFeatures.shape)
    L2Normalize.backward(dT, cache: cache, dx: &dText)
    return ObjectiveValue(total: total, terms: terms, accuracy: Double(correct) / Double(max(1, labels.count)), dText: dText)
}
