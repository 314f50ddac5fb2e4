import TensorCore

/// Fixed inputs some terms need, computed once per run.
public struct TermInputs: Sendable {
    /// K x D normalised zero-shot text features of the hand template (KgCoOp, aligned anchors).
    public var zeroShot: Tensor?
    /// K x D anchors (NPT).
    public var anchors: Tensor?
    /// K x D class prototypes of the image features (NPT).
    public var prototypes: Tensor?
    /// K x D normalised template-ensemble text features of the frozen tower (PromptSRC).
    public var templateEnsemble: Tensor?
    /// B x D normalised features of the current batch through the frozen, unprompted image tower
    /// (PromptSRC). The one per-batch input: the trainer sets it for each batch, from the same
    /// pixels the prompted tower sees, before calling the objective.
    public var frozenImages: Tensor?
    /// The cluster of each class (CPT).
    public var clusters: [Int]?
    /// Training images per class (CPT's class-balanced compactness with training counts).
    public var classCounts: [Int]?
    public init(zeroShot: Tensor? = nil, anchors: Tensor? = nil, prototypes: Tensor? = nil, templateEnsemble: Tensor? = nil,
                frozenImages: Tensor? = nil, clusters: [Int]? = nil, classCounts: [Int]? = nil) {
        self.zeroShot = zeroShot; self.anchors = anchors; self.prototypes = prototypes
        self.templateEnsemble = templateEnsemble; self.frozenImages = frozenImages
        self.clusters = clusters; self.classCounts = classCounts
    }
}

public struct ObjectiveValue: Sendable {
    public var total: Double
    /// "ce" and each term's key -> unweighted value.
    public var terms: [String: Double]
    /// Fraction of the batch predicted right.
    public var accuracy: Double
    /// Gradient w.r.t. the (unnormalised) text features, K x E (B x K x E for per-image text).
    public var dText: Tensor
    /// Gradient w.r.t. the normalised image features B x E, when asked for (trainable image prompts).
    public var dImages: Tensor? = nil
}

/// CE over scaled cosine logits plus the method's weighted terms, with the gradient to the raw
/// text features. images: B x E, already L2-normalised (as CoOp normalises image features).
/// With `imageGradient`, also the gradient w.r.t. those normalised image features (`dImages`).
/// Text features B x K x E (one set per image, CoCoOp) give per-image logits, and each of the
/// method's terms is the mean over the batch of the term on each image's K x E text features
/// (NPT on CoCoOp: the language-collapse and isomorphism terms hold for every image's classifier).
///
/// `rounding` .half rounds what CoOp's head holds in fp16 with an fp16 CLIP: the normalised text
/// features, the scaled image features (`logit_scale * image_features`, then the product with the
/// text features), the logits and the gradients back through them (the terms stay fp32; the
/// images are the caller's to round; per-image text features are not rounded).
public func objective(method: Method, textFeatures: Tensor, images: Tensor, labels: [Int], logitScale: Float,
                      inputs: TermInputs, imageGradient: Bool = false, rounding: ActivationRounding = .none) -> ObjectiveValue {
    if textFeatures.rank == 3 {
        return perImageObjective(method: method, textFeatures: textFeatures, images: images, labels: labels, logitScale: logitScale,
                                 inputs: inputs, imageGradient: imageGradient)
    }
    let (normalised, cache) = L2Normalize.forward(textFeatures)
    var t = normalised
    rounding.apply(&t)
    let logits: Tensor, scaledImages: Tensor?
    if rounding == .half {
        var s = images * logitScale
        s.roundToHalf()
        logits = matmul(s, t, transB: true).roundedToHalf()
        scaledImages = s
    } else {
        logits = clipLogits(image: images, text: t, scale: logitScale)
        scaledImages = nil
    }
    let (ce, dCE) = crossEntropy(logits: logits, labels: labels)
    var dLogits = dCE
    rounding.apply(&dLogits)
    var dT: Tensor, dF: Tensor?
    if let s = scaledImages {
        dT = matmul(dLogits, s, transA: true).roundedToHalf()
        dF = imageGradient ? (matmul(dLogits, t).roundedToHalf() * logitScale).roundedToHalf() : nil
    } else {
        dT = matmul(dLogits, images, transA: true) * logitScale
        dF = imageGradient ? matmul(dLogits, t) * logitScale : nil
    }
    var total = ce
    var terms = ["ce": ce]
    let arguments = TermArguments(text: t, images: images, labels: labels, inputs: inputs, logitScale: logitScale)
    for term in method.terms {
        let kernel = term.term
        if term.type.readsImages && !imageGradient && term.weight != 0 {
            preconditionFailure("term '\(term.key)' reads image features; it needs trainable image prompts (the trainer passes imageGradient)")
        }
        let r = kernel.evaluate(arguments)
        total += Double(term.weight) * r.value
        terms[term.key] = r.value
        if let g = r.dText { dT.accumulate(g * term.weight) }
        if let g = r.dImages, dF != nil { dF!.accumulate(g * term.weight) }
    }
    var correct = 0
    let k = logits.lastDim
    for (i, y) in labels.enumerated() {
        var best = 0
        for j in 1..<k where logits[i * k + j] > logits[i * k + best] { best = j }
        if best == y { correct += 1 }
    }
    rounding.apply(&dT)
    if dF != nil { rounding.apply(&dF!) }
    var dText = Tensor(zeros: textFeatures.shape)
    L2Normalize.backward(dT, cache: cache, dx: &dText)
    rounding.apply(&dText)
    return ObjectiveValue(total: total, terms: terms, accuracy: Double(correct) / Double(max(1, labels.count)), dText: dText,
                          dImages: dF)
}

