import CKernels

// fp16 values held in fp32. The reference implementations (CoOp, KgCoOp, DAPT) keep CLIP's weights,
// the activations between its layers, the prompts and their gradients in fp16 and compute each op
// in fp32 ("opmath") before rounding its result to fp16. PromptTune approaches that by rounding
// fp32 values to the nearest fp16 value at the same points while its kernels compute in fp32
// (`ActivationRounding.half`). Every fp16 value is exactly representable in fp32, so rounding is
// idempotent and the values stay ordinary `Float`s.

/// The nearest fp16 value of `x`, as fp32: round-to-nearest-even, subnormals down to 2^-24,
/// 65520 and above (in magnitude) to infinity, infinities and NaNs unchanged.
@inlinable
public func roundedToHalf(_ x: Float) -> Float {
    var y = x
    withUnsafeMutablePointer(to: &y) { pt_round_half($0, $0, 1) }
    return y
}

extension Tensor {
    /// Every value rounded to the nearest fp16 value (`roundedToHalf(_:)`), vectorised.
    public func roundedToHalf() -> Tensor {
        var t = self
        t.roundToHalf()
        return t
    }

    /// Rounds every value to the nearest fp16 value in place.
    public mutating func roundToHalf() {
        let n = count
        withMutablePointer { pt_round_half($0, $0, n) }
    }
}

/// Whether a model rounds its activations (and the gradients flowing between its layers) to fp16
/// values, as the reference code's fp16 CLIP holds them. `.none` is PromptTune's fp32, bit for bit.
public enum ActivationRounding: String, Sendable, Equatable, Codable {
    case none
    /// Rounded to fp16 values where the reference's fp16 model stores a tensor: the tower inputs,
    /// each LayerNorm's output, each linear layer's output, QuickGELU's three ops, both residual
    /// sums of every block, the attention probabilities as fused fp16 kernels round them, and the
    /// gradients between blocks, at each residual and through the MLP.
    case half

    /// Rounds `t` in place when this is `.half` (on `backend`: a model's activations on its own).
    @inlinable
    public func apply(_ t: inout Tensor, backend: any ComputeBackend = defaultBackend) {
        if self == .half { backend.roundToHalf(&t) }
    }
}
