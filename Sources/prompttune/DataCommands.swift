import ArgumentParser
import CLIP
import Datasets
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
    @Option(help: "Shots per class (default: all images).") var shots: Int?
    @Option(help: "Seed of the few-shot draw (Dassl's).") var seed: Int = 1
    @Option(help: "Class-imbalance tau in (0, 1]; the head classes keep --shots images.") var imbalance: Double?
    @Flag(help: "Only the base classes (the first half of the sorted labels), relabelled from 0.") var base = false
    @Flag(help: "Only the novel classes (the second half), relabelled from 0.") var novel = false
    @Flag(name: .customLong("no-coop-cache"), help: "Draw the few-shot images anew even when the dataset folder holds CoOp's cached draw (split_fewshot/shot_K-seed_S.pkl).")
    var noCoopCache = false

    func validate() throws {
        if base && novel { throw ValidationError("--base and --novel exclude each other") }
        if let shots, shots < 1 { throw ValidationError("--shots must be at least 1") }
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
        print(jsonLine(["train": rows(s.train), "val": rows(s.val)]))
    }
}

enum SplitName: String, ExpressibleByArgument, CaseIterable { case train, val, test }

struct FeaturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "features",
        abstract: "Encode a dataset's images once through the frozen image tower into a features file (resumable).")

    @OptionGroup var model: ModelOptions
    @OptionGroup var data: DataOptions
    @Option(help: "Split to encode.") var split: SplitName = .train
    @Option(help: "Views per image: 1 = the test transform; more = that many seeded train augmentations (RandomResizedCrop + flip).")
    var views: Int = 1
    @Option(help: "Encode only the first N images of the selection (quick runs).") var limit: Int?
    @Option(help: "Output file (default: features/<dataset>-<split>[...].safetensors).") var out: String?
    @Option(help: "Threads.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print a JSON summary.") var json = false

    func validate() throws {
        if views < 1 { throw ValidationError("--views must be at least 1") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    var defaultName: String {
        var parts = [data.dataset.rawValue, split.rawValue]
        if data.subset != .all { parts.append(data.subset == .base ? "base" : "novel") }
        if let k = data.shots { parts.append("\(k)shot-seed\(data.seed)") }
        if let t = data.imbalance { parts.append("tau\(t)") }
        if views > 1 { parts.append("\(views)views") }
        if let limit { parts.append("first\(limit)") }
        return "features/" + parts.joined(separator: "-") + ".safetensors"
    }

    func run() throws {
        Compute.threads = threads
        let (loaded, s) = try data.load()
        var items: [Datum]
        switch split { case .train: items = s.train; case .val: items = s.val; case .test: items = s.test }
        if let limit { items = Array(items.prefix(limit)) }
        guard !items.isEmpty else { throw ValidationError("the \(split.rawValue) split of \(data.dataset.rawValue) is empty for this selection") }
        let digest = try modelDigest(model.model)
        let clip = try CLIPModel.load(path: model.model)
        let plan = ExtractionPlan(modelDigest: digest, items: items, transform: views > 1 ? "train" : "test", views: views,
                                  resolution: clip.config.imageResolution, seed: UInt64(data.seed))
        let config = String(decoding: try JSONEncoder().encode(clip.config), as: UTF8.self)
        var provenance = ["dataset": data.dataset.rawValue, "root": data.rootURL.path, "split": split.rawValue,
                          "subset": data.subset.rawValue, "seed": String(data.seed), "model": model.model,
                          "model_config": config, "template": s.template, "created_by": "prompttune features"]
        if let k = data.shots { provenance["shots"] = String(k) }
        if let t = data.imbalance { provenance["imbalance"] = String(t) }
        if let cache = s.coopCache { provenance["coop_cache"] = cache }
        let output = URL(fileURLWithPath: out ?? defaultName)
        let bar = ProgressBar(total: items.count, label: "features \(data.dataset.rawValue)/\(split.rawValue)", unit: "img")
        let result = try extractFeatures(model: clip, plan: plan, items: items, classNames: s.classNames, source: loaded.images,
                                         provenance: provenance, output: output) { done, _ in bar.update(done) }
        if !result.reused { bar.finish() }
        for skip in result.skipped.prefix(10) {
            FileHandle.standardError.write(Data("warning: skipped \(skip.path): \(skip.reason)\n".utf8))
        }
        if result.skipped.count > 10 {
            FileHandle.standardError.write(Data("warning: \(result.skipped.count - 10) more unreadable images skipped\n".utf8))
        }
        let summary: [String: Any] = ["features": output.path, "images": result.features.count, "views": views,
                                      "classes": s.classNames.count, "skipped": result.skipped.count, "reused": result.reused]
        if json { print(jsonLine(summary)) } else {
            printTable(result.reused ? "up to date: \(output.path)" : "wrote \(output.path)", [
                ("images", "\(result.features.count) (\(result.skipped.count) unreadable skipped)"),
                ("views", "\(views) (\(plan.transform) transform)"), ("classes", "\(s.classNames.count)"),
            ])
        }
    }
}
