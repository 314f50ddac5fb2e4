import CLIP
import Foundation
import TensorCore
import TensorIO

/// The general trainer: named trainable parameters (the text context, the visual prompt tokens),
/// SGD state keyed by the same names, and a training source that is either cached final image
/// features (the text-only methods) or images decoded and augmented every iteration (methods whose
/// image path has trainable prompts: DAPT, VPT; any method on CoOp's per-iteration protocol, where
/// a text method's images pass the frozen tower forward only), decoded on every core while the
/// step runs.
///
/// Dassl's recipe (warm-up, cosine per epoch), Dassl's batching (a seeded shuffle per epoch, the
/// last partial batch dropped when a full one exists). Every draw comes from one seeded generator
/// whose state is saved in the checkpoint; augmentations are seeded per (epoch, image), so a resumed
/// run equals an uninterrupted one.
public final class PromptTuner {
    public let config: TrainConfig
    public let model: CLIPModel
    /// The method's prompt architecture for the training class names.
    public let architecture: any PromptArchitecture
    public let data: TrainingData
    public let inputs: TermInputs
    /// What training started from (saved by every run as `initial.safetensors`).
    public let initialParameters: ParameterSet
    public private(set) var parameters: ParameterSet
    public private(set) var optimizer = SGDState()
    public private(set) var epochsDone = 0
    public private(set) var steps = 0
    public private(set) var history: [EpochRecord] = []
    /// The method's Gaussian prompt aggregate so far (PromptSRC's GPA): sum over the finished
    /// epochs of w_e times the trained tensors; nil for methods without one and before epoch 1 ends.
    public private(set) var aggregate: ParameterSet?
    public private(set) var rng: SeededGenerator
    public private(set) var warnings: [String] = []
    /// One JSON line per step when set (`--trace`).
    public var trace: TraceWriter?
    let featureViews: [Tensor]   // features source: per view N x D, normalised
    /// The towers' activations and backward temporaries, reused step after step.
    let workspace: Workspace
    let labels: [Int]
    let modelDigest: String
    let dataDigest: String

    public var classNames: [String] { architecture.classNames }
    /// The learned text context (nil for methods that keep the hand template's text, VPT).
    public var context: Tensor? { parameters[ParameterName.textContext] }

