import Foundation
import Imaging
import TensorIO

/// CIFAR-100-LT (Cao et al., LDAM; the split LIFT and BALLAD use) from the CIFAR-100 python
/// version users have: the folder `cifar-100-python/` with the pickles `train`, `test` and `meta`
/// (Python 2 pickles: read as Python 3's `pickle.load(f, encoding='bytes')` reads them; gzip
/// compressed copies are read too, recognised by their first bytes as the IDX reader does).
///
/// Train is LIFT's long-tailed subset of the 50,000 train images (``longTailedKeep(labels:classCount:factor:seed:)``:
/// `np.random.seed(0)`, class k keeps `int(500 * IF^(k/99))` of its images after `np.random.shuffle`,
/// IF = 1 / ratio), in LIFT's order (class by class, each in shuffled order); test is the balanced
/// 10,000; val is empty (LIFT and BALLAD have none). Class names are meta's `fine_label_names`
/// (torchvision's `classes`, which LIFT uses), `_` kept as for every dataset. `Datum.path` is
/// `train/<index>` or `test/<index>` (5 digits), the image's row in its file. The images are in
/// memory; read them through this type's ``ImageSource`` conformance (rows are 1024 red, 1024
/// green, 1024 blue bytes of a 32x32 image, row-major).
public struct CIFAR100LT: ImageSource {
    public static let fileNames = ["train", "test", "meta"]
    /// Bytes per image: 3 x 32 x 32.
    public static let rowSize = 3072

    public let directory: URL
    /// `[N, 3072]` uint8, as the pickles hold them.
    public let trainImages: [UInt8]
    public let testImages: [UInt8]

    /// Reads the image arrays of `directory` (the `cifar-100-python` folder).
    public init(directory: URL) throws {
        self.directory = directory
        trainImages = try CIFAR100LT.readSplit(directory, "train").images
        testImages = try CIFAR100LT.readSplit(directory, "test").images
    }

    /// The splits of `name` (one of the three CIFAR-100-LT ratios) from the files in `directory`.
    public static func loadSplits(_ name: DatasetName, directory dir: URL) throws -> DatasetSplits {
        guard let ratio = name.imbalanceRatio else { preconditionFailure("\(name) is not CIFAR-100-LT") }
        let classNames = try readClassNames(dir)
        let train = try readSplit(dir, "train", classCount: classNames.count).labels
        let test = try readSplit(dir, "test", classCount: classNames.count).labels
        let trainFile = dir.appendingPathComponent("train").path
        let kept: [Int]
        do {
            kept = try longTailedKeep(labels: train, classCount: classNames.count, factor: 1 / Double(ratio))
        } catch let e as DatasetError {
            throw DatasetError(e.kind, "\(trainFile): \(e.message)")
        }
        func datum(_ split: String, _ i: Int, _ label: Int) -> Datum {
            Datum(path: split + "/" + pad5(i), label: label, className: classNames[label])
        }
        return DatasetSplits(name: name.displayName, imageRoot: dir, train: kept.map { datum("train", $0, train[$0]) }, val: [],
                             test: test.enumerated().map { datum("test", $0.offset, $0.element) },
                             classNames: classNames, template: name.template)
    }

    /// meta's `fine_label_names`: non-empty, distinct.
    static func readClassNames(_ dir: URL) throws -> [String] {
        let file = dir.appendingPathComponent("meta")
        return try classNames(in: try unpickle(file), file: file)
    }

    /// meta's `fine_label_names` in `top`, the dict of `file`.
    static func classNames(in top: PickleDict, file: URL) throws -> [String] {
        guard let list = value(top, "fine_label_names")?.tuple else {
            throw DatasetError(.malformedFile, "\(file.path) has no list 'fine_label_names' (keys: \(keys(top))); it should be CIFAR-100's meta file. \(DatasetName.cifar100LT.downloadHint!)")
        }
        var names: [String] = []
        var seen: [String: Int] = [:]
        for (k, v) in list.enumerated() {
            guard let name = NumpyArray.text(v), !name.isEmpty else {
                throw DatasetError(.malformedFile, "\(file.path): fine_label_names[\(k)] is \(v.typeDescription), not a class name")
            }
            if let other = seen[name] {
                throw DatasetError(.malformedFile, "\(file.path): fine_label_names[\(k)] '\(name)' is also fine_label_names[\(other)]; each class needs its own name")
            }
            seen[name] = k
            names.append(name)
        }
        guard names.count >= 2 else {
            throw DatasetError(.malformedFile, "\(file.path): fine_label_names has \(names.count) names; the long-tailed rule needs at least 2 classes (CIFAR-100 has 100)")
        }
        return names
    }

