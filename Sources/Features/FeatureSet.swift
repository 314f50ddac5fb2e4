import Foundation
import TensorCore
import TensorIO

/// Image features with labels, class names and provenance: what the feature cache writes and the
/// trainer reads. Stored as safetensors: tensor `features` [V, N, D] (V augmented views of N images;
/// V = 1 for test-time features), tensor `labels` [N] (integers held exactly in float32), and
/// metadata `format`, `version`, `classnames` (JSON array) and free-form provenance entries
/// (`model_digest`, `model_config`, `dataset`, `split`, `transform`, `images_digest`, ...).
public struct FeatureSet: Sendable, Equatable {
    public static let formatName = "prompttune.features"
    public static let version = 1

    /// The features, labels and class names the trainer and the analysis read.
    public var labeled: LabeledFeatures
    public var provenance: [String: String]

    public init(features: Tensor, labels: [Int], classNames: [String], provenance: [String: String] = [:]) {
        self.labeled = LabeledFeatures(features: features, labels: labels, classNames: classNames)
        self.provenance = provenance
    }

    public var features: Tensor { labeled.features }
    public var labels: [Int] { labeled.labels }
    public var classNames: [String] {
        get { labeled.classNames }
        set { labeled.classNames = newValue }
    }
    public var views: Int { labeled.views }
    public var count: Int { labeled.count }
    public var dimension: Int { labeled.dimension }

    /// Features of one view: N, D.
    public func view(_ v: Int) -> Tensor { labeled.view(v) }

    public func write(to url: URL) throws {
        guard labels.allSatisfy({ $0 >= 0 && $0 < classNames.count && $0 < (1 << 24) }) else {
            throw TensorIOError(.unsupported, path: url.path, "labels must lie in 0..<\(classNames.count) (the class-name count).")
        }
        var meta = provenance
        meta["format"] = Self.formatName
        meta["version"] = String(Self.version)
        meta["classnames"] = String(decoding: try JSONEncoder().encode(classNames), as: UTF8.self)
        try Safetensors.write(tensors: ["features": features, "labels": Tensor(shape: [labels.count], data: labels.map(Float.init))],
                              metadata: meta, to: url)
    }

    public static func read(path: String) throws -> FeatureSet {
        let (tensors, meta) = try Safetensors.read(path: path)
        func fail(_ why: String) -> TensorIOError {
            TensorIOError(.corrupt, path: path, "not a PromptTune features file: \(why). Features files are written by feature extraction (FeatureSet.write).")
        }
        guard meta["format"] == formatName else { throw fail("metadata 'format' is \(meta["format"].map { "'\($0)'" } ?? "missing")") }
        guard let v = meta["version"].flatMap(Int.init), v <= version else {
            throw fail("version \(meta["version"] ?? "missing") is newer than this PromptTune reads (\(version))")
        }
        guard let names = meta["classnames"].flatMap({ try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }) else {
            throw fail("metadata 'classnames' is missing or not a JSON array of strings")
        }
        guard let features = tensors["features"], features.rank == 3 else { throw fail("tensor 'features' [views, N, dim] is missing") }
        guard let labels = tensors["labels"], labels.shape == [features.shape[1]] else {
            throw fail("tensor 'labels' must have shape [\(features.shape[1])]")
        }
        let ints = labels.data.map { Int($0) }
        guard zip(ints, labels.data).allSatisfy({ Float($0) == $1 }), ints.allSatisfy({ $0 >= 0 && $0 < names.count }) else {
            throw fail("labels must be integers in 0..<\(names.count)")
        }
        var provenance = meta
        for k in ["format", "version", "classnames"] { provenance[k] = nil }
        return FeatureSet(features: features, labels: ints, classNames: names, provenance: provenance)
    }
}
