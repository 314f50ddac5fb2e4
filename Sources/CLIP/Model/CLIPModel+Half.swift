import TensorCore

extension CLIPModel {
    /// `.half` when both towers round their activations to fp16 values (`ActivationRounding`).
    /// Setting it sets both towers'.
    public var activationRounding: ActivationRounding {
        get { text.activationRounding == .half && image.activationRounding == .half ? .half : .none }
        set { text.activationRounding = newValue; image.activationRounding = newValue }
    }

    /// The model as the reference code's fp16 CLIP holds it: every tensor rounded to its nearest
    /// fp16 value (openai's released checkpoints are fp16, so for them this changes nothing; a
    /// model trained or stored in fp32 loses its low bits), and both towers rounding their
    /// activations (`activationRounding = .half`). The logit scale is rounded too and
    /// exponentiated in fp32, as openai's `convert_weights` leaves `logit_scale` an fp32 parameter.
    public func roundedToHalf() -> CLIPModel {
        var m = self
        for p in parameters { m[parameter: p] = self[parameter: p].roundedToHalf() }
        m.activationRounding = .half
        return m
    }
}
