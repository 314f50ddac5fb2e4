import Foundation

/// Reads CoOp's `classnames.txt`: `<wnid> <class name>` per line, in file order (CoOp's
/// `ImageNet.read_classnames`). Blank lines are skipped. A wnid listed twice is refused with both
/// line numbers (CoOp would keep the last name, silently; which one is meant cannot be told).
public func readImageNetClassNames(_ file: URL) throws -> [(wnid: String, name: String)] {
    try parseImageNetClassNames(DatasetFiles.readLines(file), file: file)
}

/// ``readImageNetClassNames(_:)`` on the `lines` of `file`.
func parseImageNetClassNames(_ lines: [String], file: URL) throws -> [(wnid: String, name: String)] {
    var out: [(wnid: String, name: String)] = []
    var lineOf: [String: Int] = [:]
    for (i, raw) in lines.enumerated() {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty { continue }
        let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): '\(raw)' is not '<wnid> <class name>'")
        }
        let wnid = String(parts[0])
        if let first = lineOf[wnid] {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): wnid \(wnid) is listed again (first at line \(first)); each wnid must appear once. Remove one of the two lines (CoOp's classnames.txt lists each of the 1000 wnids once)")
        }
        lineOf[wnid] = i + 1
        out.append((wnid, String(parts[1])))
    }
    if out.isEmpty { throw DatasetError(.malformedFile, "\(file.path) lists no classes; expected '<wnid> <class name>' per line") }
    return out
}

func classNamesFile(_ name: DatasetName, dir: URL) throws -> [(wnid: String, name: String)] {
    let file = dir.appendingPathComponent("classnames.txt")
    guard DatasetFiles.isFile(file) else {
        throw DatasetError(.missingFile, "missing \(file.path); \(DatasetError.layoutNote(name, dir: dir)). \(name.downloadHint!)")
    }
    return try readImageNetClassNames(file)
}

/// The images of class folders `folders` (relative to `imageRoot`), labelled by position.
private func listClassFolders(_ folders: [(folder: String, className: String)], in base: String,
                              imageRoot: URL) throws -> [Datum] {
    var items: [Datum] = []
    for (label, entry) in folders.enumerated() {
        let rel = base.isEmpty ? entry.folder : base + "/" + entry.folder
        for file in try DatasetFiles.listFiles(imageRoot.appendingPathComponent(rel)) {
            items.append(Datum(path: rel + "/" + file, label: label, className: entry.className))
        }
    }
    return items
}

// MARK: - ImageNet

