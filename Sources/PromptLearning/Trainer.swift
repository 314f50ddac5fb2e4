import CLIP
import Foundation
import TensorCore
import TensorIO

public struct TrainingError: Error, CustomStringConvertible, LocalizedError {
    public var description: String
    public var errorDescription: String? { description }
}

/// Progress of a run, for progress bars and logs.
public struct StepReport: Sendable {
    public var epoch: Int
    public var step: Int          // within the epoch, 1-based
    public var stepsPerEpoch: Int
    public var learningRate: Double
    public var value: ObjectiveValue
}

/// Trains a prompt from cached image features with Dassl's recipe.
///
/// Every draw comes from one seeded generator whose state is saved in the checkpoint each epoch,
/// so a run resumed from epoch e ends with exactly the prompts of an uninterrupted run.
public final class PromptTrainer {
    public let config: TrainConfig
    public let model: CLIPModel
    public let encoder: PromptEncoder
    public private(set) var learner: PromptLearner
    public let inputs: TermInputs
    public private(set) var momentum: Tensor?
    public private(set) var epochsDone = 0
    public private(set) var steps = 0
    public private(set) var history: [EpochRecord] = []
    public private(set) var rng: SeededGenerator
    /// The text tower's activations, reused step after step.
    private let workspace = Workspace()
    /// Warnings worth showing the user (e.g. no simplex ETF for K > d + 1).
    public private(set) var warnings: [String] = []
    /// One JSON line per step when set (`--trace`): the batch's indices, each image's cached view
    /// (0 with one view), the learning rate and every loss term.
    public var trace: TraceWriter?
    let images: [Tensor]   // per view: N x E, normalised
    let labels: [Int]
    let modelDigest: String
    let featuresDigest: String

    public var classNames: [String] { learner.classNames }
    public var context: Tensor { learner.context }

    /// - features: training image features (any number of cached views).
    /// - initialContext: start from this context instead of drawing one (parity tests).
    public init(model: CLIPModel, tokenizer: CLIPTokenizer, features: LabeledFeatures, config: TrainConfig,
                initialContext: Tensor? = nil, modelDigest: String = "", featuresDigest: String = "") throws {
        guard config.epochs >= 1 else { throw PromptError("epochs must be at least 1 (got \(config.epochs))") }
        guard config.batchSize >= 1 else { throw PromptError("the batch size must be at least 1 (got \(config.batchSize))") }
        guard features.dimension == model.config.embedDim else {
            throw PromptError("the features have dimension \(features.dimension) but the model's embedding is \(model.config.embedDim): the features were made with another model; encode them again with this model")
        }
        if let problem = config.problem { throw PromptError(problem) }
        guard features.count > 0 else { throw PromptError("the features file holds no images") }
        guard features.views > 0, features.dimension > 0 else {
            throw PromptError("the features have shape \(features.features.shape): at least one view and one dimension are needed")
        }
        guard !features.classNames.isEmpty else { throw PromptError("the features list no class names") }
        if let bad = features.labels.firstIndex(where: { $0 < 0 || $0 >= features.classNames.count }) {
            throw PromptError("label \(features.labels[bad]) of image \(bad) is not a class index in 0..<\(features.classNames.count)")
        }
        // Inputs first: a NaN here would otherwise surface as a non-finite loss blamed on the learning rate.
        if let bad = features.features.data.firstIndex(where: { !$0.isFinite }) {
            throw PromptError("the image features are not finite (value \(features.features.data[bad]) at element \(bad)); encode the features again with a model whose weights are finite")
        }
        guard model.logitScale.isFinite else {
            throw PromptError("the model's logit scale is \(model.logitScale), not finite: the checkpoint holds non-finite weights")
        }
        if config.method.anchors != nil && features.classNames.count < 2 {
            throw PromptError("NPT's anchors need at least 2 classes; the features file has \(features.classNames.count)")
        }
        if config.method.anchors != nil && features.classNames.count > maxAnchorClasses {
            throw PromptError("NPT's anchors are a \(features.classNames.count) x \(features.classNames.count) frame (\(formatBytes(4 * features.classNames.count * features.classNames.count)) per copy) for \(features.classNames.count) classes; at most \(maxAnchorClasses) classes are supported: train without NPT, or on fewer classes")
        }
        self.config = config
        self.model = model
        self.encoder = PromptEncoder(text: model.text)
        var rng = SeededGenerator(seed: config.seed)
        self.learner = try PromptLearner(config: config.method.prompt, classNames: features.classNames, text: model.text,
                                         tokenizer: tokenizer, context: initialContext, rng: &rng)
        self.rng = rng
        self.images = (0..<features.views).map { L2Normalize.forward(features.view($0)).0 }
        self.labels = features.labels
        self.modelDigest = modelDigest
        self.featuresDigest = featuresDigest

        var inputs = TermInputs()
        let k = features.classNames.count
        if config.method.needsZeroShot {
            inputs.zeroShot = L2Normalize.forward(zeroShotTextFeatures(model: model, tokenizer: tokenizer, template: config.template,
                                                                       classNames: features.classNames)).0
            guard inputs.zeroShot!.data.allSatisfy({ $0.isFinite }) else {
                throw PromptError("the zero-shot text features of the hand template are not finite: the model checkpoint holds non-finite text-tower weights")
            }
        }
        if let anchorOptions = config.method.anchors {
            let a = simplexETF(classes: k, dimension: model.config.embedDim, rotation: anchorOptions.rotation,
                               zeroShot: inputs.zeroShot, seed: anchorOptions.seed)
            inputs.anchors = a.vectors
            if let w = a.warning { warnings.append(w) }
        }
        if config.method.needsPrototypes {
            let all = Tensor(shape: [features.views * features.count, features.dimension], data: features.features.data)
            inputs.prototypes = classPrototypes(features: all, labels: Array((0..<features.views).map { _ in features.labels }.joined()), classes: k)
        }
        self.inputs = inputs
    }

