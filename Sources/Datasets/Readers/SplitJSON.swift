import Foundation

/// The class renamings CoOp applies when it builds a split from folders (`NEW_CNAMES` of
/// caltech101.py and eurosat.py). CoOp's published split files already hold the new names; applying
/// the maps again is a no-op there and fixes splits written from the raw folder names.
let caltech101NewNames: [String: String] = [
    "airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike",
]
let euroSATNewNames: [String: String] = [
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
]
/// Caltech101 folders CoOp leaves out when it builds its split (`IGNORED`); the split file never lists them.
public let caltech101Ignored = ["BACKGROUND_Google", "Faces_easy"]

/// A dataset with CoOp's fixed split file.
func readSplitDataset(_ name: DatasetName, dir: URL, imageRoot: URL) throws -> DatasetSplits {
    let file = dir.appendingPathComponent(name.splitFile!)
    guard DatasetFiles.isFile(file) else {
        var message = "missing split file \(file.path); \(DatasetError.layoutNote(name, dir: dir))"
        if let hint = name.downloadHint { message += ". \(hint)" }
        throw DatasetError(.missingFile, message)
    }
    var (train, val, test) = try readSplitFile(file)
    let renames: [String: String]? = name == .caltech101 ? caltech101NewNames : name == .euroSAT ? euroSATNewNames : nil
    if let renames {
        for i in train.indices { train[i].className = renames[train[i].className] ?? train[i].className }
        for i in val.indices { val[i].className = renames[val[i].className] ?? val[i].className }
        for i in test.indices { test[i].className = renames[test[i].className] ?? test[i].className }
    }
    let classNames = try classNamesByLabel([("train", train), ("val", val), ("test", test)], source: file.path)
    return DatasetSplits(name: name.displayName, imageRoot: imageRoot, train: train, val: val, test: test,
                         classNames: classNames, template: name.template)
}

/// Reads a split file as CoOp's `OxfordPets.read_split`: `{"train"|"val"|"test": [[path, label,
/// classname], ...]}`, paths relative to the image folder. Labels may be JSON integers, integral
/// numbers or integer strings (CoOp applies `int()`).
public func readSplitFile(_ file: URL) throws -> (train: [Datum], val: [Datum], test: [Datum]) {
    guard let data = FileManager.default.contents(atPath: file.path) else {
        throw DatasetError(DatasetFiles.isFile(file) ? .unreadable : .missingFile,
                           DatasetFiles.isFile(file) ? "cannot read split file \(file.path)" : "missing split file \(file.path)")
    }
    return try parseSplitFile(data, file: file)
}

/// The split lists in `data`, the bytes of `file` (named in errors); see ``readSplitFile(_:)``.
func parseSplitFile(_ data: Data, file: URL) throws -> (train: [Datum], val: [Datum], test: [Datum]) {
    let json: JSONValue
    do {
        json = try JSONDecoder().decode(JSONValue.self, from: data)
    } catch {
        throw DatasetError(.malformedFile, "split file \(file.path) is not valid JSON (\(jsonErrorSummary(error))); expected {\"train\": [[path, label, classname], ...], \"val\": [...], \"test\": [...]} as CoOp writes it")
    }
    guard case .object(let top) = json else {
        throw DatasetError(.malformedFile, "split file \(file.path) holds \(json.typeName), not an object with keys \"train\", \"val\", \"test\"")
    }
    func read(_ key: String) throws -> [Datum] {
        guard let value = top[key] else {
            throw DatasetError(.malformedFile, "split file \(file.path) has no \"\(key)\" list (keys: \(top.keys.sorted().joined(separator: ", ")))")
        }
        guard case .array(let entries) = value else {
            throw DatasetError(.malformedFile, "split file \(file.path): \"\(key)\" is \(value.typeName), not a list of [path, label, classname]")
        }
        var out: [Datum] = []
        out.reserveCapacity(entries.count)
        for (i, entry) in entries.enumerated() {
            guard let datum = splitEntry(entry) else {
                throw DatasetError(.malformedFile, "split file \(file.path): first bad entry is \"\(key)\"[\(i)] = \(entry.snippet); expected [relative image path, integer label >= 0, class name]")
            }
            if let e = DatasetError.outsideRoot(datum.path, entry: "\"\(key)\"[\(i)]", file: "split file \(file.path)") { throw e }
            out.append(datum)
        }
        return out
    }
    return (try read("train"), try read("val"), try read("test"))
}