/// ImageNet as CoOp reads it: `images/train/<wnid>/` for train, `images/val/<wnid>/` for test, the
/// test set doubling as val ("follow standard practice to perform evaluation on the val set"). Labels
/// are positions in the sorted folder list; names come from `classnames.txt`. Files within a class
/// are sorted by name. CoOp keeps `os.listdir` order and caches it in `imagenet/preprocessed.pkl`;
/// that file is not read (through TensorIO's generic unpickler its 1.3 million Dassl `Datum`s take
/// ~15 s and ~2.9 GB), so a few-shot draw at a seed CoOp has not cached (`split_fewshot/`) picks
/// other images than CoOp did on the machine that wrote it. Only one of `train/` and `val/` may
/// exist (e.g. val alone for zero-shot evaluation); the other split is then empty.
func readImageNet(dir: URL, imageRoot: URL) throws -> DatasetSplits {
    let name = DatasetName.imageNet
    let names = Dictionary(uniqueKeysWithValues: try classNamesFile(name, dir: dir).map { ($0.wnid, $0.name) })
    let trainDir = imageRoot.appendingPathComponent("train"), valDir = imageRoot.appendingPathComponent("val")
    let trainFolders = DatasetFiles.isDirectory(trainDir) ? try DatasetFiles.listFolders(trainDir) : nil
    let valFolders = DatasetFiles.isDirectory(valDir) ? try DatasetFiles.listFolders(valDir) : nil
    guard let folders = trainFolders ?? valFolders, !folders.isEmpty else {
        throw DatasetError(.missingFolder, "no class folders in \(trainDir.path) or \(valDir.path); \(DatasetError.layoutNote(name, dir: dir))")
    }
    if let t = trainFolders, let v = valFolders, t != v {
        let onlyTrain = Set(t).subtracting(v).sorted(), onlyVal = Set(v).subtracting(t).sorted()
        throw DatasetError(.inconsistent, "\(trainDir.path) has \(t.count) class folders and \(valDir.path) \(v.count); they must be the same (CoOp labels each by its sorted position). Only in train: \(onlyTrain.prefix(5).joined(separator: ", "))\(onlyTrain.isEmpty ? "none" : ""); only in val: \(onlyVal.prefix(5).joined(separator: ", "))\(onlyVal.isEmpty ? "none" : "")")
    }
    let classes = try folders.map { folder -> (folder: String, className: String) in
        guard let n = names[folder] else {
            throw DatasetError(.inconsistent, "class folder '\(folder)' of \(imageRoot.path) is not in \(dir.appendingPathComponent("classnames.txt").path)")
        }
        return (folder, n)
    }
    let train = trainFolders == nil ? [] : try listClassFolders(classes, in: "train", imageRoot: imageRoot)
    let test = valFolders == nil ? [] : try listClassFolders(classes, in: "val", imageRoot: imageRoot)
    return DatasetSplits(name: name.displayName, imageRoot: imageRoot, train: train, val: test, test: test,
                         classNames: classes.map(\.className), template: name.template)
}

// MARK: - ImageNet variants

/// ImageNetV2 / -Sketch / -A / -R as CoOp reads them (test sets only: CoOp passes the same list as
/// train_x and test; here train and val are empty). V2's folders are `0`...`999`, labelled by
/// number and named by `classnames.txt` line order; the others have `<wnid>` folders, labelled by
/// sorted position (200 for A and R) and named by `classnames.txt`. Each class's ImageNet label
/// (its wnid's position among the sorted wnids of `classnames.txt`, a copy of ImageNet's) is
/// recorded in ``DatasetSplits/imageNetClasses`` for base/novel selection.
func readImageNetVariant(_ name: DatasetName, dir: URL, imageRoot: URL) throws -> DatasetSplits {
    let table = try classNamesFile(name, dir: dir)
    let classes: [(folder: String, wnid: String, className: String)]
    if name == .imageNetV2 {
        classes = table.enumerated().map { (String($0.offset), $0.element.wnid, $0.element.name) }
        let absent = classes.filter { !DatasetFiles.isDirectory(imageRoot.appendingPathComponent($0.folder)) }.map(\.folder)
        if !absent.isEmpty {
            throw DatasetError(.missingFolder, "\(imageRoot.path) lacks \(absent.count) of the \(classes.count) class folders 0...\(classes.count - 1) (first: \(absent.prefix(5).joined(separator: ", "))); \(DatasetError.layoutNote(name, dir: dir))")
        }
    } else {
        let names = Dictionary(uniqueKeysWithValues: table.map { ($0.wnid, $0.name) })
        let folders = try DatasetFiles.listFolders(imageRoot)
        guard !folders.isEmpty else {
            throw DatasetError(.missingFolder, "no class folders in \(imageRoot.path); \(DatasetError.layoutNote(name, dir: dir))")
        }
        classes = try folders.map { folder in
            guard let n = names[folder] else {
                throw DatasetError(.inconsistent, "class folder '\(folder)' of \(imageRoot.path) is not in \(dir.appendingPathComponent("classnames.txt").path) (it should be a copy of imagenet/classnames.txt)")
            }
            return (folder, folder, n)
        }
    }
    let test = try listClassFolders(classes.map { ($0.folder, $0.className) }, in: "", imageRoot: imageRoot)
    let sortedWnids = table.map(\.wnid).sorted(by: DatasetFiles.pythonOrder)
    let imageNetLabel = Dictionary(uniqueKeysWithValues: sortedWnids.enumerated().map { ($1, $0) })
    return DatasetSplits(name: name.displayName, imageRoot: imageRoot, train: [], val: [], test: test,
                         classNames: classes.map(\.className), template: name.template,
                         imageNetClasses: ImageNetClassMap(count: table.count, labels: classes.map { imageNetLabel[$0.wnid]! }))
}

