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

/// PyTorch's SGD step (dampening 0, no Nesterov) on fp16 parameters, as PyTorch computes it for
/// fp16 CUDA tensors: `_single_tensor_sgd` and `_multi_tensor_sgd` (the foreach path) do the same
/// three element-wise ops, each computed in fp32 ("opmath", the scalar kept in fp32) and its result
/// stored in fp16:
///
///     d   = fp16(g + wd * p)                       grad.add(param, alpha=weight_decay)
///     buf = d at the first step, else fp16(fp16(buf * momentum) + d)   buf.mul_(momentum).add_(d)
///     p   = fp16(p + (-lr) * buf)                  param.add_(buf, alpha=-lr)
///
/// `a + alpha * b` is one fused multiply-add (nvcc contracts it by default). The gradient is first
/// rounded to fp16, as an fp16 parameter's `.grad` is; `p` and `buf` are expected to hold fp16
/// values already (they do when every step is this one and the initial prompt was rounded). An
/// update smaller than half the spacing of fp16 values around p leaves p unchanged: the rounding
/// that drops small prompt updates at low learning rates. (PyTorch on the CPU differs in one
/// point: its fp16 `add` rounds `alpha` itself to fp16 first.)
public func sgdStepHalf(_ p: inout Tensor, gradient g: Tensor, momentumBuffer buf: inout Tensor?, lr: Double,
                        config c: OptimizerConfig) {
    precondition(p.shape == g.shape, "sgdStepHalf: parameter \(p.shape) and gradient \(g.shape)")
    var d = g.roundedToHalf()
    for i in 0..<d.count { d[i] = d[i].addingProduct(c.weightDecay, p[i]) }
    d.roundToHalf()
    if var b = buf {
        for i in 0..<b.count { b[i] *= c.momentum }
        b.roundToHalf()
        for i in 0..<b.count { b[i] += d[i] }
        b.roundToHalf()
        buf = b
    } else {
        buf = d
    }
    let step = -Float(lr)
    for i in 0..<p.count { p[i] = p[i].addingProduct(step, buf![i]) }
    p.roundToHalf()
}
