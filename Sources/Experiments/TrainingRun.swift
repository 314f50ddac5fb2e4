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

/// A `PromptTuner` run in a folder: `prompt.safetensors` after every epoch, the resume policy,
/// `initial.safetensors` and `history.json`. A folder of an earlier version, whose text-prompt runs
/// checkpointed `prompt.ptprompt`, resumes from that file (bit for bit: the trainer's state is the
/// same), and the first new checkpoint replaces it.
public final class TrainingRun {
    public let folder: RunFolder
    public let tuner: PromptTuner
    /// True when the run continued a checkpoint.
    public private(set) var resumed = false
    /// Why a checkpoint found under `.ifPresent` was set aside instead of resumed.
    public private(set) var warnings: [String] = []

    public init(folder: RunFolder, tuner: PromptTuner, resume: ResumePolicy) throws {
        self.folder = folder
        self.tuner = tuner
        try folder.create()
        let fm = FileManager.default
        let found = [folder.checkpoint, folder.legacyCheckpoint].first { fm.fileExists(atPath: $0.path) }
        switch resume {
        case .refuse:
            if let found { throw ExperimentError(.outputExists, "\(found.path) exists: resume it, or train into another folder") }
        case .require:
            guard let found else { throw ExperimentError(.noCheckpoint, "no checkpoint at \(folder.checkpoint.path) to resume; start a new run instead") }
            try tuner.restore(ParameterCheckpoint.read(path: found.path))
            resumed = true
        case .ifPresent:
            if let found {
                do {
                    try tuner.restore(ParameterCheckpoint.read(path: found.path))
                    resumed = true
                } catch {
                    warnings.append("the checkpoint \(found.path) could not be resumed (\(error)); \(setAside(found)); training from the start")
                }
            }
        }
        if !resumed {
            try ParameterCheckpoint.writeParameters(tuner.initialParameters, to: folder.initial,
                                                    metadata: ["method": tuner.config.method.name, "seed": String(tuner.config.seed)])
        }
    }

    /// The checkpoint a finished or interrupted run leaves.
    public var checkpoint: URL { folder.checkpoint }

    /// Trains to the end: a checkpoint after every epoch, then `history.json`.
    /// `afterEpoch` runs after each checkpoint (NC measures, interruption checks).
    public func run(onStep: (StepReport) -> Void = { _ in }, afterEpoch: (Int) throws -> Void = { _ in }) throws {
        while !tuner.isFinished {
            try tuner.runEpoch(onStep)
            try tuner.checkpoint().write(to: folder.checkpoint)
            try? FileManager.default.removeItem(at: folder.legacyCheckpoint)
            try afterEpoch(tuner.epochsDone)
        }
        try writeJSON(["history": tuner.history], to: folder.history)
    }
}
