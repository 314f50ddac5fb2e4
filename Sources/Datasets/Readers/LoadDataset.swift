import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads `name` from its CoOp layout under `root` (the folder CoOp calls `$DATA`, which holds
/// `oxford_pets/`, `imagenet/`, ...). For ``DatasetName/imageFolder`` `root` is the image folder
/// itself; for ``DatasetName/fashionMNIST`` the IDX files are looked for in `root/fashion-mnist/`,
/// then in torchvision's `root/FashionMNIST/raw/`, `root` itself, and Debian's
/// `/usr/share/datasets/fashion-mnist/` (so any root works when `dataset-fashion-mnist` is installed).
///
/// Splits follow CoOp exactly: the fixed `split_zhou_*.json` (paths relative to the image folder,
/// labels and class names as stored); ImageNet's `train/` and `val/` folders (val doubles as test,
/// as in CoOp); FGVCAircraft's `images_variant_*.txt`; the ImageNet variants as test sets only.
/// The long-tailed benchmarks as LIFT reads them: ImageNet-LT and Places-LT from OLTR's split files
/// (`LongTailedLists.swift`), CIFAR-100-LT from the CIFAR-100 python pickles (``CIFAR100LT``).
/// Class names are the names as CoOp stores them (underscores kept: prompt builders replace `_` with
/// a space, as CoOp's do).
///
/// Images are not decoded. The first image of every split is always checked to exist (catching a
/// wrong image folder cheaply); with `verifyImages` every image a split file or FGVCAircraft's txt
/// files list is, and a ``DatasetError/Kind/missingImages`` error reports the count and the first
/// few paths. Folder-listed datasets (ImageNet, its variants, image folders) hold only files that
/// exist, so `verifyImages` changes nothing for them.
public func loadDataset(_ name: DatasetName, root: URL, verifyImages: Bool = false) throws -> DatasetSplits {
    let splits: DatasetSplits
    switch name {
    case .imageFolder:
        splits = try readImageFolder(root)
    case .fashionMNIST:
        splits = try FashionMNIST.loadSplits(root: root)
        return splits
    case .cifar100LT, .cifar100LT50, .cifar100LT10:
        // In-memory images: there are no files to check.
        return try CIFAR100LT.loadSplits(name, directory: try datasetDirectory(name, root: root))
    default:
        let dir = try datasetDirectory(name, root: root)
        let imageRoot = try imageDirectory(name, dir: dir)
        switch name {
        case .imageNet:
            splits = try readImageNet(dir: dir, imageRoot: imageRoot)
        case .imageNetV2, .imageNetSketch, .imageNetA, .imageNetR:
            splits = try readImageNetVariant(name, dir: dir, imageRoot: imageRoot)
        case .fgvcAircraft:
            splits = try readFGVCAircraft(dir: dir, imageRoot: imageRoot)
        case .imageNetLT:
            splits = try readImageNetLT(dir: dir, imageRoot: imageRoot)
        case .placesLT:
            splits = try readPlacesLT(dir: dir, imageRoot: imageRoot)
        default:
            splits = try readSplitDataset(name, dir: dir, imageRoot: imageRoot)
        }
    }
    // Folder-listed datasets hold only files that exist: a full check would only repeat the listing.
    let listed = name == .imageFolder || name == .imageNet || name.isTestOnly
    try checkImagesExist(splits, all: verifyImages && !listed)
    return splits
}

/// A dataset's splits together with the source its images are read from.
public struct LoadedDataset: Sendable {
    public var name: DatasetName
    public var splits: DatasetSplits
    public var images: any ImageSource

    public init(name: DatasetName, splits: DatasetSplits, images: any ImageSource) {
        self.name = name; self.splits = splits; self.images = images
    }
}

/// ``loadDataset(_:root:verifyImages:)`` plus ``makeImageSource(_:splits:)``.
public func openDataset(_ name: DatasetName, root: URL, verifyImages: Bool = false) throws -> LoadedDataset {
    let splits = try loadDataset(name, root: root, verifyImages: verifyImages)
    return LoadedDataset(name: name, splits: splits, images: try makeImageSource(name, splits: splits))
}

// MARK: - Folders

/// `root/<folder>`, or an error naming what was expected and, when it can tell, what is wrong.
func datasetDirectory(_ name: DatasetName, root: URL) throws -> URL {
    let folder = name.folder!
    let dir = root.appendingPathComponent(folder)
    if DatasetFiles.isDirectory(dir) { return dir }
    let note = DatasetError.layoutNote(name, dir: dir)
    guard DatasetFiles.isDirectory(root) else {
        throw DatasetError(.missingFolder, "the data root \(root.path) does not exist or is not a folder; \(note)")
    }
    var hint = ""
    let key = DatasetName.normalized(folder)
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
    if let near = entries.sorted().first(where: { DatasetName.normalized($0) == key && DatasetFiles.isDirectory(root.appendingPathComponent($0)) }) {
        hint = ". There is '\(near)': rename it to '\(folder)' or add a symbolic link `ln -s \(near) \(root.appendingPathComponent(folder).path)`"
    } else if root.lastPathComponent == folder || name.expectedContents.contains(where: {
        FileManager.default.fileExists(atPath: root.appendingPathComponent($0).path)
    }) {
        hint = ". \(root.path) looks like the dataset folder itself: pass its parent, \(root.deletingLastPathComponent().path), as the root"
    }
    throw DatasetError(.missingFolder, "no folder '\(folder)' under \(root.path); \(note)\(hint)")
}

/// The image folder inside `dir` (CoOp's `image_dir`).
func imageDirectory(_ name: DatasetName, dir: URL) throws -> URL {
    let images = name.imageSubfolder.isEmpty ? dir : dir.appendingPathComponent(name.imageSubfolder)
    if DatasetFiles.isDirectory(images) { return images }
    throw DatasetError(.missingFolder, "no image folder '\(name.imageSubfolder)' in \(dir.path); \(DatasetError.layoutNote(name, dir: dir))")
}

/// File-system helpers of the readers (a namespace, so that the module's other files keep their names).
enum DatasetFiles {
    static func isDirectory(_ url: URL) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &dir) && dir.boolValue
    }

    static func isFile(_ url: URL) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &dir) && !dir.boolValue
    }

    /// The non-hidden files of `dir` (following links), sorted by name. CoOp lists them unsorted
    /// (`os.listdir` order); sorting makes the order the same on every machine.
    static func listFiles(_ dir: URL) throws -> [String] {
        try listEntries(dir).filter { !$0.isDirectory }.map(\.name)
    }

    /// The non-hidden subfolders of `dir` (following links), sorted by name.
    static func listFolders(_ dir: URL) throws -> [String] {
        try listEntries(dir).filter(\.isDirectory).map(\.name)
    }

    /// `readdir` with its `d_type`, so that listing ImageNet's 1.3 million files needs no `stat` per
    /// file (only links and file systems without `d_type` are `stat`ed).
    private static func listEntries(_ dir: URL) throws -> [(name: String, isDirectory: Bool)] {
        guard let handle = opendir(dir.path) else {
            throw DatasetError(.unreadable, "cannot list \(dir.path): \(String(cString: strerror(errno)))")
        }
        defer { closedir(handle) }
        var out: [(name: String, isDirectory: Bool)] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name.hasPrefix(".") { continue }
            let type = entry.pointee.d_type
            let directory: Bool
            if type == UInt8(DT_DIR) { directory = true }
            else if type == UInt8(DT_REG) { directory = false }
            else { directory = DatasetFiles.isDirectory(dir.appendingPathComponent(name)) }
            out.append((name, directory))
        }
        return out.sorted { DatasetFiles.pythonOrder($0.name, $1.name) }
    }

    /// Python's `sorted` order for strings: by Unicode code point (which UTF-8 byte order is).
    static func pythonOrder(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    /// Reads a text file as UTF-8 lines, the way Python's text mode (universal newlines) does: a
    /// line ends at LF, CRLF or a lone CR; a UTF-8 byte-order mark at the start is dropped; a last
    /// line without a line end is kept, and a line end at the very end gives no empty last line.
    /// Blank lines are kept (callers decide what they mean), so `lines[i]` is line `i + 1` of the
    /// file. Every text file the readers take (`classnames.txt`, FGVCAircraft's `variants.txt` and
    /// `images_variant_*.txt`) is read through here.
    static func readLines(_ url: URL) throws -> [String] {
        guard DatasetFiles.isFile(url) else { throw DatasetError(.missingFile, "missing file \(url.path)") }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw DatasetError(.unreadable, "cannot read \(url.path)")
        }
        return splitLines([UInt8](data))
    }

    /// The lines of UTF-8 `bytes` (see ``readLines(_:)``). Splits on bytes, not `Character`s: in
    /// Swift "\r\n" is one `Character`, so splitting a `String` on "\n" leaves CRLF text whole.
    static func splitLines(_ bytes: [UInt8]) -> [String] {
        var start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var lines: [String] = []
        var i = start
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x0A || b == 0x0D {
                lines.append(String(decoding: bytes[start..<i], as: UTF8.self))
                i += (b == 0x0D && i + 1 < bytes.count && bytes[i + 1] == 0x0A) ? 2 : 1
                start = i
            } else {
                i += 1
            }
        }
        if start < bytes.count { lines.append(String(decoding: bytes[start...], as: UTF8.self)) }
        return lines
    }
}

// MARK: - Image checks

/// How many missing images a ``DatasetError/Kind/missingImages`` error lists.
let missingListed = 5

/// Checks that the first image of each split exists, or (with `all`) that every image does.
func checkImagesExist(_ splits: DatasetSplits, all: Bool) throws {
    var missing: [String] = []
    var count = 0
    var checked = 0
    var seen = Set<String>()
    for items in [splits.train, splits.val, splits.test] {
        for item in (all ? items[...] : items.prefix(1)) where seen.insert(item.path).inserted {
            checked += 1
            let path = splits.imageRoot.appendingPathComponent(item.path).path
            if !FileManager.default.fileExists(atPath: path) {
                count += 1
                if missing.count < missingListed { missing.append(path) }
            }
        }
    }
    guard count > 0 else { return }
    let what = all ? "\(count) of the \(checked) images the splits list are missing"
                   : "the first image of a split is missing"
    throw DatasetError(.missingImages,
                       "\(splits.name): \(what) under \(splits.imageRoot.path): \(missing.joined(separator: ", "))\(count > missing.count ? ", ..." : ""). Is the image folder complete, and are the images directly in \(splits.imageRoot.path) as CoOp's DATASETS.md lays them out?",
                       missingPaths: missing, missingCount: count)
}