    /// - initialParameters: start from these (parity tests, replays) instead of drawing them.
    /// - prototypes: K x D class prototypes (DAPT's, e.g. read from its `_prototype.pkl`); computed
    ///   from the source when a term needs them and none are given.
    public init(model: CLIPModel, tokenizer: CLIPTokenizer, data: TrainingData, config: TrainConfig,
                initialParameters: ParameterSet? = nil, prototypes: Tensor? = nil,
                modelDigest: String = "", dataDigest: String = "") throws {
        let method = config.method
        if method.architecture.promptsImageTower && !model.image.isViT { throw PromptError.needsViT(method: method.name, model: model.config) }
        if let problem = config.problem { throw PromptError(.invalidSetting, problem) }
        if let problem = method.aggregation?.problem { throw PromptError(.invalidSetting, problem) }
        let k = data.classNames.count, d = model.config.embedDim
        guard !data.labels.isEmpty else { throw PromptError(.invalidData, "the training data holds no images") }
        guard k > 0 else { throw PromptError(.invalidData, "the training data lists no class names") }
        if let bad = data.labels.firstIndex(where: { $0 < 0 || $0 >= k }) {
            throw PromptError(.invalidData, "label \(data.labels[bad]) of image \(bad) is not a class index in 0..<\(k)")
        }
        if case .features(let f) = data {
            guard f.dimension == d else {
                throw PromptError(.modelMismatch, "the features have dimension \(f.dimension) but the model's embedding is \(d): the features were made with another model; encode them again with this model")
            }
            guard f.views > 0 else { throw PromptError(.invalidData, "the features have shape \(f.features.shape): at least one view is needed") }
            guard !method.needsImages else {
                throw PromptError(.notSupported, "method \(method.name) trains prompts inside the image tower; it needs the training images, not cached features")
            }
            // Inputs first: a NaN here would otherwise surface as a non-finite loss blamed on the learning rate.
            if let bad = f.features.data.firstIndex(where: { !$0.isFinite }) {
                throw PromptError(.nonFiniteInput, "the image features are not finite (value \(f.features.data[bad]) at element \(bad)); encode the features again with a model whose weights are finite")
            }
        }
        guard model.logitScale.isFinite else {
            throw PromptError(.nonFiniteInput, "the model's logit scale is \(model.logitScale), not finite: the checkpoint holds non-finite weights")
        }
        if method.anchors != nil && k < 2 { throw PromptError(.classMismatch, "NPT's anchors need at least 2 classes; the data has \(k)") }
        if method.anchors != nil && k > maxAnchorClasses {
            throw PromptError(.tooLarge, "NPT's anchors are a \(k) x \(k) frame (\(formatBytes(4 * k * k)) per copy) for \(k) classes; at most \(maxAnchorClasses) classes are supported: train without NPT, or on fewer classes")
        }
        let model = config.precision.model(model)  // fp16-reference: weights and activations rounded to fp16
        self.config = config
        self.model = model
        self.workspace = Workspace(backend: model.backend)
        self.data = data
        self.labels = data.labels
        self.modelDigest = modelDigest
        self.dataDigest = dataDigest

        var rng = SeededGenerator(seed: config.seed)
        architecture = try method.makeArchitecture(model: model, tokenizer: tokenizer, classNames: data.classNames,
                                                   template: config.template, given: initialParameters, rng: &rng)
        var initial = architecture.initialParameters
        for n in initial.names { config.precision.round(&initial[n]!) }  // fp16-reference: fp16 parameters
        self.rng = rng
        self.parameters = initial
        self.initialParameters = initial

        if case .features(let f) = data {
            featureViews = (0..<f.views).map {
                var v = f.view($0)
                config.precision.round(&v)  // fp16-reference: the features and the normalised features as fp16 values
                var n = L2Normalize.forward(v).0
                config.precision.round(&n)
                return n
            }
        } else {
            featureViews = []
        }

        var inputs = TermInputs()
        let needs = method.termInputs
        if needs.contains(.zeroShot) {
            inputs.zeroShot = L2Normalize.forward(zeroShotTextFeatures(model: model, tokenizer: tokenizer, template: config.template,
                                                                       classNames: data.classNames)).0
            guard inputs.zeroShot!.data.allSatisfy({ $0.isFinite }) else {
                throw PromptError(.nonFiniteInput, "the zero-shot text features of the hand template are not finite: the model checkpoint holds non-finite text-tower weights")
            }
        }
        if needs.contains(.templateEnsemble) {
            inputs.templateEnsemble = templateEnsembleTextFeatures(model: model, tokenizer: tokenizer, templates: ImageNetTemplates.all,
                                                                   classNames: data.classNames)
            guard inputs.templateEnsemble!.data.allSatisfy({ $0.isFinite }) else {
                throw PromptError(.nonFiniteInput, "the template-ensemble text features are not finite: the model checkpoint holds non-finite text-tower weights")
            }
        }
        if needs.contains(.clusters) {
            let options = method.terms.first { $0.type.needs.contains(.clusters) }.map { ClusterOptions(parameters: $0.parameters, runSeed: config.seed) }
                ?? ClusterOptions(seed: config.seed)
            inputs.clusters = try classClusters(zeroShot: inputs.zeroShot!, options: options)
        }
        if needs.contains(.classCounts) {
            var counts = [Int](repeating: 0, count: k)
            for y in data.labels { counts[y] += 1 }
            inputs.classCounts = counts
        }
        if let anchorOptions = method.anchors {
            let a = simplexETF(classes: k, dimension: d, rotation: anchorOptions.rotation, zeroShot: inputs.zeroShot, seed: anchorOptions.seed)
            inputs.anchors = a.vectors
            if let w = a.warning { warnings.append(w) }
        }
        if needs.contains(.prototypes) {
            if let prototypes {
                guard prototypes.shape == [k, d] else { throw PromptError(.shapeMismatch, "the prototypes have shape \(prototypes.shape), expected [\(k), \(d)]") }
                inputs.prototypes = prototypes
            } else {
                switch data {
                case .features(let f):
                    let all = Tensor(shape: [f.views * f.count, d], data: f.features.data)
                    inputs.prototypes = classPrototypes(features: all, labels: Array((0..<f.views).map { _ in f.labels }.joined()), classes: k)
                case .images(let source):
                    inputs.prototypes = try imagePrototypes(model: model, images: source, seed: config.seed)
                }
            }
        }
        self.inputs = inputs
    }

