import Foundation

/// File extensions an image folder's images may have (torchvision's `IMG_EXTENSIONS`), lower case.
public let imageFileExtensions: Set<String> = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"]

/// A generic image folder, as torchvision's `ImageFolder`: `root/<class>/<images>` (images may sit
/// in nested folders), classes sorted by name and labelled by position, everything the test split.
/// With `root/train/`, `root/val/` and/or `root/test/` each holding `<class>/` folders, those are the
/// splits; the classes are then the sorted union over the splits, so a class absent from one split
/// keeps its label. Only files with an image extension are listed, sorted. The template is CLIP's
/// generic "a photo of a {}."; `name` is the folder's name.
func readImageFolder(_ root: URL) throws -> DatasetSplits {
    let layout = "expected \(root.path)/<class>/<image> or \(root.path)/train|val|test/<class>/<image>"
    guard DatasetFiles.isDirectory(root) else {
        throw DatasetError(.missingFolder, "image folder \(root.path) does not exist or is not a folder; \(layout)")
    }
    let splitNames = ["train", "val", "test"]
    let present = splitNames.filter { DatasetFiles.isDirectory(root.appendingPathComponent($0)) }
    let bases = present.isEmpty ? [""] : present
    var classSet = Set<String>()
    for base in bases {
        classSet.formUnion(try DatasetFiles.listFolders(base.isEmpty ? root : root.appendingPathComponent(base)))
    }
    let classes = classSet.sorted(by: DatasetFiles.pythonOrder)
    guard !classes.isEmpty else {
        throw DatasetError(.missingFolder, "no class folders in \(root.path)\(present.isEmpty ? "" : "/{\(present.joined(separator: ","))}"); \(layout)")
    }
    var lists: [String: [Datum]] = [:]
    for base in bases {
        var items: [Datum] = []
        let dir = base.isEmpty ? root : root.appendingPathComponent(base)
        for (label, c) in classes.enumerated() {
            let classDir = dir.appendingPathComponent(c)
            guard DatasetFiles.isDirectory(classDir) else { continue }
            let prefix = base.isEmpty ? c : base + "/" + c
            for file in try imagesBelow(classDir) {
                items.append(Datum(path: prefix + "/" + file, label: label, className: c))
            }
        }
        lists[base.isEmpty ? "test" : base] = items
    }
    let total = lists.values.reduce(0) { $0 + $1.count }
    guard total > 0 else {
        throw DatasetError(.missingImages, "the class folders of \(root.path) hold no images (extensions: \(imageFileExtensions.sorted().joined(separator: ", "))); \(layout)")
    }
    return DatasetSplits(name: root.standardizedFileURL.lastPathComponent, imageRoot: root,
                         train: lists["train"] ?? [], val: lists["val"] ?? [], test: lists["test"] ?? [],
                         classNames: classes, template: DatasetName.imageFolder.template)
}

/// Image files below `dir` (recursively, following links, skipping hidden entries), as paths
/// relative to `dir`, sorted.
private func imagesBelow(_ dir: URL) throws -> [String] {
    var out: [String] = []
    var visited = Set<String>()
    func walk(_ url: URL, _ rel: String) throws {
        guard visited.insert(url.resolvingSymlinksInPath().path).inserted else { return }
        for entry in try DatasetFiles.listFolders(url) { try walk(url.appendingPathComponent(entry), rel.isEmpty ? entry : rel + "/" + entry) }
        for file in try DatasetFiles.listFiles(url) where imageFileExtensions.contains((file as NSString).pathExtension.lowercased()) {
            out.append(rel.isEmpty ? file : rel + "/" + file)
        }
    }
    try walk(dir, "")
    return out.sorted(by: DatasetFiles.pythonOrder)
}
