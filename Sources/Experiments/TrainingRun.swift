import CLIP
import Foundation
import PromptLearning
import TensorCore
import TensorIO

/// What to do with a checkpoint already in the run folder.
public enum ResumePolicy: Sendable {
    /// A checkpoint there is an error (the `train` command without `--resume`).
    case refuse
    /// A checkpoint must be there (`--resume`).
    case require
    /// Continue a compatible checkpoint; start afresh, with a warning, when it is from other settings (grid cells).
    case ifPresent
}

/// Raised between epochs when the caller asked a run to stop (tests, signals): not a failure,
/// the checkpoint of the last epoch is the resume point.
public struct RunInterrupted: Error, CustomStringConvertible {
    public var epochsDone: Int
    public var description: String { "interrupted after epoch \(epochsDone); run again to resume" }
}

/// A prompt-training run in a folder: checkpoint every epoch, resume policy, history.
public final class TrainingRun {
    public let folder: RunFolder
    public let trainer: PromptTrainer
    public private(set) var warnings: [String] = []
    /// True when the run continued a checkpoint.
    public private(set) var resumed = false

    public init(folder: RunFolder, trainer: PromptTrainer, resume: ResumePolicy) throws {
        self.folder = folder
        self.trainer = trainer
        try folder.create()
        let path = folder.checkpoint.path
        let exists = FileManager.default.fileExists(atPath: path)
        switch resume {
        case .refuse:
            if exists { throw ExperimentError("\(path) exists: resume it, or train into another folder") }
        case .require:
            guard exists else { throw ExperimentError("no checkpoint at \(path) to resume; start a new run instead") }
            try trainer.restore(PromptCheckpoint.read(path: path))
            resumed = true
        case .ifPresent:
            if exists {
                do {
                    try trainer.restore(PromptCheckpoint.read(path: path))
                    resumed = true
                } catch {
                    warnings.append("the checkpoint \(path) could not be resumed (\(error)); \(setAside(folder.checkpoint)); training from the start")
                }
            }
        }
        // Every run saves what it starts from: with the trace, another implementation can replay it.
        if !resumed {
            try ParameterCheckpoint.writeParameters(ParameterSet([(ParameterName.textContext, trainer.context)]), to: folder.initial,
                                                    metadata: ["method": trainer.config.method.name, "seed": String(trainer.config.seed)])
        }
    }

    /// Trains to the end: a checkpoint after every epoch, then `history.json`.
    /// `afterEpoch` runs after each checkpoint (NC measures, interruption checks).
    public func run(onStep: (StepReport) -> Void = { _ in }, afterEpoch: (Int) throws -> Void = { _ in }) throws {
        while !trainer.isFinished {
            try trainer.runEpoch(onStep)
            try trainer.checkpoint().write(to: folder.checkpoint)
            try afterEpoch(trainer.epochsDone)
        }
        try writeJSON(["history": trainer.history], to: folder.history)
    }
}
