import CLIP
import Datasets
import Features
import Foundation
import TensorIO

/// A split of a dataset.
public enum SplitKind: String, Codable, CaseIterable, Sendable { case train, val, test }

/// One features file: which images (dataset, split, selection) and how many views.
/// Test-time features (views = 1) use the test transform; more views are seeded train augmentations.
public struct FeatureRequest: Equatable, Sendable {
    public var dataset: DatasetName
    public var split: SplitKind
    public var selection: SelectionOptions
    public var views: Int
    /// Encode only the first N images of the selection (quick runs).
    public var limit: Int?

    public init(dataset: DatasetName, split: SplitKind, selection: SelectionOptions, views: Int, limit: Int? = nil) {
        self.dataset = dataset; self.split = split; self.selection = selection; self.views = views; self.limit = limit
    }

    /// The file name the cache and `prompttune features` use: every part that changes the numbers.
    /// The test split does not depend on the few-shot draw, so its name leaves shots and seed out.
    public var fileName: String {
        var parts = [dataset.rawValue, split.rawValue]
        if selection.subset != .all { parts.append(selection.subset.rawValue) }
        if split != .test, let k = selection.shots { parts.append("\(k)shot-seed\(selection.seed)") }
        if split != .test, let t = selection.imbalance {
            parts.append((selection.imbalanceProfile == .candle ? "candle" : "tau") + formatNumber(t))
        }
        if views > 1 { parts.append("\(views)views") }
        if let limit { parts.append("first\(limit)") }
        return parts.joined(separator: "-") + ".safetensors"
    }

    /// The request's identity within a grid whose cells are seeded `seed`: its file name, and the
    /// seed where the views are drawn with it (the test transform draws nothing: one file for every seed).
    public func key(seed: Int) -> String { fileName + (views > 1 ? "#\(seed)" : "") }
}

/// A features file ready to use.
public struct StoredFeatures {
    public var set: FeatureSet
    public var url: URL
    public var digest: String
    /// The class names of the selection, in label order.
    public var classNames: [String]
    public var template: String
    public var skipped: [SkippedImage]
    public var reused: Bool
    /// CoOp's cache file the few-shot draw was read from, if any.
    public var coopCache: String?
}

/// Encodes each (model, dataset, split, selection, views) once and shares the file with every
/// method and seed that needs it. Files are resumable and plan-checked (`extractFeatures`), and
/// locked while they are made, so cells running in parallel wait for each other instead of
/// encoding twice.
public final class FeatureStore {
    public let model: CLIPModel
    public let modelPath: String
    public let modelDigest: String
    public let root: URL
    public let directory: URL
    private var datasets: [DatasetName: LoadedDataset] = [:]

    public init(model: CLIPModel, modelPath: String, modelDigest: String, root: URL, directory: URL) {
        self.model = model; self.modelPath = modelPath; self.modelDigest = modelDigest
        self.root = root; self.directory = directory
    }

    public func dataset(_ name: DatasetName) throws -> LoadedDataset {
        if let d = datasets[name] { return d }
        let d = try openDataset(name, root: root)
        datasets[name] = d
        return d
    }

    /// Where the cache keeps the features of `r`.
    public func url(for r: FeatureRequest) -> URL { directory.appendingPathComponent(r.fileName) }

    /// Whether the cache holds the features of `r` (a file is there only once made whole).
    public func isCached(_ r: FeatureRequest) -> Bool { FileManager.default.fileExists(atPath: url(for: r).path) }

    /// The images of a request, with the selection's class names and template.
    public func items(_ r: FeatureRequest) throws -> (items: [Datum], selection: Selection, loaded: LoadedDataset) {
        let loaded = try dataset(r.dataset)
        let s = try select(loaded.splits, dataset: r.dataset, options: r.selection)
        var items: [Datum]
        switch r.split { case .train: items = s.train; case .val: items = s.val; case .test: items = s.test }
        if let limit = r.limit { items = Array(items.prefix(limit)) }
        return (items, s, loaded)
    }

    /// The features of `r`, encoded now or read from the cache. `output` replaces the cache's path;
    /// `seed` seeds the augmented views (default: the selection's seed).
    public func features(_ r: FeatureRequest, output: URL? = nil, seed: Int? = nil,
                         progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }) throws -> StoredFeatures {
        let (items, s, loaded) = try items(r)
        guard !items.isEmpty else {
            throw ExperimentError(.missingData, "the \(r.split.rawValue) split of \(r.dataset.rawValue) holds no images for this selection (shots \(r.selection.shots.map(String.init) ?? "all"), classes \(r.selection.subset.rawValue))")
        }
        let url = output ?? self.url(for: r)
        // The test transform draws nothing: its files carry seed 0, so every seed shares them.
        let viewSeed = r.views > 1 ? UInt64(seed ?? r.selection.seed) : 0
        let plan = ExtractionPlan(modelDigest: modelDigest, items: items, transform: r.views > 1 ? "train" : "test", views: r.views,
                                  resolution: model.config.imageResolution, seed: viewSeed, precision: model.backend.precision)
        var provenance = ["dataset": r.dataset.rawValue, "root": root.path, "split": r.split.rawValue,
                          "subset": r.selection.subset.rawValue, "seed": String(r.selection.seed), "model": modelPath,
                          "model_config": String(decoding: try encodeJSON(model.config, pretty: false), as: UTF8.self),
                          "template": s.template, "created_by": "prompttune \(PromptTuneVersion.current)"]
        if let k = r.selection.shots { provenance["shots"] = String(k) }
        if let t = r.selection.imbalance { provenance["imbalance"] = String(t) }
        if let cache = s.coopCache { provenance["coop_cache"] = cache }
        let result = try withFileLock(url) {
            // The cache's file of this name made from another image list (a split file that changed
            // since) is stale: it is made anew (a file given as `output` is the caller's, and refused).
            if output == nil, FileManager.default.fileExists(atPath: url.path),
               let made = try? SafetensorsFile(path: url.path).metadata["plan"], made != plan.asJSON {
                try FileManager.default.removeItem(at: url)
                try? FileManager.default.removeItem(at: URL(fileURLWithPath: url.path + ".partial"))
            }
            return try extractFeatures(model: model, plan: plan, items: items, classNames: s.classNames, source: loaded.images,
                                provenance: provenance, output: url, progress: progress)
        }
        return StoredFeatures(set: result.features, url: url, digest: try contentDigest(path: url.path), classNames: s.classNames,
                              template: s.template, skipped: result.skipped, reused: result.reused, coopCache: s.coopCache)
    }
}
