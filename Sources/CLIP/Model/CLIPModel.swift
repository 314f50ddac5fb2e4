import Foundation
import TensorCore

/// CLIP: the two towers and the (frozen) logit scale.
public struct CLIPModel: Sendable {
    public var config: CLIPConfig
    public var text: TextTower
    public var image: ImageTower
    /// The stored value is a log; logits use exp(logScale).
    public var logScale: Float

    public init(config: CLIPConfig, text: TextTower, image: ImageTower, logScale: Float) {
        self.config = config; self.text = text; self.image = image; self.logScale = logScale
    }

    public var logitScale: Float { exp(logScale) }

    /// What runs both towers (the compute context: device, product library, precision). Setting it
    /// sets every layer's; a model starts on `defaultBackend`.
    public var backend: any ComputeBackend {
        get { text.backend }
        set { text.backend = newValue; image.backend = newValue }
    }

    /// This model on `backend`.
    public func on(_ backend: any ComputeBackend) -> CLIPModel {
        var m = self
        m.backend = backend
        return m
    }

    /// Token id rows (padded to any common length) -> features B, E (not normalised).
    /// Rows are cut after the last EOT first, which the causal mask makes exact.
    public func encodeText(_ tokens: [[Int]]) -> Tensor {
        let eot = eotPositions(tokens)
        let t = (eot.max() ?? 0) + 1
        let cut = tokens.map { Array($0.prefix(t)) }
        return text.forward(embeddings: text.embed(cut), eot: eot).0
    }

    /// pixels: B, 3, R, R (preprocessed) -> features B, E (not normalised). Runs in chunks so the
    /// activations of a large batch stay small.
    public func encodeImage(_ pixels: Tensor, chunk: Int = 32) -> Tensor {
        let b = pixels.shape[0]
        var rows: [Float] = []
        rows.reserveCapacity(b * config.embedDim)
        let workspace = Workspace(backend: image.backend)  // each chunk reuses the buffers of the one before
        for start in stride(from: 0, to: b, by: chunk) {
            rows += image.forward(pixels: pixels.slice(rows: start..<min(b, start + chunk)), workspace: workspace).0.data
        }
        return Tensor(shape: [b, config.embedDim], data: rows)
    }

    /// Scaled cosine similarities: images B_i x texts B_t.
    public func logits(imageFeatures: Tensor, textFeatures: Tensor) -> Tensor {
        matmul(L2Normalize.forward(imageFeatures).0, L2Normalize.forward(textFeatures).0, transB: true) * logitScale
    }
}
