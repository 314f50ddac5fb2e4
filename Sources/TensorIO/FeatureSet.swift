import Foundation
import TensorCore

/// Image features with labels, class names and provenance: what the feature cache writes and the
/// trainer reads. Stored as safetensors: tensor `features` [V, N, D] (V augmented views of N images;
/// V = 1 for test-time features), tensor `labels` [N] (integers held exactly in float32), and
/// metadata `format`, `version`, `classnames` (JSON array) and free-form provenance entries
/// (`model_digest`, `model_config`, `dataset`, `split`, `transform`, `images_digest`, ...).
public struct FeatureSet: Sendable, Equatable {
    public static let formatName = "prompttune.features"
    public static let version = 1

    public var features: Tensor        // V, N, D
    public var labels: [Int]           // N
    public var classNames: [String]    // K
    public var provenance: [String: String]

    public init(features: Tensor, labels: [Int], classNames: [String], provenance: [String: String] = [:]) {
        precondition(features.rank == 3 && features.shape[1] == labels.count,
                     "FeatureSet: features \(features.shape) must be [views, \(labels.count), dim]")
        self.features = features
        self.labels = labels
        self.classNames = classNames
        self.provenance = provenance
    }

    public var views: Int { features.shape[0] }
    public var count: Int { features.shape[1] }
    public var dimension: Int { features.shape[2] }

    /// Features of one view: N, D.
    public func view(_ v: Int) -> Tensor { features.slice(rows: v..<(v + 1)).reshaped([count, dimension]) }

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
            TensorIOError(.corrupt, path: path, "not a PromptTune features file: \(why). Make one with `prompttune features`.")
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

/// A 64-bit FNV-1a digest of a file's bytes (hex), to recognise the same checkpoint or image list
/// again. Not cryptographic: it identifies caches, it does not protect them.
public func contentDigest(path: String) throws -> String {
    let file = try MappedFile(path: path)
    return file.withBytes(offset: 0, length: file.count) { contentDigest($0) } ?? contentDigest(UnsafeRawBufferPointer(start: nil, count: 0))
}

public func contentDigest(_ bytes: UnsafeRawBufferPointer) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return String(format: "%016llx", h)
}
