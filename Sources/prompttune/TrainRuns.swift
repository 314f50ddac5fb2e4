import Datasets
import Experiments
import Foundation
import PromptLearning

/// What `train` drives: a run on cached views (`TrainingRun`, `prompt.ptprompt`) or on images
/// augmented at every iteration (`AugmentedTrainingRun`, `prompt.safetensors`).
protocol TrainCommandRun: AnyObject {
    var resumed: Bool { get }
    var checkpoint: URL { get }
    var trace: TraceWriter? { get set }
    var warnings: [String] { get }
    var steps: Int { get }
    var epochsDone: Int { get }
    var stepsPerEpoch: Int { get }
    var history: [EpochRecord] { get }
    func run(onStep: (StepReport) -> Void, afterEpoch: (Int) throws -> Void) throws
}

extension TrainingRun: TrainCommandRun {
    var checkpoint: URL { folder.checkpoint }
    var trace: TraceWriter? { get { trainer.trace } set { trainer.trace = newValue } }
    var warnings: [String] { trainer.warnings }
    var steps: Int { trainer.steps }
    var epochsDone: Int { trainer.epochsDone }
    var stepsPerEpoch: Int { trainer.stepsPerEpoch }
    var history: [EpochRecord] { trainer.history }
}

extension AugmentedTrainingRun: TrainCommandRun {
    var checkpoint: URL { folder.parameterCheckpoint }
    var trace: TraceWriter? { get { tuner.trace } set { tuner.trace = newValue } }
    var warnings: [String] { tuner.warnings }
    var steps: Int { tuner.steps }
    var epochsDone: Int { tuner.epochsDone }
    var stepsPerEpoch: Int { tuner.stepsPerEpoch }
    var history: [EpochRecord] { tuner.history }
}

extension Train {
    /// The run of `method` as the flags ask: on the features file, or on the dataset's images.
    func prepare(_ method: Method) throws -> TrainCommandRun {
        let folder = RunFolder(URL(fileURLWithPath: out))
        switch augment {
        case .views:
            return try TrainingJob(modelPath: model.model, featuresPath: features!, method: method, epochs: epochs, learningRate: lr,
                                   batchSize: batchSize, seed: seed, template: template, folder: folder, resume: resume).prepare()
        case .perIteration:
            let root = URL(fileURLWithPath: self.root ?? ProcessInfo.processInfo.environment["DATA"] ?? FileManager.default.currentDirectoryPath)
            return try AugmentedTrainingJob(modelPath: model.model, root: root, dataset: dataset!,
                                            selection: SelectionOptions(shots: shots, seed: Int(seed)), method: method, epochs: epochs,
                                            learningRate: lr, batchSize: batchSize, template: template, folder: folder,
                                            resume: resume).prepare()
        }
    }
}
