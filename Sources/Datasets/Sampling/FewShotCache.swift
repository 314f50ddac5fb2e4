import Foundation
import TensorIO

/// CoOp's cached few-shot split, `<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.pkl`: a pickle of
/// `{"train": [Datum], "val": [Datum]}` (ImageNet's holds only "train"), where each item is Dassl's
/// `dassl.data.datasets.base_dataset.Datum` with the attributes `_impath` (str, absolute),
/// `_label` (int), `_domain` (int, unused here) and `_classname` (str).
public struct FewShotCache: Sendable, Equatable {
    public var train: [Datum]
    /// nil when the file has no "val" (CoOp's ImageNet).
    public var val: [Datum]?

    public init(train: [Datum], val: [Datum]?) {
        self.train = train
        self.val = val
    }

    /// `shot_{shots}-seed_{seed}.pkl`.
    public static func fileName(shots: Int, seed: Int) -> String { "shot_\(shots)-seed_\(seed).pkl" }

    /// `<datasetDirectory>/split_fewshot/shot_{shots}-seed_{seed}.pkl`.
    public static func url(datasetDirectory: URL, shots: Int, seed: Int) -> URL {
        datasetDirectory.appendingPathComponent("split_fewshot").appendingPathComponent(fileName(shots: shots, seed: seed))
    }

    /// Reads a cache file. Absolute image paths must lie under `imageRoot` (the `image_dir` the file
    /// was written with) and are made relative to it; relative paths are kept as they are.
    /// Throws `SamplingError` naming the file for a missing or unreadable file, a damaged pickle,
    /// or content other than CoOp's.
    public init(contentsOf url: URL, imageRoot: URL) throws {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else {
            throw SamplingError.cacheUnreadable(path: path, reason: "no such file.")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SamplingError.cacheUnreadable(path: path, reason: error.localizedDescription)
        }
        try self.init(pickle: [UInt8](data), source: path, imageRoot: imageRoot)
    }

    /// Decodes the bytes of a cache file; `source` names it in errors. See `init(contentsOf:imageRoot:)`.
    public init(pickle bytes: [UInt8], source: String, imageRoot: URL) throws {
        let root: PickleValue
        do { root = try Unpickler(source: source).load(bytes) } catch {
            throw SamplingError.cacheMalformed(path: source, reason: "the pickle cannot be read: \(error)")
        }
        guard case .dict(let dict) = root else {
            throw SamplingError.cacheMalformed(path: source, reason: "the top-level value is a \(root.typeDescription), not a dict.")
        }
        for entry in dict.entries {
            guard let key = entry.key.string else {
                throw SamplingError.cacheMalformed(path: source, reason: "the dict has a \(entry.key.typeDescription) key; expected only \"train\" and \"val\".")
            }
            guard key == "train" || key == "val" else {
                throw SamplingError.cacheMalformed(path: source, reason: "unexpected key \"\(key)\"; expected only \"train\" and \"val\".")
            }
        }
        guard let train = dict["train"] else {
            throw SamplingError.cacheMalformed(path: source, reason: "the dict has no \"train\" list.")
        }
        let rootPath = Self.normalizedRoot(imageRoot.path)
        self.train = try Self.items(train, name: "train", source: source, root: rootPath)
        self.val = try dict["val"].map { try Self.items($0, name: "val", source: source, root: rootPath) }
    }

    static func normalizedRoot(_ path: String) -> String {
        var p = path
        while p.count > 1, p.hasSuffix("/") { p.removeLast() }
        return p
    }

    static func items(_ value: PickleValue, name: String, source: String, root: String) throws -> [Datum] {
        guard case .list(let list) = value else {
            throw SamplingError.cacheMalformed(path: source, reason: "\"\(name)\" is a \(value.typeDescription), not a list of Datum.")
        }
        return try list.items.enumerated().map { i, item in
            try datum(item, at: "\(name)[\(i)]", source: source, root: root)
        }
    }

    static func datum(_ value: PickleValue, at item: String, source: String, root: String) throws -> Datum {
        guard case .object(let object) = value, object.name == "Datum" else {
            throw SamplingError.cacheMalformed(path: source, reason: "\(item) is a \(value.typeDescription), not a Dassl Datum.")
        }
        func attribute(_ key: String) throws -> PickleValue {
            guard let v = object[attribute: key] else {
                let present = object.attributes.map(\.name).joined(separator: ", ")
                throw SamplingError.cacheMalformed(path: source, reason: "\(item) (\(object.qualifiedName)) has no attribute \(key) (it has: \(present.isEmpty ? "none" : present)).")
            }
            return v
        }
        let impathValue = try attribute("_impath"), labelValue = try attribute("_label"), classValue = try attribute("_classname")
        guard case .string(let impath) = impathValue else {
            throw SamplingError.cacheMalformed(path: source, reason: "\(item)._impath is a \(impathValue.typeDescription), not a str.")
        }
        guard case .int(let label) = labelValue, label >= 0 else {
            throw SamplingError.cacheMalformed(path: source, reason: "\(item)._label is \(labelValue.int.map(String.init) ?? "a " + labelValue.typeDescription), not a non-negative int.")
        }
        guard case .string(let className) = classValue else {
            throw SamplingError.cacheMalformed(path: source, reason: "\(item)._classname is a \(classValue.typeDescription), not a str.")
        }
        return Datum(path: try relativePath(impath, root: root, item: item, source: source), label: label, className: className)
    }

    /// Relative paths, and absolute ones made relative, must stay inside the root (no `..`).
    static func relativePath(_ impath: String, root: String, item: String, source: String) throws -> String {
        guard impath.hasPrefix("/") else {
            guard pathEscape(impath) == nil else {
                throw SamplingError.cachePathOutsideRoot(path: source, item: item, imagePath: impath, imageRoot: root)
            }
            return impath
        }
        let prefix = root == "/" ? "/" : root + "/"
        guard impath.hasPrefix(prefix) else {
            throw SamplingError.cachePathOutsideRoot(path: source, item: item, imagePath: impath, imageRoot: root)
        }
        var rest = Substring(impath.dropFirst(prefix.count))
        while rest.hasPrefix("/") { rest = rest.dropFirst() }
        guard pathEscape(String(rest)) == nil else {
            throw SamplingError.cachePathOutsideRoot(path: source, item: item, imagePath: impath, imageRoot: root)
        }
        return String(rest)
    }
}