    /// Batch indices of an epoch: a seeded shuffle cut into batches; the last partial batch is
    /// dropped when the data holds at least one full batch (Dassl's drop_last rule).
    public func drawBatches() -> [[Int]] {
        epochBatches(count: labels.count, batchSize: config.batchSize, rng: &rng)
    }

    /// Loss and context gradient on a batch, without updating anything.
    public func evaluateBatch(_ batch: [Int], views: [Int]? = nil) -> (ObjectiveValue, Tensor) {
        var (features, trace) = encoder.forward(learner, context: learner.context, workspace: workspace)
        let d = model.config.embedDim
        var rows: [Float] = []
        rows.reserveCapacity(batch.count * d)
        for (i, n) in batch.enumerated() {
            let v = views?[i] ?? 0
            rows += images[v].data[(n * d)..<((n + 1) * d)]
        }
        let value = objective(method: config.method, textFeatures: features, images: Tensor(shape: [batch.count, d], data: rows),
                              labels: batch.map { labels[$0] }, logitScale: model.logitScale, inputs: inputs)
        let dContext = encoder.backward(value.dText, releasing: &trace, learner: learner, workspace: workspace)
        return (value, dContext)
    }

    /// One optimisation step on `batch` at learning rate `lr`. Throws on a non-finite loss
    /// before changing anything.
    @discardableResult
    public func step(_ batch: [Int], views: [Int]? = nil, lr: Double) throws -> ObjectiveValue {
        let (value, grad) = evaluateBatch(batch, views: views)
        guard value.total.isFinite, grad.data.allSatisfy({ $0.isFinite }) else {
            let terms = value.terms.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
            if steps == 0 {
                // Nothing has been updated yet, so the learning rate cannot be at fault.
                throw TrainingError(description: "the loss is \(value.total) at the very first step, before any update (\(terms)): the inputs are not usable (the model's text tower or the prompt's initialisation gives non-finite values); check the model checkpoint")
            }
            throw TrainingError(description: nonFiniteLossMessage(value.total, terms: terms, epochsDone: epochsDone, steps: steps, lr: lr))
        }
        var ctx = learner.context, buffer = momentum
        sgdStep(&ctx, gradient: grad, momentumBuffer: &buffer, lr: lr, config: config.optimizer)
        guard ctx.data.allSatisfy({ $0.isFinite }) else {
            throw TrainingError(description: "the update at epoch \(epochsDone + 1), step \(steps + 1) made the prompt non-finite (learning rate \(lr)); training stopped. The last good prompts are in the checkpoint of epoch \(epochsDone). Try a lower learning rate.")
        }
        learner.context = ctx
        momentum = buffer
        steps += 1
        return value
    }

    /// Runs one epoch; returns its averages.
    @discardableResult
    public func runEpoch(_ report: (StepReport) -> Void = { _ in }) throws -> EpochRecord {
        let epoch = epochsDone
        let lr = learningRate(epoch: epoch, maxEpochs: config.epochs, config: config.optimizer)
        let batches = drawBatches()
        let viewCount = images.count
        var loss = 0.0, acc = 0.0
        var terms: [String: Double] = [:]
        for (i, batch) in batches.enumerated() {
            let views = viewCount > 1 ? batch.map { _ in Int(rng.next() % UInt64(viewCount)) } : nil
            let value = try step(batch, views: views, lr: lr)
            if let trace {
                try trace.write(StepTrace(epoch: epoch, step: i + 1, globalStep: steps, lr: lr, indices: batch,
                                          labels: batch.map { labels[$0] }, augmentations: nil, views: views ?? batch.map { _ in 0 },
                                          loss: value.total, terms: value.terms, accuracy: value.accuracy))
            }
            loss += value.total / Double(batches.count)
            acc += value.accuracy / Double(batches.count)
            for (k, v) in value.terms { terms[k, default: 0] += v / Double(batches.count) }
            report(StepReport(epoch: epoch, step: i + 1, stepsPerEpoch: batches.count, learningRate: lr, value: value))
        }
        epochsDone += 1
        let record = EpochRecord(epoch: epoch, learningRate: lr, loss: loss, terms: terms, accuracy: acc)
        history.append(record)
        return record
    }

