import Foundation

// ImageNet-LT and Places-LT (Liu et al., OLTR, CVPR'19) as LIFT and BALLAD read them: OLTR's split
// files `<prefix>_{train,val,test}.txt`, one `<relative image path> <label>` per line, the paths
// relative to the ImageNet-2012 / Places365 folder (here `images/` inside the dataset's folder).
// Train and test are required; val (20,000 / 7,300 images drawn from the original train sets) is
// read when present and is otherwise empty, since LIFT and BALLAD never use it.

/// ImageNet-LT: OLTR's lists, labels being positions among the sorted wnids (ImageNet's usual
/// labels, the order of CoOp's `classnames.txt`), names from `classnames.txt` (`<wnid> <name>` per
/// line, CoOp's, as the ImageNet reader takes them). A path with a wnid folder (`train/<wnid>/...`,
/// `val/<wnid>/...`) must be in its label's wnid folder: a list relabelled by another class order
/// is refused at its first such line rather than trained on with shuffled names.
func readImageNetLT(dir: URL, imageRoot: URL) throws -> DatasetSplits {
    let name = DatasetName.imageNetLT
    let table = try classNamesFile(name, dir: dir)
    let names = Dictionary(uniqueKeysWithValues: table.map { ($0.wnid, $0.name) })
    let wnids = table.map(\.wnid).sorted(by: DatasetFiles.pythonOrder)
    let labelOf = Dictionary(uniqueKeysWithValues: wnids.enumerated().map { ($1, $0) })
    let classNamesFile = dir.appendingPathComponent("classnames.txt")
    let classNames = wnids.map { names[$0]! }
    let lists = try readOLTRLists(name, dir: dir, imageRoot: imageRoot, classNames: classNames,
                                  classSource: classNamesFile.path) { path, label in
        // The wnid folder of the path, if it has one, must be the label's.
        guard let folder = path.split(separator: "/").dropLast().first(where: { labelOf[String($0)] != nil }),
              let other = labelOf[String(folder)], other != label else { return nil }
        return "the image is in the folder of wnid \(folder) (label \(other) by sorted wnid), not of label \(label)'s wnid \(wnids[label])"
    }
    return DatasetSplits(name: name.displayName, imageRoot: imageRoot, train: lists.train, val: lists.val, test: lists.test,
                         classNames: classNames, template: name.template)
}

/// Places-LT: OLTR's lists, labels and names from Places365's `categories_places365.txt`
/// (`/a/airfield 0` per line; see ``parsePlacesCategories(_:file:)``). A train path in a category
/// folder (`data_256/a/airfield/...`) must be in its label's; test paths (`val_256/<file>`) have none.
func readPlacesLT(dir: URL, imageRoot: URL) throws -> DatasetSplits {
    let name = DatasetName.placesLT
    let file = dir.appendingPathComponent("categories_places365.txt")
    guard DatasetFiles.isFile(file) else {
        throw DatasetError(.missingFile, "missing \(file.path), which names Places-LT's classes; \(DatasetError.layoutNote(name, dir: dir)). \(name.downloadHint!)")
    }
    let categories = try placesCategories(DatasetFiles.readLines(file), file: file)
    let classNames = categories.map(\.name)
    let labelOf = Dictionary(uniqueKeysWithValues: categories.enumerated().map { ($1.folder, $0) })
    let lists = try readOLTRLists(name, dir: dir, imageRoot: imageRoot, classNames: classNames, classSource: file.path) { path, label in
        // The folder below the first (data_256/<letter>/<category>[/<sub>]/file.jpg) names the category.
        let folder = path.split(separator: "/").dropFirst().dropLast().joined(separator: "/")
        guard let other = labelOf[folder], other != label else { return nil }
        return "the image is in the folder of category /\(folder) (label \(other) in \(file.lastPathComponent)), not of label \(label)'s /\(categories[label].folder)"
    }
    return DatasetSplits(name: name.displayName, imageRoot: imageRoot, train: lists.train, val: lists.val, test: lists.test,
                         classNames: classNames, template: name.template)
}

/// The class names of Places365's `categories_places365.txt`, indexed by label: lines
/// `/<letter>/<category>[/<subcategory>] <label>`, labels 0..<K each once (in any line order). A
/// name is LIFT's (its `datasets/Places_LT/classnames.txt`): the path without its letter folder,
/// `/` becoming `-` (`/a/apartment_building/outdoor` -> `apartment_building-outdoor`); prompts
/// then turn `_` into spaces as for every dataset.
func parsePlacesCategories(_ lines: [String], file: URL) throws -> [String] {
    try placesCategories(lines, file: file).map(\.name)
}

