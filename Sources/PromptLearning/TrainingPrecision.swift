import CLIP
import TensorCore

/// The numbers a training run keeps.
///
/// - `fp32`: everything in fp32; equals the references run with `PREC = "fp32"`.
/// - `fp16Reference` ("fp16-reference"): an approach to the references' default fp16 training
///   (CoOp and KgCoOp's `PREC = "fp16"`, DAPT always), which hold CLIP in fp16, compute every op
///   in fp32 and store its result in fp16, keep the prompts as fp16 parameters and update them with
///   fp16 SGD. PromptTune still computes in fp32 but rounds to fp16 values what the reference
///   stores in fp16: the frozen weights once (`CLIPModel.roundedToHalf()`), the activations
///   between layers and the gradients between blocks (`ActivationRounding.half`), the prompts,
///   their gradients and each optimiser op (`sgdStepHalf`), the cached image features, the
///   normalised features and the logits. Inside a layer (attention scores, softmax, the GEMMs'
///   sums) it stays fp32, so it is not the reference bit for bit: docs/DESIGN.md gives its
///   measured distance to a CPU fp16 run of the reference code.
public enum TrainingPrecision: String, Codable, Sendable, CaseIterable {
    case fp32
    case fp16Reference = "fp16-reference"

    /// The model a run with this precision trains through: the same model for fp32; for
    /// fp16-reference its weights rounded to fp16 and its activations rounded as the reference's
    /// (a model that already rounds its activations, one from `roundedToHalf()`, is used as is).
    public func model(_ model: CLIPModel) -> CLIPModel {
        self == .fp32 || model.activationRounding == .half ? model : model.roundedToHalf()
    }

    /// How the model and the loss's head round their activations.
    public var activationRounding: ActivationRounding { self == .fp32 ? .none : .half }

    /// Rounds a value the reference keeps in fp16 (a no-op for fp32).
    public func round(_ t: inout Tensor) {
        if self == .fp16Reference { t.roundToHalf() }
    }
}