// MARK: - FGVCAircraft

/// FGVCAircraft as CoOp reads it: class names in `variants.txt` order; `images_variant_<split>.txt`
/// lines `<image id> <variant name>`, the image being `images/<id>.jpg`.
func readFGVCAircraft(dir: URL, imageRoot: URL) throws -> DatasetSplits {
    let name = DatasetName.fgvcAircraft
    let variantsFile = dir.appendingPathComponent("variants.txt")
    func missing(_ file: URL) -> DatasetError {
        DatasetError(.missingFile, "missing \(file.path); \(DatasetError.layoutNote(name, dir: dir)). \(name.downloadHint!)")
    }
    guard DatasetFiles.isFile(variantsFile) else { throw missing(variantsFile) }
    let classNames = try parseFGVCVariants(DatasetFiles.readLines(variantsFile), file: variantsFile)
    let labelOf = Dictionary(uniqueKeysWithValues: classNames.enumerated().map { ($1, $0) })
    func read(_ split: String) throws -> [Datum] {
        let file = dir.appendingPathComponent("images_variant_\(split).txt")
        guard DatasetFiles.isFile(file) else { throw missing(file) }
        return try parseFGVCList(DatasetFiles.readLines(file), file: file, labelOf: labelOf, variantsFile: variantsFile, imageRoot: imageRoot)
    }
    return DatasetSplits(name: name.displayName, imageRoot: imageRoot, train: try read("train"), val: try read("val"),
                         test: try read("test"), classNames: classNames, template: name.template)
}

/// The variants of `variants.txt` (its `lines`), one per line, labelled by line. Blank lines at the
/// end are ignored; a blank line before another variant (CoOp would make it an empty class and
/// shift the labels after it) and a variant listed twice are refused with the line.
func parseFGVCVariants(_ lines: [String], file: URL) throws -> [String] {
    var names = lines.map { $0.trimmingCharacters(in: .whitespaces) }
    while names.last?.isEmpty == true { names.removeLast() }
    var labelOf: [String: Int] = [:]
    for (i, c) in names.enumerated() {
        if c.isEmpty {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): blank line among the variants; variants.txt lists one variant per line and a variant's label is its line, so remove the blank line (or fix the line if a variant was lost)")
        }
        if let first = labelOf[c] {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): variant '\(c)' is listed again (first at line \(first + 1)); each variant must appear once")
        }
        labelOf[c] = i
    }
    return names
}

/// The items of an `images_variant_<split>.txt` (its `lines`): `<image id> <variant name>`, the
/// image being `<id>.jpg` in the image folder, which it may not leave.
func parseFGVCList(_ lines: [String], file: URL, labelOf: [String: Int], variantsFile: URL, imageRoot: URL) throws -> [Datum] {
    var out: [Datum] = []
    for (i, raw) in lines.enumerated() {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty { continue }
        let parts = line.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): '\(raw)' is not '<image id> <variant>'")
        }
        let variant = String(parts[1])
        guard let label = labelOf[variant] else {
            throw DatasetError(.inconsistent, "\(file.path):\(i + 1): variant '\(variant)' is not in \(variantsFile.path)")
        }
        let path = String(parts[0]) + ".jpg"
        if let e = DatasetError.outsideRoot(path, entry: "line \(i + 1)", file: file.path, imageRoot: imageRoot) { throw e }
        out.append(Datum(path: path, label: label, className: variant))
    }
    return out
}