    // MARK: Steps

    /// Batch indices of an epoch (`PromptTrainer.drawBatches`' rule).
    public func drawBatches() -> [[Int]] {
        epochBatches(count: labels.count, batchSize: config.batchSize, rng: &rng)
    }

    public var stepsPerEpoch: Int { max(1, labels.count / config.batchSize) }
    public var isFinished: Bool { epochsDone >= config.epochs }

    /// The inputs of `indices` at `epoch`: cached rows (with `views`), or decoded, augmented pixels.
    public func loadBatch(_ indices: [Int], epoch: Int, views: [Int]? = nil) throws -> TrainingBatch {
        let y = indices.map { labels[$0] }
        switch data {
        case .features:
            let d = model.config.embedDim
            var rows: [Float] = []
            rows.reserveCapacity(indices.count * d)
            for (i, n) in indices.enumerated() {
                rows += featureViews[views?[i] ?? 0].data[(n * d)..<((n + 1) * d)]
            }
            return TrainingBatch(indices: indices, labels: y, features: Tensor(shape: [indices.count, d], data: rows), views: views)
        case .images(let source):
            let (pixels, augs) = try source.load(indices, seeds: indices.map { augmentationSeed(config.seed, epoch: epoch, index: $0) },
                                                 resolution: model.config.imageResolution)
            return TrainingBatch(indices: indices, labels: y, pixels: pixels, augmentations: augs)
        }
    }

    /// Loss and the gradient of every parameter on `batch`, changing nothing.
    public func evaluate(_ batch: TrainingBatch) -> (ObjectiveValue, ParameterSet) {
        let images: ImageBatch = batch.features.map { .features($0) } ?? .pixels(batch.pixels!)
        let forward = architecture.forward(parameters, images: images, workspace: workspace)
        var inputs = inputs
        if config.method.termInputs.contains(.frozenImages) {
            // The batch through the frozen, unprompted tower (PromptSRC's `ZS_image_encoder`), no gradient.
            var frozen = L2Normalize.forward(model.image.forward(pixels: batch.pixels!, workspace: workspace).0).0
            model.image.activationRounding.apply(&frozen)
            inputs.frozenImages = frozen
        }
        let value = objective(method: config.method, textFeatures: forward.text, images: forward.images, labels: batch.labels,
                              logitScale: model.logitScale, inputs: inputs, imageGradient: forward.imagesTrainable,
                              rounding: config.precision.activationRounding)
        return (value, forward.backward(value.dText, value.dImages))
    }

    /// One optimisation step at learning rate `lr`. Throws on a non-finite loss or update before
    /// changing anything.
    @discardableResult
    public func step(_ batch: TrainingBatch, lr: Double, epoch: Int? = nil, stepInEpoch: Int? = nil) throws -> ObjectiveValue {
        let (value, grads) = evaluate(batch)
        guard value.total.isFinite, grads.allFinite else {
            let terms = value.terms.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
            throw TrainingError(.nonFiniteLoss, epoch: epochsDone + 1, step: steps + 1, learningRate: lr,
                                nonFiniteLossMessage(value.total, terms: terms, epochsDone: epochsDone, steps: steps, lr: lr))
        }
        var params = parameters, state = optimizer
        state.step(&params, gradients: grads, lr: lr, config: config.optimizer, precision: config.precision)
        guard params.allFinite else {
            throw TrainingError(.nonFiniteUpdate, epoch: epochsDone + 1, step: steps + 1, learningRate: lr,
                                "the update at epoch \(epochsDone + 1), step \(steps + 1) made a prompt non-finite (learning rate \(lr)); training stopped. The last good prompts are in the checkpoint of epoch \(epochsDone). Try a lower learning rate.")
        }
        parameters = params
        optimizer = state
        steps += 1
        if let trace {
            try trace.write(StepTrace(epoch: epoch ?? epochsDone, step: stepInEpoch ?? steps, globalStep: steps, lr: lr,
                                      indices: batch.indices, labels: batch.labels, augmentations: batch.augmentations,
                                      views: batch.views ?? (batch.features != nil ? batch.indices.map { _ in 0 } : nil),
                                      loss: value.total, terms: value.terms, accuracy: value.accuracy))
        }
        return value
    }

