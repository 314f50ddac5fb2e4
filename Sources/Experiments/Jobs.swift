import CLIP
import Datasets
import Features
import Imaging
import Foundation
import PromptLearning
import TensorCore
import TensorIO

/// Refuses features made with another checkpoint, when the file records which.
public func checkFeatures(_ features: FeatureSet, path: String, modelPath: String, digest: String) throws {
    if let recorded = features.provenance["model_digest"], recorded != digest {
        throw ExperimentError(.modelMismatch, "\(path) was made with another model (digest \(recorded); \(modelPath) has \(digest)); encode the features again with this model")
    }
}

/// Training one prompt on a features file into a run folder: what `prompttune train` does.
public struct TrainingJob {
    public var modelPath: String
    public var featuresPath: String
    public var method: Method
    public var epochs: Int
    public var learningRate: Double
    public var batchSize: Int
    public var seed: UInt64
    /// Hand template for zero-shot features; nil = the method's for the features' dataset, else the
    /// dataset's template recorded in the features file.
    public var template: String?
    public var folder: RunFolder
    public var resume: Bool
    /// fp32, or the references' fp16 training approached (`TrainingPrecision`).
    public var precision: TrainingPrecision = .fp32
    /// What runs the model (its product precision: `CPUBackend.with(precision:)`).
    public var backend: any ComputeBackend = defaultBackend

    public init(modelPath: String, featuresPath: String, method: Method, epochs: Int, learningRate: Double, batchSize: Int,
                seed: UInt64, template: String?, folder: RunFolder, resume: Bool) {
        self.modelPath = modelPath; self.featuresPath = featuresPath; self.method = method; self.epochs = epochs
        self.learningRate = learningRate; self.batchSize = batchSize; self.seed = seed; self.template = template
        self.folder = folder; self.resume = resume
    }

    /// Loads the model and features, checks they belong together, and returns the run, restored
    /// from its checkpoint with `resume`. Writes `config.json` (the resolved settings).
    public func prepare() throws -> TrainingRun {
        if method.needsImages {
            throw ExperimentError(.notSupported, "method \(method.name) trains prompts inside the image tower, so it needs the training images, not a features file; train it with `prompttune train --augment per-iteration --dataset D` or `prompttune run` (both decode and augment the dataset's images every iteration)")
        }
        let set = try FeatureSet.read(path: featuresPath)
        let digest = try modelDigest(modelPath)
        try checkFeatures(set, path: featuresPath, modelPath: modelPath, digest: digest)
        let clip = try CLIPModel.load(path: modelPath).on(backend)
        var optimizer = OptimizerConfig()
        optimizer.learningRate = learningRate
        let datasetTemplate = set.provenance["template"] ?? "a photo of a {}."
        let config = TrainConfig(method: method, optimizer: optimizer, epochs: epochs, batchSize: batchSize, seed: seed,
                                 template: template ?? method.handTemplate(dataset: set.provenance["dataset"] ?? "", default: datasetTemplate),
                                 precision: precision)
        let tuner = try PromptTuner(model: clip, tokenizer: try CLIPTokenizer(), data: .features(set.labeled), config: config,
                                    modelDigest: digest, dataDigest: try contentDigest(path: featuresPath))
        let run = try TrainingRun(folder: folder, tuner: tuner, resume: resume ? .require : .refuse)
        try writeJSON(TrainingJobConfig(model: modelPath, features: featuresPath, classNames: set.classNames, train: config,
                                        images: set.count, views: set.views), to: folder.config)
        return run
    }
}

/// `config.json` of a training run: the settings as resolved.
public struct TrainingJobConfig: Codable, Equatable {
    public var model: String
    public var features: String
    public var classNames: [String]
    public var train: TrainConfig
    public var images: Int
    public var views: Int

    enum CodingKeys: String, CodingKey { case model, features, classNames = "classnames", train, images, views }
}

/// The images a prompt is evaluated or analysed on: a features file of the unprompted tower, or a
/// dataset's images (a split, all classes or the base / novel half), decoded and encoded through
/// the tower as the prompt's architecture prompts it.
public enum EvaluationImages: Sendable {
    case features(path: String)
    case dataset(root: URL, dataset: DatasetName, split: SplitKind, subset: ClassSubset)
}