/// ``parsePlacesCategories(_:file:)`` with each category's folder (`a/airfield`), indexed by label.
func placesCategories(_ lines: [String], file: URL) throws -> [(folder: String, name: String)] {
    var byLabel: [Int: (name: String, line: Int, folder: String)] = [:]
    for (i, raw) in lines.enumerated() {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty { continue }
        let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard parts.count == 2, parts[0].hasPrefix("/"), let label = Int(parts[1]), label >= 0 else {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): '\(raw)' is not '/<letter>/<category> <label>' (e.g. '/a/airfield 0'), as Places365's categories_places365.txt has it")
        }
        let components = parts[0].split(separator: "/")
        guard components.count >= 2 else {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): category '\(parts[0])' has no name after its letter folder (expected e.g. '/a/airfield')")
        }
        if let first = byLabel[label] {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): label \(label) is given again (first at line \(first.line)); each label must appear once")
        }
        byLabel[label] = (components.dropFirst().joined(separator: "-"), i + 1, components.joined(separator: "/"))
    }
    guard !byLabel.isEmpty else {
        throw DatasetError(.malformedFile, "\(file.path) lists no categories; expected '/<letter>/<category> <label>' per line")
    }
    let count = byLabel.keys.max()! + 1
    if let gap = (0..<count).first(where: { byLabel[$0] == nil }) {
        throw DatasetError(.malformedFile, "\(file.path): labels run to \(count - 1) but none is \(gap); labels must be 0..<K, each on one line")
    }
    var seen: [String: Int] = [:]
    for label in 0..<count {
        let entry = byLabel[label]!
        if let other = seen[entry.name] {
            throw DatasetError(.malformedFile, "\(file.path):\(entry.line): category name '\(entry.name)' of label \(label) is that of label \(other) too; prompts could not tell them apart")
        }
        seen[entry.name] = label
    }
    return (0..<count).map { (byLabel[$0]!.folder, byLabel[$0]!.name) }
}

/// Train, val (when its file exists) and test of `name` from OLTR's split files in `dir`, each
/// checked with ``parseOLTRList(_:file:classNames:classSource:imageRoot:check:)``.
private func readOLTRLists(_ name: DatasetName, dir: URL, imageRoot: URL, classNames: [String], classSource: String,
                           check: (String, Int) -> String?) throws -> (train: [Datum], val: [Datum], test: [Datum]) {
    let prefix = name.oltrPrefix!
    func read(_ split: String, required: Bool) throws -> [Datum] {
        let file = dir.appendingPathComponent("\(prefix)_\(split).txt")
        guard DatasetFiles.isFile(file) else {
            if !required { return [] }
            throw DatasetError(.missingFile, "missing split file \(file.path); \(DatasetError.layoutNote(name, dir: dir)). \(name.downloadHint!)")
        }
        return try parseOLTRList(DatasetFiles.readLines(file), file: file, classNames: classNames, classSource: classSource,
                                 imageRoot: imageRoot, check: check)
    }
    let train = try read("train", required: true), val = try read("val", required: false), test = try read("test", required: true)
    if train.isEmpty {
        throw DatasetError(.malformedFile, "\(dir.appendingPathComponent("\(prefix)_train.txt").path) lists no images; expected '<relative image path> <label>' per line")
    }
    if test.isEmpty {
        throw DatasetError(.malformedFile, "\(dir.appendingPathComponent("\(prefix)_test.txt").path) lists no images; expected '<relative image path> <label>' per line")
    }
    return (train, val, test)
}

/// The items of an OLTR split file (its `lines`): `<relative image path> <label>` separated by
/// white space, as OLTR and LIFT split them (`line.split()`), blank lines skipped. The label must
/// be an integer in `0..<classNames.count` (the classes `classSource` names), the path must stay
/// in the image folder (``pathEscape(_:)``) and appear once; `check(path, label)` may refuse an
/// item with a reason. Every error names the file and line.
func parseOLTRList(_ lines: [String], file: URL, classNames: [String], classSource: String, imageRoot: URL,
                   check: (String, Int) -> String? = { _, _ in nil }) throws -> [Datum] {
    let classCount = classNames.count
    var out: [Datum] = []
    out.reserveCapacity(lines.count)
    var lineOf: [String: Int] = [:]
    lineOf.reserveCapacity(lines.count)
    for (i, raw) in lines.enumerated() {
        let parts = raw.split(whereSeparator: { $0 == " " || $0 == "\t" })
        if parts.isEmpty { continue }
        guard parts.count == 2 else {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): '\(raw)' is not '<relative image path> <label>' (\(parts.count) fields); OLTR's split files have one image and its label per line")
        }
        let path = String(parts[0])
        guard let label = Int(parts[1]) else {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): label '\(parts[1])' is not an integer")
        }
        guard label >= 0, label < classCount else {
            throw DatasetError(.inconsistent, "\(file.path):\(i + 1): label \(label) is outside 0..<\(classCount), the classes \(classSource) names; is the split file from another dataset, or the class file incomplete?")
        }
        if let e = DatasetError.outsideRoot(path, entry: "line \(i + 1)", file: file.path, imageRoot: imageRoot) { throw e }
        if let first = lineOf[path] {
            throw DatasetError(.malformedFile, "\(file.path):\(i + 1): image '\(path)' is listed again (first at line \(first)); each image must appear once. Use OLTR's original file")
        }
        if let why = check(path, label) {
            throw DatasetError(.inconsistent, "\(file.path):\(i + 1): '\(path)' has label \(label) but \(why). Use OLTR's original split file with the class file it was made for (CoOp's classnames.txt, Places365's categories_places365.txt)")
        }
        lineOf[path] = i + 1
        out.append(Datum(path: path, label: label, className: classNames[label]))
    }
    return out
}