    /// `fine_labels` and `data` of `train` or `test`: N labels in `0..<classCount` (when given) and
    /// an `[N, 3072]` uint8 array.
    static func readSplit(_ dir: URL, _ split: String, classCount: Int? = nil) throws -> (labels: [Int], images: [UInt8]) {
        let file = dir.appendingPathComponent(split)
        return try self.split(in: try unpickle(file), file: file, classCount: classCount)
    }

    /// `fine_labels` and `data` in `top`, the dict of `file` (see ``readSplit(_:_:classCount:)``).
    static func split(in top: PickleDict, file: URL, classCount: Int? = nil) throws -> (labels: [Int], images: [UInt8]) {
        let split = file.lastPathComponent
        guard let list = value(top, "fine_labels")?.tuple else {
            throw DatasetError(.malformedFile, "\(file.path) has no list 'fine_labels' (keys: \(keys(top))); it should be CIFAR-100's \(split) file (CIFAR-10's files have 'labels'). \(DatasetName.cifar100LT.downloadHint!)")
        }
        var labels: [Int] = []
        labels.reserveCapacity(list.count)
        for (i, v) in list.enumerated() {
            guard case .int(let y) = v, y >= 0, y < (classCount ?? Int.max) else {
                throw DatasetError(.malformedFile, "\(file.path): fine_labels[\(i)] is \(v.int.map(String.init) ?? v.typeDescription), not a label in 0..<\(classCount ?? 0) (the classes of meta's fine_label_names)")
            }
            labels.append(y)
        }
        guard let data = value(top, "data") else {
            throw DatasetError(.malformedFile, "\(file.path) has no 'data' array (keys: \(keys(top))). \(DatasetName.cifar100LT.downloadHint!)")
        }
        let array: NumpyArray
        do {
            array = try NumpyArray(pickled: data, source: "\(file.path) ['data']")
        } catch let e as FileError {
            throw DatasetError(.malformedFile, e.message)
        }
        guard array.dtype == "u1", array.shape == [labels.count, rowSize], !array.fortranOrder else {
            throw DatasetError(.malformedFile, "\(file.path): 'data' is a \(array.fortranOrder ? "Fortran-order " : "")\(array.dtype) array of shape \(array.shape); expected uint8 of shape [\(labels.count), \(rowSize)] (one 32x32 RGB row per label of fine_labels)")
        }
        return (labels, array.bytes)
    }

    /// The top-level dict of a CIFAR pickle.
    static func unpickle(_ file: URL) throws -> PickleDict {
        guard DatasetFiles.isFile(file) else {
            let dir = file.deletingLastPathComponent()
            let absent = fileNames.filter { !DatasetFiles.isFile(dir.appendingPathComponent($0)) }
            throw DatasetError(.missingFile, "missing \(file.path) (\(dir.path) lacks \(absent.joined(separator: ", "))); expected the CIFAR-100 python files \(fileNames.joined(separator: ", ")) in \(dir.path). \(DatasetName.cifar100LT.downloadHint!)")
        }
        return try unpickle(bytes: try readPossiblyGzipped(file), file: file)
    }

    /// The top-level dict of the CIFAR pickle `bytes`, read from `file` (named in errors).
    static func unpickle(bytes: [UInt8], file: URL) throws -> PickleDict {
        var unpickler = Unpickler(source: file.path)
        unpickler.byteStrings = true
        let value: PickleValue
        do {
            value = try unpickler.load(bytes)
        } catch let e as FileError {
            throw DatasetError(.malformedFile, "\(e.message) (\(file.path) should be a CIFAR-100 python pickle). \(DatasetName.cifar100LT.downloadHint!)")
        }
        guard let dict = value.dict else {
            throw DatasetError(.malformedFile, "\(file.path) holds \(value.typeDescription), not the dict of a CIFAR-100 python file. \(DatasetName.cifar100LT.downloadHint!)")
        }
        return dict
    }

