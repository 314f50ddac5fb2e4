import CLIP
import TensorCore

/// The contrastive loss of a batch through both towers, and the gradient of every parameter as a
/// model-shaped `CLIPModel` (name it with `stateDict()` or the parameter table).
public struct ContrastiveStep: Sendable {
    public var loss: ContrastiveLoss
    public var gradient: CLIPModel

    /// pixels: B, 3, R, R (preprocessed); tokens: B rows of token ids (any common length).
    public init(model: CLIPModel, pixels: Tensor, tokens: [[Int]]) {
        precondition(pixels.shape[0] == tokens.count, "contrastive step: \(pixels.shape[0]) images vs \(tokens.count) captions")
        let eot = eotPositions(tokens)
        let t = (eot.max() ?? 0) + 1
        let cut = tokens.map { Array($0.prefix(t)) }
        let (textFeatures, textTrace) = model.text.forward(embeddings: model.text.embed(cut), eot: eot, keepCaches: true)
        let (imageFeatures, imageTrace) = model.image.forward(pixels: pixels, keepCaches: true)
        loss = ContrastiveLoss(imageFeatures: imageFeatures, textFeatures: textFeatures, logScale: model.logScale)
        var g = model.zeroGradient()
        model.text.backward(loss.dTextFeatures, trace: textTrace, tokens: cut, grads: &g.text)
        model.image.backward(loss.dImageFeatures, trace: imageTrace, grads: &g.image)
        g.logScale = loss.dLogScale
        gradient = g
    }
}
