import ArgumentParser
import PromptLearning
import TensorCore

/// `--precision` of `train` and `run`: the frozen towers' product inputs (TensorCore's `Precision`)
/// or the references' fp16 training approached (`TrainingPrecision.fp16Reference`).
enum PrecisionChoice: String, CaseIterable, ExpressibleByArgument {
    case fp32, bf16
    case fp16Reference = "fp16-reference"

    /// The GEMM inputs (the backend's precision): bf16 only for bf16.
    var compute: Precision { self == .bf16 ? .bf16 : .fp32 }
    /// The training run's precision (`TrainConfig.precision`).
    var training: TrainingPrecision { self == .fp16Reference ? .fp16Reference : .fp32 }

    static let help = """
        fp32 (exact; the references' PREC = "fp32"), bf16 (the frozen towers' layer products read bf16 inputs, \
        fp32 accumulation; needs AVX-512 BF16 or AMX) or fp16-reference (the references' default fp16 training \
        approached: CLIP's weights, the activations between layers, the prompts, their gradients and each SGD \
        op rounded to fp16 values while computing in fp32; on the tiny CLIP its prompts end 0.25-1.1 % of \
        their movement from a CPU fp16 run of the reference code, as far as fp32's or closer, and it drops \
        the updates fp16 drops, e.g. 88-97 % in DAPT's warm-up epoch; not exact, see docs/DESIGN.md).
        """
}

/// The backend that runs a command's model with products in `precision` (`--precision`): the
/// default CPU backend, refused with the reason where bf16 cannot run here.
func computeBackend(_ precision: Precision) throws -> any ComputeBackend {
    do { return try defaultBackend.withPrecision(precision) } catch {
        throw ValidationError("--precision \(precision.rawValue): \(error)")
    }
}
