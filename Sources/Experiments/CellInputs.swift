import Datasets
import Foundation
import PromptLearning
import TensorIO

/// What decides a cell's numbers besides its spec: the model, the frozen towers' precision and the
/// data it reads. A finished record is reused only when all of them are the same.
public struct CellInputs: Equatable, Sendable {
    /// The model's file name (the folder's for a Hugging Face directory), as the record's `model`.
    public var modelName: String
    public var modelDigest: String
    /// "bf16", or nil for exact fp32 (as the record's `precision`).
    public var precision: String?
    /// A digest of every image list and class-name list the cell reads (its few-shot draw, the val
    /// draw of a linear probe, each test set), as the record's `digests["data"]`: a changed split
    /// file, few-shot cache or image folder listing changes it. Image contents are not read.
    public var dataDigest: String

    public init(modelName: String, modelDigest: String, precision: String?, dataDigest: String) {
        self.modelName = modelName; self.modelDigest = modelDigest; self.precision = precision; self.dataDigest = dataDigest
    }

    /// The runs sub-folder of a model and precision: `<file stem>-<12 hex digits of its digest>[-bf16]`.
    public var folderName: String { Self.folderName(modelName: modelName, modelDigest: modelDigest, precision: precision) }

    public static func folderName(modelName: String, modelDigest: String, precision: String?) -> String {
        let stem = (modelName as NSString).deletingPathExtension
        let safe = String(stem.map { $0.isLetter || $0.isNumber || "-_.".contains($0) ? $0 : "_" })
        return "\(safe.isEmpty ? "model" : safe)-\(modelDigest.prefix(12))" + (precision.map { "-\($0)" } ?? "")
    }

    /// Whether `record` was made from exactly these inputs.
    public func match(_ record: RunRecord) -> Bool {
        record.digests["model"] == modelDigest && record.precision == precision && record.digests["data"] == dataDigest
    }
}

/// What a runner checks about cells before and as they run: their inputs (whether a finished
/// record can stand for them) and the datasets they read.
extension ExperimentRunner {
    /// Everything besides `spec` that decides the cell's numbers (reads the datasets' lists).
    public func inputs(_ spec: RunSpec) throws -> CellInputs {
        let dataset = try datasetName(spec.dataset)
        var lists: [(String, FeatureRequest)] = [("train", FeatureRequest(dataset: dataset, split: .train, selection: trainSelection(spec), views: 1))]
        if spec.method == "linear-probe" {
            lists.append(("val", FeatureRequest(dataset: dataset, split: .val, selection: trainSelection(spec), views: 1)))
        }
        for s in try evaluationSets(spec, dataset: dataset) {
            lists.append((s.name, FeatureRequest(dataset: s.dataset, split: .test, selection: SelectionOptions(subset: s.subset), views: 1)))
        }
        var text = ""
        for (name, request) in lists {
            let (items, selection, _) = try store.items(request)
            text += "\(name)\t\(request.dataset.rawValue)\t\(selection.template)\t\(selection.classNames.joined(separator: "|"))\n"
            for d in items { text += "\(d.path)\t\(d.label)\t\(d.className)\n" }
            // DAPT's own prototype pickle beside a cached draw may be used (`cachedPrototypes`): its bytes count too.
            if name == "train", let cache = selection.coopCache, (try? Method.named(spec.method))?.needsPrototypes == true {
                let pkl = DAPTPrototypeFile.path(fewShotCache: cache)
                if FileManager.default.fileExists(atPath: pkl) { text += "prototypes\t\(try contentDigest(path: pkl))\n" }
            }
        }
        return CellInputs(modelName: modelName, modelDigest: store.modelDigest, precision: precision,
                          dataDigest: Data(text.utf8).withUnsafeBytes { contentDigest($0) })
    }

    /// Looks up every dataset the cells read, training sets and targets, before anything runs: the
    /// ones missing (or unreadable) under the root are listed in one `PlanError`.
    public func checkDatasets(_ cells: [RunSpec]) throws {
        var names: [(name: String, trains: Bool)] = []
        for c in cells {
            for (n, trains) in [(c.dataset, true)] + c.targets.map({ ($0, false) }) {
                if let i = names.firstIndex(where: { $0.name == n }) { names[i].trains = names[i].trains || trains } else { names.append((n, trains)) }
            }
        }
        var problems: [String] = []
        for (n, trains) in names {
            guard let d = DatasetName(rawValue: n) else {
                problems.append("\(n): unknown dataset (known: \(DatasetName.allCases.map(\.rawValue).joined(separator: ", ")))")
                continue
            }
            if trains && d.isTestOnly { problems.append("\(n): a test set only; it can be a target of domain generalisation, not a training dataset") }
            do { _ = try store.dataset(d) } catch { problems.append("\(n): \(error)") }
        }
        guard !problems.isEmpty else { return }
        throw PlanError("""
            \(problems.count) of the grid's \(names.count) datasets cannot be used (data root \(store.root.path)); nothing ran:
              \(problems.joined(separator: "\n  "))
            Put them in CoOp's layout under the root (`prompttune datasets` lists what each needs), give another --root, or leave them out of the datasets and targets.
            """)
    }
}
