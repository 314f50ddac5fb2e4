import ArgumentParser
import CLIP
import Datasets
import Experiments
import Features
import Foundation
import TensorCore
import TensorIO

extension ClassSubset: ExpressibleByArgument {}

/// Which data: the dataset, its root and the selection (few-shot, imbalance, base/novel).
struct DataOptions: ParsableArguments {
    @Option(help: "Dataset (see `prompttune datasets`).") var dataset: DatasetName
    @Option(help: "Folder holding the datasets in CoOp's layout (default: $DATA, else the current folder).")
    var root: String?
    // `.unconditional`: "--shots -3" reaches validate() (and a clear message) instead of reading as a flag.
    @Option(parsing: .unconditional, help: "Shots per class (default: all images).") var shots: Int?
    @Option(parsing: .unconditional, help: "Seed of the few-shot draw (Dassl's; 0 or more).") var seed: Int = 1
    @Option(parsing: .unconditional, help: "Class-imbalance tau in (0, 1]; the head classes keep --shots images.") var imbalance: Double?
    @Flag(help: "Only the base classes (the first half of the sorted labels), relabelled from 0.") var base = false
    @Flag(help: "Only the novel classes (the second half), relabelled from 0.") var novel = false
    @Flag(name: .customLong("no-coop-cache"), help: "Draw the few-shot images anew even when the dataset folder holds CoOp's cached draw (split_fewshot/shot_K-seed_S.pkl).")
    var noCoopCache = false

    func validate() throws {
        if base && novel { throw ValidationError("--base and --novel exclude each other") }
        if let shots { try OptionLimits.range("--shots", shots, 1...OptionLimits.maxShots) }
        try OptionLimits.seed("--seed", seed)
        if let t = imbalance {
            if !(t > 0 && t <= 1) { throw ValidationError("--imbalance must lie in (0, 1] (got \(t))") }
            if shots == nil { throw ValidationError("--imbalance needs --shots (the head classes keep that many images)") }
        }
    }

    var rootURL: URL {
        URL(fileURLWithPath: root ?? ProcessInfo.processInfo.environment["DATA"] ?? FileManager.default.currentDirectoryPath)
    }
    var subset: ClassSubset { base ? .base : novel ? .novel : .all }
    var selection: SelectionOptions {
        SelectionOptions(shots: shots, seed: seed, imbalance: imbalance, subset: subset, useCoOpCache: !noCoopCache)
    }

    func load() throws -> (LoadedDataset, Selection) {
        let loaded = try openDataset(dataset, root: rootURL)
        let s = try select(loaded.splits, dataset: dataset, options: selection)
        if let cache = s.coopCache { FileHandle.standardError.write(Data("using CoOp's cached draw \(cache)\n".utf8)) }
        return (loaded, s)
    }
}

struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The images a run uses, in the order Dassl produces them (few-shot, imbalance, base/novel).")

    @OptionGroup var data: DataOptions
    @Flag(help: "Print JSON (the only output format; kept for scripts that pass it).") var json = false

    func run() throws {
        let (_, s) = try data.load()
        func rows(_ list: [Datum]) -> [[Any]] { list.map { [$0.path, $0.label, $0.className] } }
        print(try jsonText(["train": rows(s.train), "val": rows(s.val)]))
    }
}

extension SplitKind: ExpressibleByArgument {}

struct FeaturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "features",
        abstract: "Encode a dataset's images once through the frozen image tower into a features file (resumable).")

    @OptionGroup var model: ModelOptions
    @OptionGroup var data: DataOptions
    @Option(help: "Split to encode.") var split: SplitKind = .train
    @Option(parsing: .unconditional, help: "Views per image: 1 = the test transform; more = that many seeded train augmentations (RandomResizedCrop + flip).")
    var views: Int = 1
    @Option(parsing: .unconditional, help: "Encode only the first N images of the selection (quick runs).") var limit: Int?
    @Option(help: "Output file (default: features/<dataset>-<split>[...].safetensors).") var out: String?
    @Option(parsing: .unconditional, help: "Threads (1...\(OptionLimits.maxThreads)).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Inputs of the image tower's matrix products (layers and attention): fp32 (exact) or bf16 (fp32 accumulation; needs AVX-512 BF16 or AMX).")
    var precision: Precision = .fp32
    @OptionGroup var imageOptions: ImageOptions
    @Flag(help: "Print a JSON summary.") var json = false

    func validate() throws {
        try OptionLimits.range("--views", views, 1...OptionLimits.maxViews)
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1 (got \(limit))") }
        try OptionLimits.threads(threads)
        if let out {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: out, isDirectory: &isDir), isDir.boolValue {
                throw ValidationError("--out \(out) is a folder; give a file path, e.g. \(out)/features.safetensors")
            }
        }
    }

    func run() throws {
        Compute.threads = threads
        let backend = try computeBackend(precision)
        try imageOptions.apply()
        let request = FeatureRequest(dataset: data.dataset, split: split, selection: data.selection, views: views, limit: limit)
        let store = FeatureStore(model: try CLIPModel.load(path: model.model).on(backend), modelPath: model.model,
                                 modelDigest: try modelDigest(model.model), root: data.rootURL,
                                 directory: URL(fileURLWithPath: "features"))
        let bar = ProgressBar(total: 1, label: "features \(data.dataset.rawValue)/\(split.rawValue)", unit: "img")
        let output = out.map { URL(fileURLWithPath: $0) }
        let folder = output?.deletingLastPathComponent() ?? store.directory
        let stored = try removingEmptyFolderOnFailure(folder) {
            try store.features(request, output: output) { done, total in
                bar.total = total
                bar.update(done)
            }
        }
        if !stored.reused { bar.finish() }
        if let cache = stored.coopCache { FileHandle.standardError.write(Data("used CoOp's cached draw \(cache)\n".utf8)) }
        for skip in stored.skipped.prefix(10) {
            FileHandle.standardError.write(Data("warning: skipped \(skip.path): \(skip.reason)\n".utf8))
        }
        if stored.skipped.count > 10 {
            FileHandle.standardError.write(Data("warning: \(stored.skipped.count - 10) more unreadable images skipped\n".utf8))
        }
        let summary: [String: Any] = ["features": stored.url.path, "images": stored.set.count, "views": views,
                                      "classes": stored.classNames.count, "skipped": stored.skipped.count, "reused": stored.reused]
        if json { print(try jsonText(summary)) } else {
            printTable(stored.reused ? "up to date: \(stored.url.path)" : "wrote \(stored.url.path)", [
                ("images", "\(stored.set.count) (\(stored.skipped.count) unreadable skipped)"),
                ("views", "\(views) (\(views > 1 ? "train" : "test") transform)"), ("classes", "\(stored.classNames.count)"),
            ])
        }
    }
}