    /// `dict[key]` under a Python 2 byte-string key (CIFAR's) or a text key (a file re-pickled by Python 3).
    static func value(_ dict: PickleDict, _ key: String) -> PickleValue? { dict[bytesKey: key] ?? dict[key] }

    static func keys(_ dict: PickleDict) -> String {
        dict.entries.map { NumpyArray.text($0.key) ?? $0.key.typeDescription }.joined(separator: ", ")
    }

    /// The image `datum.path` names (`train/<index>` or `test/<index>`).
    public func image(for datum: Datum) throws -> RGBImage {
        let parts = datum.path.split(separator: "/")
        let images: [UInt8]
        switch parts.first {
        case "train"?: images = trainImages
        case "test"?: images = testImages
        default: images = []
        }
        let count = images.count / CIFAR100LT.rowSize
        guard parts.count == 2, let index = Int(parts[1]), index >= 0, index < count else {
            throw DatasetError(.missingImages, "CIFAR-100 has no image '\(datum.path)' (expected train/<0..<\(trainImages.count / CIFAR100LT.rowSize)> or test/<0..<\(testImages.count / CIFAR100LT.rowSize)>)",
                               missingPaths: [datum.path], missingCount: 1)
        }
        var px = [UInt8](repeating: 0, count: CIFAR100LT.rowSize)
        images.withUnsafeBufferPointer { src in
            let base = index * CIFAR100LT.rowSize
            for p in 0..<1024 {
                px[3 * p] = src[base + p]; px[3 * p + 1] = src[base + 1024 + p]; px[3 * p + 2] = src[base + 2048 + p]
            }
        }
        return RGBImage(width: 32, height: 32, pixels: px)
    }
}

/// LIFT's long-tailed class sizes (`IMBALANCECIFAR100.get_img_num_per_cls`): class k of C keeps
/// `int(imageMax * factor ** (k / (C - 1)))` images, imageMax being the images per class of the
/// balanced set (500 for CIFAR-100), computed in doubles as Python does.
public func longTailedCounts(imageMax: Double, classCount: Int, factor: Double) -> [Int] {
    precondition(classCount >= 2, "the long-tailed rule needs at least 2 classes")
    return (0..<classCount).map { k in Int((imageMax * Foundation.pow(factor, Double(k) / Double(classCount - 1))).rounded(.towardZero)) }
}

/// The positions LIFT's `gen_imbalanced_data` keeps from a balanced list of `labels`: with
/// `np.random.seed(seed)`, for each class k in label order, the positions of its images (ascending)
/// are shuffled with `np.random.shuffle` and the first `n_k` kept (``longTailedCounts(imageMax:classCount:factor:)``
/// with imageMax = count / C); the result is class by class, each in shuffled order. Every class
/// `0..<classCount` must occur (LIFT pairs the sorted labels present with the counts, so a missing
/// class would shift every count after it), and every class must keep at least one image.
public func longTailedKeep(labels: [Int], classCount: Int, factor: Double, seed: UInt32 = 0) throws -> [Int] {
    var positions = [[Int]](repeating: [], count: classCount)
    for (i, y) in labels.enumerated() {
        guard y >= 0, y < classCount else {
            throw DatasetError(.inconsistent, "label \(y) at \(i) is outside 0..<\(classCount)")
        }
        positions[y].append(i)
    }
    if let absent = positions.firstIndex(where: \.isEmpty) {
        throw DatasetError(.inconsistent, "class \(absent) has no image; LIFT's long-tailed rule needs every class 0..<\(classCount) in the balanced train set")
    }
    let counts = longTailedCounts(imageMax: Double(labels.count) / Double(classCount), classCount: classCount, factor: factor)
    if let empty = counts.firstIndex(of: 0) {
        throw DatasetError(.inconsistent, "with \(labels.count) images in \(classCount) classes, imbalance factor \(factor) leaves class \(empty) no image (int(\(Double(labels.count) / Double(classCount)) * \(factor)^(\(empty)/\(classCount - 1))) = 0); CIFAR-100's 500 per class give at least 5")
    }
    var rng = NumpyRandomState(seed: seed)
    var kept: [Int] = []
    for (k, var idx) in positions.enumerated() {
        rng.shuffle(&idx)
        kept += idx.prefix(counts[k])
    }
    return kept
}

private func pad5(_ i: Int) -> String {
    let s = String(i)
    return s.count >= 5 ? s : String(repeating: "0", count: 5 - s.count) + s
}