/// A prompt (or the hand template, without one) ready to classify: the image features it is
/// evaluated on, their labels and class names, and its classifier.
public struct PreparedEvaluation {
    /// N x E image features (through the prompted tower for image-prompt methods), not normalised.
    public var images: Tensor
    public var labels: [Int]
    public var classNames: [String]
    public var classifier: PromptClassifier
    /// What the text side is, in words: "prompt <path>" or the hand template.
    public var textSource: String
    /// What the images are, in words.
    public var imageSource: String
}

/// Accuracy of a trained prompt on a features file or a dataset split, under its class names or
/// others (base-to-novel): what `prompttune eval` does. The prompt is any file `TrainedPrompt`
/// reads: PromptTune's, or a CoOp / KgCoOp / DAPT `prompt_learner/model.pth.tar-N`. Methods with
/// prompts in the image tower (DAPT, VPT) are evaluated from the images, as a grid cell is.
public struct PromptEvaluationJob {
    public var modelPath: String
    /// nil: the zero-shot features of the hand template (`analyze` without a prompt).
    public var promptPath: String?
    public var images: EvaluationImages
    /// Class names in label order; nil = the features file's or the split's.
    public var classNames: [String]?
    /// Evaluate only the text context of a prompt that also holds a visual prompt.
    public var textOnly: Bool

    public init(modelPath: String, promptPath: String?, images: EvaluationImages, classNames: [String]? = nil, textOnly: Bool = false) {
        self.modelPath = modelPath; self.promptPath = promptPath; self.images = images; self.classNames = classNames
        self.textOnly = textOnly
    }

    public init(modelPath: String, promptPath: String, featuresPath: String, classNames: [String]? = nil, textOnly: Bool = false) {
        self.init(modelPath: modelPath, promptPath: promptPath, images: .features(path: featuresPath), classNames: classNames,
                  textOnly: textOnly)
    }

    public func run() throws -> (result: EvaluationResult, classNames: [String]) {
        let e = try prepare()
        return (evaluate(images: e.images, labels: e.labels, classifier: e.classifier, classNames: e.classNames), e.classNames)
    }