    /// Runs one epoch; with an image source, the next batch is decoded while the step runs.
    @discardableResult
    public func runEpoch(_ report: (StepReport) -> Void = { _ in }) throws -> EpochRecord {
        let epoch = epochsDone
        let lr = learningRate(epoch: epoch, maxEpochs: config.epochs, config: config.optimizer)
        let batches = drawBatches()
        var views: [[Int]?] = []
        for batch in batches {
            views.append(featureViews.count > 1 ? batch.map { _ in Int(rng.next() % UInt64(featureViews.count)) } : nil)
        }
        var loss = 0.0, acc = 0.0
        var terms: [String: Double] = [:]
        var next: Prefetch? = Prefetch(self, batches[0], epoch: epoch, views: views[0])
        for (i, _) in batches.enumerated() {
            let batch = try next!.wait()
            next = i + 1 < batches.count ? Prefetch(self, batches[i + 1], epoch: epoch, views: views[i + 1]) : nil
            let value: ObjectiveValue
            do { value = try step(batch, lr: lr, epoch: epoch, stepInEpoch: i + 1) } catch {
                _ = try? next?.wait()
                throw error
            }
            loss += value.total / Double(batches.count)
            acc += value.accuracy / Double(batches.count)
            for (k, v) in value.terms { terms[k, default: 0] += v / Double(batches.count) }
            report(StepReport(epoch: epoch, step: i + 1, stepsPerEpoch: batches.count, learningRate: lr, value: value))
        }
        epochsDone += 1
        if let gpa = config.method.aggregation {
            // The reference's GPA at the epoch's last batch, after the step: aggregate + w_e x.
            let next = gpa.accumulate(aggregate, parameters, epoch: epoch, epochs: config.epochs)
            aggregate = next
            if epochsDone == config.epochs { parameters = next }  // the aggregate is the final prompt
        }
        let record = EpochRecord(epoch: epoch, learningRate: lr, loss: loss, terms: terms, accuracy: acc)
        history.append(record)
        return record
    }

    /// A batch being loaded on another thread (image sources); cached features load at once.
    final class Prefetch: @unchecked Sendable {
        private var result: Result<TrainingBatch, Error>?
        private let done = DispatchSemaphore(value: 0)

        init(_ tuner: PromptTuner, _ indices: [Int], epoch: Int, views: [Int]?) {
            if case .features = tuner.data {
                result = Result { try tuner.loadBatch(indices, epoch: epoch, views: views) }
                done.signal()
                return
            }
            DispatchQueue.global().async { [self] in
                result = Result { try tuner.loadBatch(indices, epoch: epoch, views: views) }
                done.signal()
            }
        }

        func wait() throws -> TrainingBatch {
            done.wait()
            done.signal()
            return try result!.get()
        }
    }

    // MARK: Checkpoints

    public func checkpoint() -> ParameterCheckpoint {
        ParameterCheckpoint(header: .init(config: config, classNames: classNames, shapes: parameters.shapes,
                                          epochsDone: epochsDone, steps: steps, rngState: String(rng.currentState),
                                          history: history, modelDigest: modelDigest, dataDigest: dataDigest),
                            parameters: parameters, momentum: optimizer.momentum, aggregate: aggregate ?? ParameterSet())
    }

    /// Continues from a checkpoint of the same run (same config, classes, model and data).
    public func restore(_ c: ParameterCheckpoint) throws {
        let h = c.header
        func mismatch(_ what: String) -> PromptError {
            PromptError(.incompatibleResume, "cannot resume: the checkpoint was made with \(what); start a new run instead of resuming, or use the same settings")
        }
        guard h.config == config else { throw mismatch("other training settings") }
        guard h.classNames == classNames else { throw mismatch("other class names") }
        guard c.parameters.names.sorted() == parameters.names.sorted(), h.shapes == parameters.shapes else {
            throw mismatch("other parameters (\(h.shapes.keys.sorted().joined(separator: ", ")))")
        }
        if !modelDigest.isEmpty && !h.modelDigest.isEmpty && h.modelDigest != modelDigest { throw mismatch("another model checkpoint") }
        if !dataDigest.isEmpty && !h.dataDigest.isEmpty && h.dataDigest != dataDigest { throw mismatch("other training data") }
        guard let state = UInt64(h.rngState) else { throw PromptError(.damagedCheckpoint, "corrupt checkpoint: generator state '\(h.rngState)'") }
        if let problem = progressProblem(c) {
            throw PromptError(.damagedCheckpoint, "cannot resume: \(problem); the checkpoint is damaged or was edited")
        }
        var p = ParameterSet()
        for n in parameters.names { p[n] = c.parameters[n]! }
        parameters = p
        var s = SGDState()
        for n in parameters.names { if let m = c.momentum[n] { s.momentum[n] = m } }
        optimizer = s
        aggregate = c.aggregate.isEmpty ? nil : ParameterSet(parameters.names.map { ($0, c.aggregate[$0]!) })
        epochsDone = h.epochsDone
        steps = h.steps
        history = h.history
        rng = SeededGenerator(state: state)
    }

