import CLIP
import Features
import Foundation
import PromptLearning
import TensorCore
import TensorIO

/// Refuses features made with another checkpoint, when the file records which.
public func checkFeatures(_ features: FeatureSet, path: String, modelPath: String, digest: String) throws {
    if let recorded = features.provenance["model_digest"], recorded != digest {
        throw ExperimentError("\(path) was made with another model (digest \(recorded); \(modelPath) has \(digest)); encode the features again with this model")
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
            throw ExperimentError("method \(method.name) trains prompts inside the image tower, so it needs the training images, not a features file; train it with `prompttune train --augment per-iteration --dataset D` or `prompttune run` (both decode and augment the dataset's images every iteration)")
        }
        let set = try FeatureSet.read(path: featuresPath)
        let digest = try modelDigest(modelPath)
        try checkFeatures(set, path: featuresPath, modelPath: modelPath, digest: digest)
        let clip = try CLIPModel.load(path: modelPath)
        var optimizer = OptimizerConfig()
        optimizer.learningRate = learningRate
        let datasetTemplate = set.provenance["template"] ?? "a photo of a {}."
        let config = TrainConfig(method: method, optimizer: optimizer, epochs: epochs, batchSize: batchSize, seed: seed,
                                 template: template ?? method.handTemplate(dataset: set.provenance["dataset"] ?? "", default: datasetTemplate))
        let trainer = try PromptTrainer(model: clip, tokenizer: try CLIPTokenizer(), features: set.labeled, config: config,
                                        modelDigest: digest, featuresDigest: try contentDigest(path: featuresPath))
        let run = try TrainingRun(folder: folder, trainer: trainer, resume: resume ? .require : .refuse)
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

/// Accuracy of a trained prompt on a features file, under the file's class names or others
/// (base-to-novel): what `prompttune eval` does. The prompt is any file `TrainedPrompt` reads:
/// PromptTune's, or a CoOp / KgCoOp / DAPT `prompt_learner/model.pth.tar-N`.
public struct PromptEvaluationJob {
    public var modelPath: String
    public var promptPath: String
    public var featuresPath: String
    /// Class names in label order; nil = the features file's.
    public var classNames: [String]?
    /// Evaluate only the text context of a prompt that also holds a visual prompt.
    public var textOnly: Bool

    public init(modelPath: String, promptPath: String, featuresPath: String, classNames: [String]? = nil, textOnly: Bool = false) {
        self.modelPath = modelPath; self.promptPath = promptPath; self.featuresPath = featuresPath; self.classNames = classNames
        self.textOnly = textOnly
    }

    public func run() throws -> (result: EvaluationResult, classNames: [String]) {
        let prompt = try TrainedPrompt.read(path: promptPath)
        let set = try FeatureSet.read(path: featuresPath)
        let digest = try modelDigest(modelPath)
        try checkFeatures(set, path: featuresPath, modelPath: modelPath, digest: digest)
        let names = classNames ?? set.classNames
        guard names.count == set.classNames.count else {
            throw ExperimentError("\(names.count) class names were given but \(featuresPath) has \(set.classNames.count) classes")
        }
        let clip = try CLIPModel.load(path: modelPath)
        guard set.dimension == clip.config.embedDim else {
            throw ExperimentError("\(featuresPath) has features of dimension \(set.dimension), the model's is \(clip.config.embedDim): made with another model")
        }
        let text = try prompt.textFeatures(model: clip, modelPath: modelPath, modelDigest: digest, classNames: names,
                                           tokenizer: try CLIPTokenizer(), textOnly: textOnly)
        // An accuracy computed from NaN scores would look like a result: refuse it.
        guard text.data.allSatisfy({ $0.isFinite }) else {
            throw ExperimentError("the text features of \(promptPath) are not finite under \(modelPath): the model checkpoint holds non-finite text-tower weights")
        }
        return (evaluate(images: set.view(0), labels: set.labels, text: text, classNames: names), names)
    }
}
