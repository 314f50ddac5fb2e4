import Foundation

/// Why `path`, as listed in a split or list file, may not be opened under the image folder: nil
/// when it may. Paths are relative to the image folder and must stay inside it: not absolute, no
/// `..` component, no NUL byte (a C path would end there). The check is on the text alone, so it
/// costs nothing per item on Food101's 101,000; symbolic links inside the image folder are
/// followed wherever they point, since a link is placed by whoever owns the folder (linking class
/// folders or images to a shared store is a common layout), while a split file may come from
/// anywhere.
func pathEscape(_ path: String) -> String? {
    if path.isEmpty { return "it is empty" }
    if path.utf8.contains(0) { return "it contains a NUL byte" }
    if path.hasPrefix("/") { return "it is absolute" }
    if path.split(separator: "/", omittingEmptySubsequences: true).contains("..") { return "it has a '..' component" }
    return nil
}

extension DatasetError {
    /// The error for `path` at `entry` of `file` (see ``pathEscape(_:)``), or nil when `path` stays
    /// inside the image folder.
    static func outsideRoot(_ path: String, entry: String, file: String, imageRoot: URL? = nil) -> DatasetError? {
        guard let why = pathEscape(path) else { return nil }
        let folder = imageRoot.map { "the image folder \($0.path)" } ?? "the image folder"
        return DatasetError(.pathOutsideRoot, "\(file): \(entry) lists the image '\(path)', which leads outside \(folder) (\(why)). Image paths must be relative to the image folder and stay inside it: fix that entry or use the dataset's original file (see CoOp's DATASETS.md)")
    }
}
