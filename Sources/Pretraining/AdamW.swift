import CLIP
import Foundation
import TensorCore

/// AdamW (Loshchilov & Hutter): Adam with weight decay decoupled from the gradient, as
/// `torch.optim.AdamW`. CLIP's recipe: betas (0.9, 0.98), eps 1e-6, weight decay 0.2 on matrices
/// only; gains, biases, embeddings and the logit scale are not decayed (`CLIPParameter.decays`).
public struct AdamWConfig: Codable, Equatable, Sendable {
    public var beta1: Double = 0.9
    public var beta2: Double = 0.98
    public var eps: Double = 1e-6
    public var weightDecay: Double = 0.2
    public init() {}

    enum CodingKeys: String, CodingKey { case beta1, beta2, eps, weightDecay = "weight_decay" }
}

/// The optimiser's moments, keyed by parameter name, and the step count.
public struct AdamWState: Sendable {
    public var step = 0
    public var firstMoment: [String: Tensor] = [:]
    public var secondMoment: [String: Tensor] = [:]
    public init() {}

    /// One update of every parameter of `model` at learning rate `lr`:
    /// p -= lr * wd * p (matrices only); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    public mutating func update(_ model: inout CLIPModel, gradient: CLIPModel, lr: Double, config c: AdamWConfig) {
        step += 1
        let bc1 = 1 - pow(c.beta1, Double(step)), bc2 = 1 - pow(c.beta2, Double(step))
        let (b1, b2) = (Float(c.beta1), Float(c.beta2))
        let stepSize = Float(lr / bc1), rootBC2 = Float(bc2.squareRoot()), eps = Float(c.eps)
        for p in model.parameters {
            let g = gradient[parameter: p]
            var w = model[parameter: p]
            var m = firstMoment[p.name] ?? Tensor(zeros: p.shape)
            var v = secondMoment[p.name] ?? Tensor(zeros: p.shape)
            let decay = p.decays ? Float(1 - lr * c.weightDecay) : 1
            w.withMutablePointer { pw in m.withMutablePointer { pm in v.withMutablePointer { pv in g.withPointer { pg in
                for i in 0..<p.count {
                    let gi = pg[i]
                    pm[i] = b1 * pm[i] + (1 - b1) * gi
                    pv[i] = b2 * pv[i] + (1 - b2) * gi * gi
                    pw[i] = pw[i] * decay - stepSize * pm[i] / (pv[i].squareRoot() / rootBC2 + eps)
                }
            } } } }
            model[parameter: p] = w
            firstMoment[p.name] = m
            secondMoment[p.name] = v
        }
    }
}

/// Linear warm-up from 0 over `warmup` steps, then cosine decay to 0 at `total` steps (per step).
public func warmupCosine(step: Int, total: Int, warmup: Int, peak: Double) -> Double {
    if step < warmup { return peak * Double(step + 1) / Double(warmup) }
    let t = Double(step - warmup) / Double(max(1, total - warmup))
    return 0.5 * peak * (1 + cos(Double.pi * min(1, t)))
}
