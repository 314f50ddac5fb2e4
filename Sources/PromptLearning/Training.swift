import CLIP
import Foundation
import TensorCore
import TensorIO

/// Why a run stopped part-way: every input passed its checks, then a step gave a non-finite loss
/// or update. Kept apart from `PromptError` (what is wrong before any work) because it says where
/// the run stopped: the checkpoint of epoch `epoch - 1` holds the last good prompts.
public struct TrainingError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// The loss (or a gradient) is not finite. At `step` 1, before any update, the inputs are at
        /// fault (features, the model's weights, prototypes); later the run diverged.
        case nonFiniteLoss
        /// The update made a parameter non-finite.
        case nonFiniteUpdate
    }

    public var kind: Kind
    /// The epoch (1-based) and the step of the run (1-based, counted over all epochs) that failed.
    public var epoch: Int
    public var step: Int
    /// The learning rate of that step.
    public var learningRate: Double
    /// The full, human-readable message.
    public var message: String

    public init(_ kind: Kind, epoch: Int, step: Int, learningRate: Double, _ message: String) {
        self.kind = kind
        self.epoch = epoch
        self.step = step
        self.learningRate = learningRate
        self.message = message
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// Progress of a run, for progress bars and logs.
public struct StepReport: Sendable {
    public var epoch: Int
    public var step: Int          // within the epoch, 1-based
    public var stepsPerEpoch: Int
    public var learningRate: Double
    public var value: ObjectiveValue
}

/// Text features of a trained context for any class-name list (base-to-novel evaluation).
/// A class-specific context belongs to the classes it was trained on: pass `trainedClassNames`
/// and other names are refused (the same count of other names would be silently misread).
public func promptTextFeatures(model: CLIPModel, method: Method, context: Tensor, classNames: [String],
                               tokenizer: CLIPTokenizer, trainedClassNames: [String]? = nil) throws -> Tensor {
    if method.prompt.classSpecific, let trained = trainedClassNames, trained != classNames {
        throw PromptError(.classMismatch, "this prompt has class-specific contexts for its \(trained.count) training classes; it cannot be evaluated on other class names (use a shared-context method for base-to-novel or cross-dataset)")
    }
    if method.prompt.classSpecific && context.shape[0] != classNames.count {
        throw PromptError(.classMismatch, "this prompt has class-specific contexts for \(context.shape[0]) classes; it cannot be evaluated on \(classNames.count) class names (use a shared-context method for base-to-novel)")
    }
    var rng = SeededGenerator(seed: 0)
    let learner = try PromptLearner(config: method.prompt, classNames: classNames, text: model.text,
                                    tokenizer: tokenizer, context: context, rng: &rng)
    return PromptEncoder(text: model.text).forward(learner, context: context, keepCaches: false).0
}

/// Zero-shot text features of `classNames` with a hand template (`{}` = class name; underscores
/// in names become spaces, as CoOp's readers do), K x E, not normalised.
public func zeroShotTextFeatures(model: CLIPModel, tokenizer: CLIPTokenizer, template: String, classNames: [String]) -> Tensor {
    let prompts = classNames.map { template.replacingOccurrences(of: "{}", with: $0.replacingOccurrences(of: "_", with: " ")) }
    let ids = tokenizer.tokenize(prompts, contextLength: model.config.contextLength).map { $0.map(Int.init) }
    return model.encodeText(ids)
}

/// Batch indices of an epoch: a seeded shuffle cut into batches; the last partial batch is
/// dropped when the data holds at least one full batch (Dassl's drop_last rule).
func epochBatches(count: Int, batchSize b: Int, rng: inout SeededGenerator) -> [[Int]] {
    var order = Array(0..<count)
    order.shuffle(using: &rng)
    let full = order.count / b
    if full == 0 { return [order] }
    return (0..<full).map { Array(order[($0 * b)..<(($0 + 1) * b)]) }
}

/// Why training stopped on a non-finite loss. A lower learning rate helps only when the loss
/// diverged after updates; a loss that is not finite at the very first step, before any update,
/// comes from the inputs (features, the model's weights, prototypes), which the message says.
func nonFiniteLossMessage(_ loss: Double, terms: String, epochsDone: Int, steps: Int, lr: Double) -> String {
    if steps == 0 {
        return "the loss is \(loss) at the first step, before any update (\(terms)); training stopped. The inputs give non-finite values: check the features file, the model checkpoint (prompttune info --model) and any prototypes; the learning rate plays no part yet."
    }
    return "the loss diverged to \(loss) at epoch \(epochsDone + 1), step \(steps + 1) (\(terms)); training stopped. The last good prompts are in the checkpoint of epoch \(epochsDone). Try a lower learning rate (this step's was \(lr))."
}
