import Foundation
import TensorCore

/// CLIP's symmetric InfoNCE on a batch of B matching (image, text) pairs:
/// logits = exp(s) * norm(I) norm(T)^T (B x B), loss = (CE(logits, i) + CE(logits^T, i)) / 2,
/// with the gradients w.r.t. the raw (unnormalised) features and the log scale s.
public struct ContrastiveLoss: Sendable {
    public var value: Double
    public var dImageFeatures: Tensor   // B, E
    public var dTextFeatures: Tensor    // B, E
    public var dLogScale: Float
    /// Fraction of images whose own caption has the largest logit in their row.
    public var imageToTextAccuracy: Double

    public init(imageFeatures: Tensor, textFeatures: Tensor, logScale: Float) {
        let b = imageFeatures.rows
        precondition(textFeatures.rows == b && textFeatures.lastDim == imageFeatures.lastDim,
                     "contrastive loss: images \(imageFeatures.shape) vs texts \(textFeatures.shape)")
        let (img, imgCache) = L2Normalize.forward(imageFeatures)
        let (txt, txtCache) = L2Normalize.forward(textFeatures)
        let scale = exp(logScale)
        let logits = matmul(img, txt, transB: true) * scale  // B, B
        // dL/dlogits = (softmax over rows - I + softmax over columns - I) / (2B)
        var dLogits = [Double](repeating: 0, count: b * b)
        var loss = 0.0, correct = 0
        for i in 0..<b {  // rows: image i against every text
            let row = (0..<b).map { Double(logits[i * b + $0]) }
            let m = row.max()!
            let z = row.reduce(0) { $0 + exp($1 - m) }
            loss += (m + log(z)) - row[i]
            for j in 0..<b { dLogits[i * b + j] += exp(row[j] - m) / z }
            dLogits[i * b + i] -= 1
            if row.indices.allSatisfy({ $0 == i || row[$0] < row[i] }) { correct += 1 }
        }
        for j in 0..<b {  // columns: text j against every image
            let col = (0..<b).map { Double(logits[$0 * b + j]) }
            let m = col.max()!
            let z = col.reduce(0) { $0 + exp($1 - m) }
            loss += (m + log(z)) - col[j]
            for i in 0..<b { dLogits[i * b + j] += exp(col[i] - m) / z }
            dLogits[j * b + j] -= 1
        }
        let norm = 1 / Double(2 * b)
        // logits = scale * cos, so dcos = scale * dlogits and ds = sum(dlogits * logits).
        var dLogScale = 0.0
        var dCos = Tensor(zeros: [b, b])
        for k in 0..<(b * b) {
            let d = dLogits[k] * norm
            dLogScale += d * Double(logits[k])
            dCos[k] = Float(d) * scale
        }
        var dImg = Tensor(zeros: imageFeatures.shape), dTxt = Tensor(zeros: textFeatures.shape)
        L2Normalize.backward(matmul(dCos, txt), cache: imgCache, dx: &dImg)
        L2Normalize.backward(matmul(dCos, img, transA: true), cache: txtCache, dx: &dTxt)
        value = loss * norm
        dImageFeatures = dImg
        dTextFeatures = dTxt
        self.dLogScale = Float(dLogScale)
        imageToTextAccuracy = Double(correct) / Double(b)
    }
}