    public var isFinished: Bool { epochsDone >= config.epochs }

    /// Batches per epoch (`drawBatches`' count).
    public var stepsPerEpoch: Int { max(1, labels.count / config.batchSize) }

    // MARK: Checkpoints

    public func checkpoint() -> PromptCheckpoint {
        PromptCheckpoint(
            header: .init(config: config, classNames: learner.classNames, contextShape: learner.context.shape,
                          hasMomentum: momentum != nil, epochsDone: epochsDone, steps: steps,
                          rngState: String(rng.currentState), history: history,
                          modelDigest: modelDigest, featuresDigest: featuresDigest),
            context: learner.context, momentum: momentum)
    }

    /// Continues from a checkpoint of the same run (same config, classes, model and features).
    public func restore(_ c: PromptCheckpoint) throws {
        let h = c.header
        func mismatch(_ what: String) -> PromptError {
            PromptError("cannot resume: the checkpoint was made with \(what); start a new run instead of resuming, or use the same settings")
        }
        guard h.config == config else { throw mismatch("other training settings") }
        guard h.classNames == learner.classNames else { throw mismatch("other class names") }
        guard h.contextShape == learner.context.shape else { throw mismatch("a context of shape \(h.contextShape)") }
        if !modelDigest.isEmpty && !h.modelDigest.isEmpty && h.modelDigest != modelDigest { throw mismatch("another model checkpoint") }
        if !featuresDigest.isEmpty && !h.featuresDigest.isEmpty && h.featuresDigest != featuresDigest { throw mismatch("another features file") }
        guard let state = UInt64(h.rngState) else { throw PromptError("corrupt checkpoint: generator state '\(h.rngState.prefix(40))'") }
        func corrupt(_ why: String) -> PromptError {
            PromptError("cannot resume: the checkpoint \(why); it is damaged or was edited: start a new run")
        }
        guard h.epochsDone >= 0, h.epochsDone <= config.epochs else { throw corrupt("records \(h.epochsDone) epochs done of \(config.epochs)") }
        guard h.history.count == h.epochsDone else { throw corrupt("records \(h.epochsDone) epochs done but a history of \(h.history.count)") }
        // Every epoch runs exactly stepsPerEpoch steps (epochsDone <= maxEpochs: no overflow).
        guard h.steps == h.epochsDone * stepsPerEpoch else {
            throw corrupt("records \(h.steps) steps, but \(h.epochsDone) epochs of \(stepsPerEpoch) steps make \(h.epochsDone * stepsPerEpoch)")
        }
        guard c.context.data.allSatisfy({ $0.isFinite }) else { throw corrupt("holds a non-finite context") }
        guard h.hasMomentum == (c.momentum != nil), c.momentum.map({ $0.shape == c.context.shape && $0.data.allSatisfy { $0.isFinite } }) ?? true else {
            throw corrupt("holds a momentum buffer that does not match its context")
        }
        guard h.epochsDone == 0 || c.momentum != nil else { throw corrupt("has finished epochs but no momentum buffer") }
        learner.context = c.context
        momentum = c.momentum
        epochsDone = h.epochsDone
        steps = h.steps
        history = h.history
        rng = SeededGenerator(state: state)
    }

    /// The prompt's text features for `classNames` (the training names by default), K x E, not normalised.
    public func textFeatures(classNames names: [String]? = nil, tokenizer: CLIPTokenizer) throws -> Tensor {
        try promptTextFeatures(model: model, method: config.method, context: learner.context,
                               classNames: names ?? learner.classNames, tokenizer: tokenizer)
    }
}

/// Text features of a trained context for any class-name list (base-to-novel evaluation).
/// A class-specific context belongs to the classes it was trained on: pass `trainedClassNames`
/// and other names are refused (the same count of other names would be silently misread).
public func promptTextFeatures(model: CLIPModel, method: Method, context: Tensor, classNames: [String],
                               tokenizer: CLIPTokenizer, trainedClassNames: [String]? = nil) throws -> Tensor {
    if method.prompt.classSpecific, let trained = trainedClassNames, trained != classNames {
        throw PromptError("this prompt has class-specific contexts for its \(trained.count) training classes; it cannot be evaluated on other class names (use a shared-context method for base-to-novel or cross-dataset)")
    }
    if method.prompt.classSpecific && context.shape[0] != classNames.count {
        throw PromptError("this prompt has class-specific contexts for \(context.shape[0]) classes; it cannot be evaluated on \(classNames.count) class names (use a shared-context method for base-to-novel)")
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