    /// What makes a checkpoint of this run impossible to continue from, or nil: values that are not
    /// finite, momentum of unknown parameters or other shapes (it trapped in `sgdStep`), progress
    /// outside the run (epochs done below 0 trained without end, past the run's epochs with a short
    /// history recorded an unfinished cell as done) and a step count that no run of these epochs
    /// takes (2^63-1 overflowed the next step).
    func progressProblem(_ c: ParameterCheckpoint) -> String? {
        let h = c.header
        for n in c.parameters.names.sorted() {
            if let bad = c.parameters[n]!.data.firstIndex(where: { !$0.isFinite }) {
                return "parameter '\(n)' holds a non-finite value (\(c.parameters[n]!.data[bad]) at element \(bad))"
            }
        }
        for n in c.momentum.names.sorted() {
            guard let p = parameters[n] else { return "it holds momentum for '\(n)', which this method does not learn" }
            let m = c.momentum[n]!
            guard m.shape == p.shape else { return "the momentum of '\(n)' has shape \(m.shape), the parameter \(p.shape)" }
            if let bad = m.data.firstIndex(where: { !$0.isFinite }) {
                return "the momentum of '\(n)' holds a non-finite value (\(m.data[bad]) at element \(bad))"
            }
        }
        guard h.epochsDone >= 0, h.epochsDone <= config.epochs else {
            return "epochs done (\(h.epochsDone)) must lie in 0...\(config.epochs) (the run's epochs)"
        }
        let wantsAggregate = config.method.aggregation != nil && h.epochsDone > 0
        guard c.aggregate.isEmpty || wantsAggregate else { return "it holds a prompt aggregate, which this run does not keep" }
        if wantsAggregate {
            for n in parameters.names {
                guard let a = c.aggregate[n], a.shape == parameters[n]!.shape else { return "its prompt aggregate lacks '\(n)' or has another shape" }
                if let bad = a.data.firstIndex(where: { !$0.isFinite }) {
                    return "the aggregate of '\(n)' holds a non-finite value (\(a.data[bad]) at element \(bad))"
                }
            }
        }
        guard h.history.count == h.epochsDone else {
            return "it records \(h.epochsDone) finished epochs but a history of \(h.history.count)"
        }
        for (i, r) in h.history.enumerated() {
            guard r.epoch == i, r.loss.isFinite, r.accuracy.isFinite, r.learningRate.isFinite, r.terms.values.allSatisfy(\.isFinite) else {
                return "history record \(i) is not a finished epoch with finite numbers"
            }
        }
        // Checkpoints are written after whole epochs of `stepsPerEpoch` steps each.
        let (expected, overflow) = h.epochsDone.multipliedReportingOverflow(by: stepsPerEpoch)
        guard !overflow, h.steps == expected else {
            return "its step count \(h.steps) is not the \(h.epochsDone) x \(stepsPerEpoch) steps of its \(h.epochsDone) finished epochs"
        }
        if !c.momentum.names.isEmpty && h.steps == 0 { return "it holds momentum before any step" }
        return nil
    }

    /// The trained text features for `classNames` (the training names by default), K x E, not
    /// normalised (a shared classifier's; the zero-shot features for methods that keep the text fixed).
    public func textFeatures(classNames names: [String]? = nil, tokenizer: CLIPTokenizer) throws -> Tensor {
        let a = try names.map { try config.method.makeArchitecture(model: model, tokenizer: tokenizer, classNames: $0,
                                                                   template: config.template, parameters: parameters) } ?? architecture
        guard case .shared(let t) = a.classifier(parameters) else {
            throw PromptError(.notSupported, "method \(config.method.name) makes a classifier per image; it has no text features of its own")
        }
        return t
    }
}