private func splitEntry(_ entry: JSONValue) -> Datum? {
    guard case .array(let fields) = entry, fields.count == 3,
          case .string(let path) = fields[0], !path.isEmpty,
          case .string(let className) = fields[2],
          let label = fields[1].integer, label >= 0 else { return nil }
    var rel = path
    while rel.hasPrefix("./") { rel.removeFirst(2) }
    return Datum(path: rel, label: label, className: className)
}

private func jsonErrorSummary(_ error: Error) -> String {
    if case DecodingError.dataCorrupted(let context) = error {
        let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
        return underlying ?? context.debugDescription
    }
    return "\(error)"
}

/// Any JSON value, decoded without Foundation's `NSNumber` bridging (which blurs booleans and numbers).
private enum JSONValue: Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// An integer from an integral number or an integer string, as Python's `int()` takes it.
    var integer: Int? {
        switch self {
        case .number(let d): return d.isFinite && d == d.rounded() && abs(d) < 1e15 ? Int(d) : nil
        case .string(let s): return Int(s.trimmingCharacters(in: .whitespaces))
        default: return nil
        }
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "an object"
        }
    }

    /// Compact JSON text, cut at 160 characters, for error messages.
    var snippet: String {
        let text = json
        return text.count > 160 ? String(text.prefix(160)) + "..." : text
    }

    var json: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
        case .string(let s):
            let data = (try? JSONEncoder().encode(s)) ?? Data("\"?\"".utf8)
            return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\\/", with: "/")
        case .array(let a): return "[" + a.map(\.json).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { JSONValue.string($0).json + ": " + o[$0]!.json }.joined(separator: ", ") + "}"
        }
    }
}

/// `classNames[label]`, from every item (as Dassl's `get_lab2cname`, which reads train only, but
/// also checking that a label has one name and that labels run 0..<K without gaps). Every label of
/// the last split (test) must occur in the others (train, val) when they hold items: a class that
/// only test items name is a damaged file (often another class under a new label), and Dassl, which
/// names classes from train, would give it no name. Two labels may not share a name, since a prompt
/// could not tell them apart.
func classNamesByLabel(_ splits: [(String, [Datum])], source: String) throws -> [String] {
    var names: [Int: (name: String, at: String)] = [:]
    for (split, items) in splits {
        for (i, item) in items.enumerated() {
            if let known = names[item.label] {
                if known.name != item.className {
                    throw DatasetError(.inconsistent, "\(source): label \(item.label) is '\(known.name)' at \(known.at) but '\(item.className)' at \(split)[\(i)]")
                }
            } else {
                names[item.label] = (item.className, "\(split)[\(i)]")
            }
        }
    }
    let count = (names.keys.max() ?? -1) + 1
    if let gap = (0..<count).first(where: { names[$0] == nil }) {
        throw DatasetError(.inconsistent, "\(source): labels run to \(count - 1) but no item has label \(gap); labels must be 0..<K")
    }
    var labelOf: [String: Int] = [:]
    // A label of the last split (test) must occur in an earlier one (train, val) when they hold items.
    if let (last, lastItems) = splits.last, splits.count > 1 {
        let earlier = splits.dropLast().flatMap(\.1)
        let known = Set(earlier.map(\.label))
        if !earlier.isEmpty, let i = lastItems.firstIndex(where: { !known.contains($0.label) }) {
            let item = lastItems[i]
            let twin = earlier.first { $0.className == item.className }
            let same = twin.map { ", the name of label \($0.label)" } ?? ""
            let others = splits.dropLast().map(\.0).joined(separator: " or ")
            throw DatasetError(.inconsistent, "\(source): label \(item.label) ('\(item.className)'\(same)) occurs only in \(last) (first at \(last)[\(i)]), never in \(others); a class to be tested must be trained on. Fix the label of that entry, or use the dataset's original split file")
        }
    }
    for label in 0..<count {
        let name = names[label]!
        if let other = labelOf[name.name] {
            throw DatasetError(.inconsistent, "\(source): labels \(other) and \(label) are both named '\(name.name)' (at \(names[other]!.at) and \(name.at)); each class needs its own name, or prompts cannot tell them apart. Fix the labels or names of those entries")
        }
        labelOf[name.name] = label
    }
    return (0..<count).map { names[$0]!.name }
}
