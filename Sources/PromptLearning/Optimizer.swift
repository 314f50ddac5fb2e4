import Foundation
import TensorCore

/// Dassl's recipe: SGD with momentum and weight decay, a constant warm-up, then cosine decay
/// stepped once per epoch.
public struct OptimizerConfig: Codable, Equatable, Sendable {
    public var learningRate: Double = 0.002
    public var momentum: Float = 0.9
    public var weightDecay: Float = 5e-4
    public var warmupEpochs: Int = 1
    public var warmupLearningRate: Double = 1e-5
    public init() {}
}

/// The learning rate epoch `epoch` (0-based) runs at. Dassl's ConstantWarmupScheduler over
/// CosineAnnealingLR(T_max = maxEpochs), stepped at the end of each epoch: the warm-up epochs run
/// at the constant rate, then epoch e runs at the cosine's step (e - warmup).
public func learningRate(epoch: Int, maxEpochs: Int, config c: OptimizerConfig) -> Double {
    if epoch < c.warmupEpochs { return c.warmupLearningRate }
    let t = Double(epoch - c.warmupEpochs)
    return 0.5 * c.learningRate * (1 + cos(Double.pi * t / Double(maxEpochs)))
}

/// PyTorch's SGD step (dampening 0, no Nesterov): d = g + wd * p; buf = momentum * buf + d (buf = d
/// at the first step); p -= lr * buf.
public func sgdStep(_ p: inout Tensor, gradient g: Tensor, momentumBuffer buf: inout Tensor?, lr: Double,
                    config c: OptimizerConfig) {
    var d = g
    for i in 0..<d.count { d[i] += c.weightDecay * p[i] }
    if var b = buf {
        for i in 0..<b.count { b[i] = c.momentum * b[i] + d[i] }
        buf = b
    } else {
        buf = d
    }
    let step = Float(lr)
    for i in 0..<p.count { p[i] -= step * buf![i] }
}
