import CLIP
import Datasets
import Foundation
import PromptLearning
import TensorCore
import TensorIO

/// Training one prompt from a dataset's images augmented afresh at every iteration (CoOp's
/// protocol) into a run folder: what `prompttune train --augment per-iteration` does, for every
/// method (a text method's images go through the frozen image tower's forward only). One seed
/// draws the few-shot images (Dassl's, as `features --seed`) and seeds the trainer and the crops,
/// as in a grid cell.
public struct AugmentedTrainingJob {
    public var modelPath: String
    public var root: URL
    public var dataset: DatasetName
    public var selection: SelectionOptions
    public var method: Method
    public var epochs: Int
    public var learningRate: Double
    public var batchSize: Int
    /// Hand template for zero-shot features; nil = the method's for the dataset, else the dataset's.
    public var template: String?
    public var folder: RunFolder
    public var resume: Bool
    /// fp32, or the references' fp16 training approached (`TrainingPrecision`).
    public var precision: TrainingPrecision = .fp32
    /// What runs the model (its product precision: `CPUBackend.with(precision:)`).
    public var backend: any ComputeBackend = defaultBackend

    public init(modelPath: String, root: URL, dataset: DatasetName, selection: SelectionOptions, method: Method, epochs: Int,
                learningRate: Double, batchSize: Int, template: String?, folder: RunFolder, resume: Bool) {
        self.modelPath = modelPath; self.root = root; self.dataset = dataset; self.selection = selection; self.method = method
        self.epochs = epochs; self.learningRate = learningRate; self.batchSize = batchSize; self.template = template
        self.folder = folder; self.resume = resume
    }

    /// Loads the model and the draw's images and returns the run, restored from `prompt.safetensors`
    /// with `resume`. Writes `config.json` (the resolved settings).
    public func prepare() throws -> TrainingRun {
        let loaded = try openDataset(dataset, root: root)
        let s = try select(loaded.splits, dataset: dataset, options: selection)
        guard !s.train.isEmpty else { throw ExperimentError(.missingData, "the train split of \(dataset.rawValue) holds no images for this selection") }
        let images = AugmentedImages(items: s.train, classNames: s.classNames, source: loaded.images)
        let digest = try modelDigest(modelPath)
        let clip = try CLIPModel.load(path: modelPath).on(backend)
        var optimizer = OptimizerConfig()
        optimizer.learningRate = learningRate
        let config = TrainConfig(method: method, optimizer: optimizer, epochs: epochs, batchSize: batchSize, seed: UInt64(selection.seed),
                                 template: template ?? method.handTemplate(dataset: dataset.rawValue, default: s.template),
                                 precision: precision)
        let tuner = try PromptTuner(model: clip, tokenizer: try CLIPTokenizer(), data: .images(images), config: config,
                                    modelDigest: digest, dataDigest: images.digest)
        let run = try TrainingRun(folder: folder, tuner: tuner, resume: resume ? .require : .refuse)
        try writeJSON(AugmentedTrainingJobConfig(model: modelPath, dataset: dataset.rawValue, root: root.path, shots: selection.shots,
                                                 fewShotSource: s.coopCache ?? "dassl", classNames: s.classNames, train: config,
                                                 images: s.train.count),
                      to: folder.config)
        return run
    }
}

/// `config.json` of a `train --augment per-iteration` run: the settings as resolved.
public struct AugmentedTrainingJobConfig: Codable, Equatable {
    public var model: String
    public var dataset: String
    public var root: String
    public var shots: Int?
    /// CoOp's `split_fewshot` file the draw was read from, or "dassl" (drawn here).
    public var fewShotSource: String
    public var classNames: [String]
    public var train: TrainConfig
    public var images: Int
    public var augment = Augmentation.perIteration

    enum CodingKeys: String, CodingKey {
        case model, dataset, root, shots, fewShotSource = "few_shot_source", classNames = "classnames", train, images, augment
    }
}
