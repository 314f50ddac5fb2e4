import Foundation
import Imaging

/// Fashion-MNIST (Xiao et al. 2017), the built-in dataset: 60,000 train and 10,000 test 28x28
/// grayscale images of 10 clothing classes, read from the four IDX files (gzip or raw) that
/// Debian's `dataset-fashion-mnist` installs in `/usr/share/datasets/fashion-mnist/`.
///
/// Splits: the official test file is `test`; the official train file is cut per class, its last
/// 10% of each class's images (in file order) becoming `val` (600 per class) and the rest `train`
/// (5,400 per class): deterministic, disjoint from train, and class-balanced. `Datum.path` is
/// `train/<index>` or `test/<index>`, the image's position in the train or t10k file (5 digits), so
/// a val image is e.g. `train/00042`. The images are in memory; read them through this type's
/// ``ImageSource`` conformance (gray replicated to R = G = B).
public struct FashionMNIST: ImageSource {
    public static let classNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]
    /// The IDX files, without `.gz` (either form is read).
    public static let fileNames = [
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    ]
    /// Where Debian's `dataset-fashion-mnist` puts the files.
    public static let debianDirectory = URL(fileURLWithPath: "/usr/share/datasets/fashion-mnist")
    /// The fraction of each class of the train file that becomes val.
    public static let valFraction = 0.1

    /// The folder the files were read from.
    public let directory: URL
    /// Images, `[count, 28, 28]`.
    public let trainImages: IDXArray
    public let testImages: IDXArray

    /// Reads the two image files of `directory` (the labels are read by ``loadSplits(root:)``).
    public init(directory: URL) throws {
        self.directory = directory
        trainImages = try FashionMNIST.readImages(directory, "train-images-idx3-ubyte")
        testImages = try FashionMNIST.readImages(directory, "t10k-images-idx3-ubyte")
    }

    /// Finds the files for a data root: `root/fashion-mnist/`, torchvision's `root/FashionMNIST/raw/`,
    /// `root` itself, then Debian's folder. Throws naming every place looked at.
    public static func locate(root: URL?) throws -> URL {
        try locate(root: root, fallbacks: [debianDirectory])
    }

    static func locate(root: URL?, fallbacks: [URL]) throws -> URL {
        var candidates: [URL] = []
        if let root {
            candidates += [root.appendingPathComponent("fashion-mnist"),
                           root.appendingPathComponent("FashionMNIST").appendingPathComponent("raw"), root]
        }
        candidates += fallbacks
        var partial: (URL, [String])?
        for dir in candidates where DatasetFiles.isDirectory(dir) {
            let absent = fileNames.filter { file(dir, $0) == nil }
            if absent.isEmpty { return dir }
            if absent.count < fileNames.count, partial == nil { partial = (dir, absent) }
        }
        let expected = fileNames.map { $0 + ".gz" }.joined(separator: ", ")
        if let (dir, absent) = partial {
            throw DatasetError(.missingFile, "\(dir.path) lacks \(absent.map { $0 + "[.gz]" }.joined(separator: ", ")); expected \(expected). \(DatasetName.fashionMNIST.downloadHint!)")
        }
        throw DatasetError(.missingFile, "no Fashion-MNIST IDX files in \(candidates.map(\.path).joined(separator: ", ")); expected \(expected) in one of them; \(DatasetName.fashionMNIST.downloadHint!)")
    }

    /// `dir/name.gz` or `dir/name`, whichever exists.
    static func file(_ dir: URL, _ name: String) -> URL? {
        [dir.appendingPathComponent(name + ".gz"), dir.appendingPathComponent(name)].first(where: DatasetFiles.isFile)
    }

    static func readImages(_ dir: URL, _ name: String) throws -> IDXArray {
        guard let url = file(dir, name) else { throw DatasetError(.missingFile, "missing \(dir.path)/\(name).gz; \(DatasetName.fashionMNIST.downloadHint!)") }
        let a = try readIDX(url)
        guard a.shape.count == 3, a.shape[1] == 28, a.shape[2] == 28 else {
            throw DatasetError(.malformedFile, "\(url.path) has shape \(a.shape), not [N, 28, 28]")
        }
        return a
    }

    static func readLabels(_ dir: URL, _ name: String) throws -> [UInt8] {
        guard let url = file(dir, name) else { throw DatasetError(.missingFile, "missing \(dir.path)/\(name).gz; \(DatasetName.fashionMNIST.downloadHint!)") }
        let a = try readIDX(url)
        guard a.shape.count == 1 else { throw DatasetError(.malformedFile, "\(url.path) has shape \(a.shape), not [N]") }
        if let bad = a.data.firstIndex(where: { $0 >= classNames.count }) {
            throw DatasetError(.malformedFile, "\(url.path): label \(a.data[bad]) at \(bad) is not 0...9")
        }
        return a.data
    }

    /// The splits (from the label files only; the images are read by ``init(directory:)``).
    public static func loadSplits(root: URL?) throws -> DatasetSplits {
        try loadSplits(directory: locate(root: root))
    }

    /// The splits from the label files in `directory` itself.
    public static func loadSplits(directory dir: URL) throws -> DatasetSplits {
        let trainLabels = try readLabels(dir, "train-labels-idx1-ubyte")
        let testLabels = try readLabels(dir, "t10k-labels-idx1-ubyte")
        func datum(_ prefix: String, _ i: Int, _ label: UInt8) -> Datum {
            Datum(path: prefix + "/" + pad5(i), label: Int(label), className: classNames[Int(label)])
        }
        var byClass = [[Int]](repeating: [], count: classNames.count)
        for (i, y) in trainLabels.enumerated() { byClass[Int(y)].append(i) }
        var isVal = [Bool](repeating: false, count: trainLabels.count)
        for indices in byClass {
            let nVal = Int((Double(indices.count) * valFraction).rounded())
            for i in indices.suffix(nVal) { isVal[i] = true }
        }
        var train: [Datum] = [], val: [Datum] = []
        for (i, y) in trainLabels.enumerated() {
            if isVal[i] { val.append(datum("train", i, y)) } else { train.append(datum("train", i, y)) }
        }
        let test = testLabels.enumerated().map { datum("test", $0.offset, $0.element) }
        let name = DatasetName.fashionMNIST
        return DatasetSplits(name: name.displayName, imageRoot: dir, train: train, val: val, test: test,
                             classNames: classNames, template: name.template)
    }

    /// The image `datum.path` names (`train/<index>` or `test/<index>`), gray replicated to RGB.
    public func image(for datum: Datum) throws -> RGBImage {
        let parts = datum.path.split(separator: "/")
        let images: IDXArray
        switch parts.first {
        case "train"?: images = trainImages
        case "test"?, "t10k"?: images = testImages
        default: images = IDXArray(shape: [0], data: [])
        }
        guard parts.count == 2, images.shape.count == 3, let index = Int(parts[1]), index >= 0, index < images.count else {
            throw DatasetError(.missingImages, "Fashion-MNIST has no image '\(datum.path)' (expected train/<0..<\(trainImages.count)> or test/<0..<\(testImages.count)>)",
                               missingPaths: [datum.path], missingCount: 1)
        }
        return FashionMNIST.rgb(images, index)
    }

    /// Item `index` of an `[N, H, W]` gray array as RGB.
    static func rgb(_ images: IDXArray, _ index: Int) -> RGBImage {
        let h = images.shape[1], w = images.shape[2], n = h * w
        var px = [UInt8](repeating: 0, count: n * 3)
        images.data.withUnsafeBufferPointer { src in
            let base = index * n
            for i in 0..<n {
                let v = src[base + i]
                px[3 * i] = v; px[3 * i + 1] = v; px[3 * i + 2] = v
            }
        }
        return RGBImage(width: w, height: h, pixels: px)
    }
}

/// `source.image(for: datum)`, under the name the rest of the code may look for.
public func fashionMNISTImage(_ datum: Datum, from source: FashionMNIST) throws -> RGBImage {
    try source.image(for: datum)
}

private func pad5(_ i: Int) -> String {
    let s = String(i)
    return s.count >= 5 ? s : String(repeating: "0", count: 5 - s.count) + s
}
