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

    /// Most class names a features file may list.
    public static let maxClasses = 100_000

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
            throw FileError(.unsupported, path: url.path, "labels must lie in 0..<\(classNames.count) (the class-name count).")
        }
        if let bad = features.data.firstIndex(where: { !$0.isFinite }) {
            throw FileError(.nonFinite, path: url.path, "feature \(Self.describeIndex(bad, shape: features.shape)) is \(features.data[bad]); "
                + "the image tower produced non-finite features, so the model checkpoint probably holds non-finite weights. Nothing was written.")
        }
        var meta = provenance
        meta["format"] = Self.formatName
        meta["version"] = String(Self.version)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        meta["classnames"] = String(decoding: try encoder.encode(classNames), as: UTF8.self)
        try Safetensors.write(tensors: ["features": features, "labels": Tensor(shape: [labels.count], data: labels.map(Float.init))],
                              metadata: meta, to: url)
    }

    /// Reads and validates a features file: format and version, class names, shapes (views, images
    /// and dimension at least 1, labels one per image), every label an integer in range and every
    /// feature finite. Anything else is a `FileError` naming the file.
    public static func read(path: String) throws -> FeatureSet {
        let (tensors, meta) = try Safetensors.read(path: path)
        func fail(_ kind: FileError.Kind, _ why: String) -> FileError {
            FileError(kind, path: path, kind == .wrongFormat
                ? "not a PromptTune features file: \(why). Features files are written by feature extraction (FeatureSet.write)."
                : "\(why). The file is damaged or was not written by PromptTune: encode the features again.")
        }
        guard meta["format"] == formatName else { throw fail(.wrongFormat, "metadata 'format' is \(meta["format"].map { "'\($0.prefix(80))'" } ?? "missing")") }
        guard let v = meta["version"].flatMap(Int.init), v >= 1 else {
            throw fail(.wrongFormat, "metadata 'version' is \(meta["version"].map { "'\($0.prefix(80))'" } ?? "missing"), not a positive integer")
        }
        guard v <= version else {
            throw FileError(.newerVersion, path: path, "format version \(v) is newer than this PromptTune reads (\(version)); upgrade PromptTune")
        }
        guard let names = meta["classnames"].flatMap({ try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }) else {
            throw fail(.wrongFormat, "metadata 'classnames' is missing or not a JSON array of strings")
        }
        guard !names.isEmpty else { throw fail(.badShape, "metadata 'classnames' lists no class") }
        // Every class costs a text-tower forward and a classifier row wherever the file is used: a
        // file naming 1,000,000 classes made `eval` allocate 6 GB and die after a minute.
        guard names.count <= FeatureSet.maxClasses else {
            throw fail(.badShape, "metadata 'classnames' lists \(names.count) classes; at most \(FeatureSet.maxClasses) are supported (ImageNet-21k has 21,841); the file is damaged or not meant for classification")
        }
        guard let features = tensors["features"], features.rank == 3 else {
            throw fail(.badShape, "tensor 'features' [views, N, dim] is missing or has shape \(tensors["features"]?.shape.description ?? "-")")
        }
        guard features.shape.allSatisfy({ $0 >= 1 }) else {
            throw fail(.badShape, "tensor 'features' has shape \(features.shape); views, images and dimension must each be at least 1")
        }
        guard let labels = tensors["labels"], labels.shape == [features.shape[1]] else {
            throw fail(.badShape, "tensor 'labels' must have shape [\(features.shape[1])] (one per image), found \(tensors["labels"]?.shape.description ?? "none")")
        }
        var ints: [Int] = []
        ints.reserveCapacity(labels.count)
        for (i, x) in labels.data.enumerated() {
            // Checked as a float first: Int(x) traps on NaN, infinities and values beyond Int's range.
            guard x.isFinite, x.rounded() == x, x >= 0, x < Float(names.count) else {
                throw fail(.badLabel, "label \(i) is \(x); labels must be integers in 0..<\(names.count) (the class-name count)")
            }
            ints.append(Int(x))
        }
        if let bad = features.data.firstIndex(where: { !$0.isFinite }) {
            throw fail(.nonFinite, "tensor 'features' holds a non-finite value (\(features.data[bad]) at \(describeIndex(bad, shape: features.shape)))")
        }
        var provenance = meta
        for k in ["format", "version", "classnames"] { provenance[k] = nil }
        return FeatureSet(features: features, labels: ints, classNames: names, provenance: provenance)
    }

    /// "view v, image n, component c" of flat index `i` in a [V, N, D] tensor.
    static func describeIndex(_ i: Int, shape: [Int]) -> String {
        guard shape.count == 3, shape[1] > 0, shape[2] > 0 else { return "index \(i)" }
        let (n, d) = (shape[1], shape[2])
        return "view \(i / (n * d)), image \(i / d % n), component \(i % d)"
    }
}
