import Analysis
import Foundation
import PromptLearning

/// The version written into every record.
public enum PromptTuneVersion {
    public static let current = "0.5.0"
}

/// Accuracy of a run on one test set.
public struct EvaluationSummary: Codable, Equatable, Sendable {
    /// "test" (few-shot), "base" / "novel" (base-to-novel), or the target dataset's name.
    public var name: String
    public var dataset: String
    public var classes: Int
    public var count: Int
    public var accuracy: Double
    public var macroF1: Double
    public var perClassAccuracy: [String: Double]
    /// Mean accuracy of the many-, medium- and few-shot training classes (`ShotGroups.rule`);
    /// nil on a set whose classes were not trained on, and in older records.
    public var manyShot: Double?
    public var mediumShot: Double?
    public var fewShot: Double?

    public init(name: String, dataset: String, classes: Int, count: Int, accuracy: Double, macroF1: Double,
                perClassAccuracy: [String: Double]) {
        self.name = name; self.dataset = dataset; self.classes = classes; self.count = count
        self.accuracy = accuracy; self.macroF1 = macroF1; self.perClassAccuracy = perClassAccuracy
    }

    enum CodingKeys: String, CodingKey {
        case name, dataset, classes, count, accuracy, macroF1 = "macro_f1", perClassAccuracy = "per_class_accuracy"
        case manyShot = "many_shot", mediumShot = "medium_shot", fewShot = "few_shot"
    }
}

/// The neural-collapse measures at one epoch, per feature set ("train" and each evaluation's name).
public struct NCPoint: Codable, Equatable, Sendable {
    public var epoch: Int
    public var measures: [String: NeuralCollapseReport]
    public init(epoch: Int, measures: [String: NeuralCollapseReport]) { self.epoch = epoch; self.measures = measures }
}

/// Seconds spent in each phase of a run.
public struct RunTimings: Codable, Equatable, Sendable {
    public var features: Double = 0
    public var training: Double = 0
    public var evaluation: Double = 0
    public var analysis: Double = 0
    public var total: Double = 0
    public init() {}
}

/// What a run produced: one JSON file per cell (`record.json`), read by `prompttune report`.
public struct RunRecord: Codable, Equatable, Sendable {
    public enum Status: String, Codable, Sendable { case ok, failed }

    public var version: String
    public var spec: RunSpec
    public var status: Status
    /// Why a failed cell failed (missing images, a non-finite loss, ...).
    public var error: String?
    /// The headline number: test accuracy (few-shot), HM (base-to-novel), or the mean over the
    /// targets (cross-dataset, domain generalisation).
    public var accuracy: Double?
    /// Macro-F1 of the headline test set (mean over targets where there are several).
    public var macroF1: Double?
    public var evaluations: [EvaluationSummary]
    /// Base-to-novel only.
    public var base: Double?
    public var novel: Double?
    public var hm: Double?
    /// Neural-collapse measures of the final prompt: "train" and each evaluation's name.
    public var nc: [String: NeuralCollapseReport]
    /// The measures over training (every `nc_every` epochs, and at the end).
    public var ncHistory: [NCPoint]
    /// Loss, loss terms and train accuracy per epoch.
    public var history: [EpochRecord]
    public var timings: RunTimings
    /// Digests of the model, the data (`data`: every image and class list the cell read, which with
    /// the model and precision keys the cell; see `CellInputs`), DAPT's prototypes (`prototypes`)
    /// and every features file the run read.
    public var digests: [String: String]
    /// Where the few-shot draw came from: "dassl" (drawn here) or the CoOp cache file used.
    public var fewShotSource: String?
    public var warnings: [String]
    public var finishedAt: String
    /// "bf16" when the frozen towers ran with bf16 products; absent for exact fp32.
    public var precision: String?
    /// The model's file name (the folder's for a Hugging Face directory); its digest is `digests["model"]`.
    public var model: String?
    /// Cross-dataset / domain generalisation: the targets with no evaluation (a method that cannot
    /// classify their classes), so `accuracy` is a mean over fewer targets than the spec names.
    public var targetsMissing: [String]?
    /// DAPT's prototypes: "computed" (from the cell's draw with its model) or the path of DAPT's
    /// `_prototype.pkl` used; their digest is `digests["prototypes"]`.
    public var prototypesSource: String?
    /// Training images per class of the cell's draw (class name -> count; 0 for a class of the
    /// draw without an image).
    public var trainCounts: [String: Int]?
    /// How the evaluations' `many_shot` / `medium_shot` / `few_shot` group the classes.
    public var shotGroupsRule: String?

    public init(spec: RunSpec, status: Status, error: String? = nil) {
        self.version = PromptTuneVersion.current
        self.spec = spec; self.status = status; self.error = error
        self.evaluations = []; self.nc = [:]; self.ncHistory = []; self.history = []
        self.timings = RunTimings(); self.digests = [:]; self.warnings = []
        self.finishedAt = ISO8601DateFormatter().string(from: Date())
    }

    enum CodingKeys: String, CodingKey {
        case version, spec, status, error, accuracy, macroF1 = "macro_f1", evaluations, base, novel, hm, nc
        case ncHistory = "nc_history", history, timings, digests, fewShotSource = "few_shot_source", warnings
        case finishedAt = "finished_at", precision, model, targetsMissing = "targets_missing", prototypesSource = "prototypes_source"
        case trainCounts = "train_counts", shotGroupsRule = "shot_groups_rule"
    }
}

/// Harmonic mean of base and novel accuracy, as the base-to-novel tables report it.
public func harmonicMean(_ b: Double, _ n: Double) -> Double { b + n > 0 ? 2 * b * n / (b + n) : 0 }