    /// Loads the model, the prompt and the images, checks they belong together, and encodes what
    /// needs encoding.
    public func prepare() throws -> PreparedEvaluation {
        let prompt = try promptPath.map { try TrainedPrompt.read(path: $0) }
        let digest = try modelDigest(modelPath)
        switch images {
        case .features(let featuresPath):
            let set = try FeatureSet.read(path: featuresPath)
            try checkFeatures(set, path: featuresPath, modelPath: modelPath, digest: digest)
            let names = classNames ?? set.classNames
            guard names.count == set.classNames.count else {
                throw ExperimentError(.classMismatch, "\(names.count) class names were given but \(featuresPath) has \(set.classNames.count) classes")
            }
            let clip = try CLIPModel.load(path: modelPath)
            guard set.dimension == clip.config.embedDim else {
                throw ExperimentError(.modelMismatch, "\(featuresPath) has features of dimension \(set.dimension), the model's is \(clip.config.embedDim): made with another model")
            }
            let tokenizer = try CLIPTokenizer()
            let template = set.provenance["template"] ?? "a photo of a {}."
            let classifier: PromptClassifier, source: String
            if let prompt, prompt.method.architecture.classifiesPerImage, !prompt.method.needsImages {
                // Its prompts are made from each image's feature, which the features file holds.
                classifier = try prompt.architecture(model: clip, modelPath: modelPath, modelDigest: digest, classNames: names,
                                                     tokenizer: tokenizer, template: template).classifier(prompt.parameters)
                source = "prompt \(prompt.path)"
            } else if let prompt {
                classifier = .shared(try prompt.textFeatures(model: clip, modelPath: modelPath, modelDigest: digest, classNames: names,
                                                             tokenizer: tokenizer, textOnly: textOnly))
                source = "prompt \(prompt.path)"
            } else {
                classifier = .shared(zeroShotTextFeatures(model: clip, tokenizer: tokenizer, template: template, classNames: names))
                source = "hand template \"\(template)\""
            }
            try checkFinite(classifier, source: source)
            return PreparedEvaluation(images: set.view(0), labels: set.labels, classNames: names, classifier: classifier,
                                      textSource: source, imageSource: "\(featuresPath) (view 0)")
        case .dataset(let root, let dataset, let split, let subset):
            let loaded = try openDataset(dataset, root: root)
            let s = try select(loaded.splits, dataset: dataset, options: SelectionOptions(subset: subset))
            let items: [Datum]
            switch split { case .train: items = s.train; case .val: items = s.val; case .test: items = s.test }
            guard !items.isEmpty else { throw ExperimentError(.missingData, "the \(split.rawValue) split of \(dataset.rawValue) holds no images (classes: \(subset.rawValue))") }
            let names = classNames ?? s.classNames
            guard names.count == s.classNames.count else {
                throw ExperimentError(.classMismatch, "\(names.count) class names were given but the \(split.rawValue) split of \(dataset.rawValue) (classes: \(subset.rawValue)) has \(s.classNames.count) classes")
            }
            let clip = try CLIPModel.load(path: modelPath)
            let tokenizer = try CLIPTokenizer()
            let template = prompt?.method.handTemplate(dataset: dataset.rawValue, default: s.template) ?? s.template
            let classifier: PromptClassifier, source: String, features: Tensor
            if let prompt {
                let architecture = try prompt.architecture(model: clip, modelPath: modelPath, modelDigest: digest, classNames: names,
                                                           tokenizer: tokenizer, template: template, textOnly: textOnly)
                classifier = architecture.classifier(prompt.parameters)
                features = try encodeImages(items, source: loaded.images, resolution: clip.config.imageResolution) {
                    architecture.encodeImages(prompt.parameters, pixels: $0, workspace: $1)
                }
                source = "prompt \(prompt.path)"
            } else {
                classifier = .shared(zeroShotTextFeatures(model: clip, tokenizer: tokenizer, template: template, classNames: names))
                features = try encodeImages(items, source: loaded.images, resolution: clip.config.imageResolution) {
                    clip.image.forward(pixels: $0, workspace: $1).0
                }
                source = "hand template \"\(template)\""
            }
            try checkFinite(classifier, source: source)
            return PreparedEvaluation(images: features, labels: items.map(\.label), classNames: names, classifier: classifier,
                                      textSource: source,
                                      imageSource: "the \(split.rawValue) split of \(dataset.rawValue)\(subset == .all ? "" : " (\(subset.rawValue) classes)"), \(items.count) images")
        }
    }

    /// An accuracy computed from NaN scores would look like a result: refused.
    func checkFinite(_ c: PromptClassifier, source: String) throws {
        guard case .shared(let text) = c, !text.data.allSatisfy({ $0.isFinite }) else { return }
        throw ExperimentError(.nonFiniteInput, "the text features of the \(source) are not finite under \(modelPath): the model checkpoint holds non-finite text-tower weights")
    }
}

/// Image features N x E (not normalised) of `items`, each decoded and CLIP-preprocessed (resize,
/// centre crop) on every core, `chunk` at a time, through `encode` (pixels B x 3 x R x R and a
/// workspace the chunks share -> B x E). An unreadable image is an error naming it.
func encodeImages(_ items: [Datum], source: any ImageSource, resolution r: Int, chunk: Int = 32,
                  encode: (Tensor, Workspace) -> Tensor) throws -> Tensor {
    let size = 3 * r * r
    var rows: [Float] = []
    var width = 0
    let workspace = Workspace()  // each chunk reuses the buffers of the one before
    for start in stride(from: 0, to: items.count, by: chunk) {
        let part = Array(items[start..<min(items.count, start + chunk)])
        var pixels = [Float](repeating: 0, count: part.count * size)
        var failure: String?
        let lock = NSLock()
        pixels.withUnsafeMutableBufferPointer { px in
            let base = px.baseAddress!
            DispatchQueue.concurrentPerform(iterations: part.count) { i in
                do {
                    let t = clipPreprocess(try source.image(for: part[i]), resolution: r)
                    t.withPointer { (base + i * size).update(from: $0, count: size) }
                } catch {
                    lock.lock(); failure = "\(part[i].path): \(error)"; lock.unlock()
                }
            }
        }
        if let failure { throw ExperimentError(.unreadableImage, "image could not be read: \(failure)") }
        let f = encode(Tensor(shape: [part.count, 3, r, r], data: pixels), workspace)
        width = f.lastDim
        rows += f.data
    }
    return Tensor(shape: [items.count, width], data: rows)
}
