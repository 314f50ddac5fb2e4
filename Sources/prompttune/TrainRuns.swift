import Datasets
import Experiments
import Foundation
import PromptLearning

extension Train {
    /// The run of `method` as the flags ask: on the features file, or on the dataset's images.
    func prepare(_ method: Method) throws -> TrainingRun {
        let folder = RunFolder(URL(fileURLWithPath: out))
        switch augment {
        case .views:
            var job = TrainingJob(modelPath: model.model, featuresPath: features!, method: method, epochs: epochs, learningRate: lr,
                                  batchSize: batchSize, seed: seed, template: template, folder: folder, resume: resume)
            job.precision = precision.training
            job.backend = try computeBackend(precision.compute)
            return try job.prepare()
        case .perIteration:
            let root = URL(fileURLWithPath: self.root ?? ProcessInfo.processInfo.environment["DATA"] ?? FileManager.default.currentDirectoryPath)
            var job = AugmentedTrainingJob(modelPath: model.model, root: root, dataset: dataset!,
                                           selection: SelectionOptions(shots: shots, seed: Int(seed)), method: method, epochs: epochs,
                                           learningRate: lr, batchSize: batchSize, template: template, folder: folder, resume: resume)
            job.precision = precision.training
            job.backend = try computeBackend(precision.compute)
            return try job.prepare()
        }
    }
}
