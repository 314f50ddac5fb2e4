import Foundation
import Imaging

/// Where a dataset's images come from, so that later code loads any dataset's image the same way.
public protocol ImageSource: Sendable {
    /// The image of `datum`, as RGB (what Pillow's `Image.open(p).convert("RGB")` gives).
    func image(for datum: Datum) throws -> RGBImage
}

/// Images in files, `datum.path` relative to `root` (``DatasetSplits/imageRoot``), decoded by
/// Imaging's `decodeImage(path:)` (JPEG and PNG, chosen by the first bytes, as Pillow decodes them).
public struct FileImageSource: ImageSource {
    public let root: URL

    public init(root: URL) { self.root = root }

    public func url(for datum: Datum) -> URL { root.appendingPathComponent(datum.path) }

    /// Throws ``DatasetError/Kind/pathOutsideRoot`` for a path that leads outside `root` (absolute
    /// or with a `..` component), without opening it.
    public func image(for datum: Datum) throws -> RGBImage {
        if let e = DatasetError.outsideRoot(datum.path, entry: "the item labelled \(datum.label) ('\(datum.className)')",
                                            file: "image source", imageRoot: root) { throw e }
        let path = url(for: datum).path
        guard FileManager.default.fileExists(atPath: path) else {
            throw DatasetError(.missingImages, "missing image \(path) (\(datum.className), label \(datum.label))",
                               missingPaths: [path], missingCount: 1)
        }
        return try decodeImage(path: path)
    }
}

/// The image source for a dataset read by ``loadDataset(_:root:verifyImages:)``: the in-memory
/// ``FashionMNIST`` or ``CIFAR100LT`` images (read from `splits.imageRoot`) or files under `splits.imageRoot`.
public func makeImageSource(_ name: DatasetName, splits: DatasetSplits) throws -> any ImageSource {
    switch name {
    case .fashionMNIST: return try FashionMNIST(directory: splits.imageRoot)
    case .cifar100LT, .cifar100LT50, .cifar100LT10: return try CIFAR100LT(directory: splits.imageRoot)
    default: return FileImageSource(root: splits.imageRoot)
    }
}