/// Cross-entropy over per-image logits: image b against its own text features (B x K x E), plus
/// the method's terms averaged over the images' classifiers, with the gradients to those raw text
/// features and, when asked, to the normalised image features.
func perImageObjective(method: Method, textFeatures: Tensor, images: Tensor, labels: [Int], logitScale: Float, inputs: TermInputs,
                       imageGradient: Bool) -> ObjectiveValue {
    let (b, k, e) = (textFeatures.shape[0], textFeatures.shape[1], textFeatures.shape[2])
    precondition(images.shape == [b, e], "per-image text \(textFeatures.shape) for images \(images.shape)")
    let (t, cache) = L2Normalize.forward(textFeatures.reshaped([b * k, e]))
    var logits = Tensor(zeros: [b, k])
    for i in 0..<b {
        for c in 0..<k {
            var dot: Float = 0
            for x in 0..<e { dot += images[i * e + x] * t[(i * k + c) * e + x] }
            logits[i * k + c] = logitScale * dot
        }
    }
    let (ce, dLogits) = crossEntropy(logits: logits, labels: labels)
    var dT = Tensor(zeros: [b * k, e])
    var dF = Tensor(zeros: [b, e])
    var correct = 0
    for i in 0..<b {
        var best = 0
        for c in 0..<k {
            let g = dLogits[i * k + c] * logitScale
            for x in 0..<e {
                dT[(i * k + c) * e + x] = g * images[i * e + x]
                dF[i * e + x] += g * t[(i * k + c) * e + x]
            }
            if logits[i * k + c] > logits[i * k + best] { best = c }
        }
        if best == labels[i] { correct += 1 }
    }
    var total = ce
    var terms = ["ce": ce]
    for term in method.terms where term.weight != 0 {
        if term.type.readsImages && !imageGradient {
            preconditionFailure("term '\(term.key)' reads image features; it needs trainable image prompts (the trainer passes imageGradient)")
        }
        let kernel = term.term
        var value = 0.0
        for i in 0..<b {
            let text = t.slice(rows: (i * k)..<((i + 1) * k))
            let r = kernel.evaluate(TermArguments(text: text, images: images, labels: labels, inputs: inputs, logitScale: logitScale))
            value += r.value / Double(b)
            let w = term.weight / Float(b)
            if let g = r.dText { for j in 0..<(k * e) { dT[i * k * e + j] += w * g[j] } }
            if let g = r.dImages { dF.accumulate(g * w) }
        }
        total += Double(term.weight) * value
        terms[term.key] = value
    }
    var dText = Tensor(zeros: [b * k, e])
    L2Normalize.backward(dT, cache: cache, dx: &dText)
    return ObjectiveValue(total: total, terms: terms, accuracy: Double(correct) / Double(max(1, b)),
                          dText: dText.reshaped([b, k, e]), dImages: imageGradient ? dF : nil)
}
