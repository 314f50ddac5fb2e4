import Foundation

/// Which images of a dataset a run uses: few-shot draw, imbalance, base/novel classes.
public struct SelectionOptions: Codable, Hashable, Sendable {
    /// Shots per class; nil or <= 0 = all images.
    public var shots: Int?
    public var seed: Int
    /// Class-imbalance tau in (0, 1]; the head keeps `shots` images (METHODS.md section 4).
    public var imbalance: Double?
    public var subset: ClassSubset
    /// Read the few-shot draw from CoOp's cache, `<dataset folder>/split_fewshot/shot_K-seed_S.pkl`,
    /// when that file exists (as CoOp and DAPT leave it), instead of drawing anew. Decoded as true
    /// when absent (records written before the option existed).
    public var useCoOpCache: Bool
    /// How `imbalance` thins the training list: NPT's tau (the default) or Candle's rule.
    public var imbalanceProfile: ImbalanceProfile

    public init(shots: Int? = nil, seed: Int = 1, imbalance: Double? = nil, subset: ClassSubset = .all,
                useCoOpCache: Bool = true, imbalanceProfile: ImbalanceProfile = .tau) {
        self.shots = shots; self.seed = seed; self.imbalance = imbalance; self.subset = subset
        self.useCoOpCache = useCoOpCache; self.imbalanceProfile = imbalanceProfile
    }

    enum CodingKeys: String, CodingKey { case shots, seed, imbalance, subset, useCoOpCache, imbalanceProfile }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        shots = try c.decodeIfPresent(Int.self, forKey: .shots)
        seed = try c.decode(Int.self, forKey: .seed)
        imbalance = try c.decodeIfPresent(Double.self, forKey: .imbalance)
        subset = try c.decode(ClassSubset.self, forKey: .subset)
        useCoOpCache = try c.decodeIfPresent(Bool.self, forKey: .useCoOpCache) ?? true
        imbalanceProfile = try c.decodeIfPresent(ImbalanceProfile.self, forKey: .imbalanceProfile) ?? .tau
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(shots, forKey: .shots)
        try c.encode(seed, forKey: .seed)
        try c.encodeIfPresent(imbalance, forKey: .imbalance)
        try c.encode(subset, forKey: .subset)
        try c.encode(useCoOpCache, forKey: .useCoOpCache)
        // Written only for Candle's rule, so earlier selections encode as before.
        if imbalanceProfile != .tau { try c.encode(imbalanceProfile, forKey: .imbalanceProfile) }
    }
}

/// The dataset after selection: the same shape as `DatasetSplits`, relabelled when a subset is taken.
/// ``DatasetSplits/coopCache`` says whether the few-shot draw was read from CoOp's cache.
public typealias Selection = DatasetSplits

/// CoOp's order: the few-shot draw on all classes (train, then val with min(K, 4) shots; ImageNet
/// draws train only), then the imbalance profile on the drawn train list, then base/novel
/// subsampling decided by the labels of train. A function of (dataset, options) and, with
/// `useCoOpCache`, of CoOp's cache file when it exists.
///
/// **CoOp's cached draw.** With `shots` and `useCoOpCache`, when the dataset folder holds
/// `split_fewshot/shot_K-seed_S.pkl` (a CoOp dataset read from its CoOp layout), its train (and
/// val) lists replace the draw, and the result's ``DatasetSplits/coopCache`` is the file's path.
/// CoOp writes absolute paths; when they are not under `splits.imageRoot` (data moved or mounted
/// elsewhere), the folder the file was written with is found from its first train image and every
/// path is read relative to it. The file must fit the dataset: every image one of the split's
/// images, present on disk, with the same label, labels in range and class names as the dataset's;
/// otherwise a ``DatasetError`` names the file, the first mismatch and how to ignore the file.
/// ImageNet's file holds train only (val stays the whole val set, as in CoOp); the others' must
/// hold val too.
///
/// **Base/novel on an ImageNet variant** (V2, -Sketch, -A, -R; test sets only, evaluated with the
/// classes of a model trained on ImageNet): the split is ImageNet's, not one of the variant's
/// (empty) train list. Base = the first ceil(n/2) of ImageNet's n = 1000 labels (sorted wnids),
/// novel = the rest. The test images kept are those whose class is in that half; the kept classes
/// are ordered by ImageNet label and relabelled from 0. For V2 and -Sketch (all 1000 classes) this
/// gives exactly ImageNet's base (novel) labels and class names, so a model trained with `--base`
/// on ImageNet is evaluated on the same 500 classes with the same labels. For -A and -R (200-class
/// subsets), as CoOp evaluates them with the variant's own class list (200-way), the classes are
/// the variant's classes in that half (A: 200 classes, of which some fall in each half), in
/// ImageNet order: the ImageNet-base classifier restricted to the classes the variant has.
public func select(_ splits: DatasetSplits, dataset: DatasetName, options o: SelectionOptions) throws -> Selection {
    var s = splits
    if let shots = o.shots, shots > 0 {
        if o.useCoOpCache, let file = coopCacheFile(splits, dataset: dataset, shots: shots, seed: o.seed) {
            let cached = try readCoOpCache(file, splits: splits, dataset: dataset)
            s.train = cached.train
            s.val = cached.val
            s.coopCache = file.path
        } else {
            let few = fewShotSplits(train: splits.train, val: splits.val, shots: shots, seed: o.seed,
                                    sampleVal: dataset != .imageNet)
            s.train = few.train
            s.val = few.val
        }
    }
    if let r = o.imbalance, o.imbalanceProfile == .candle {
        s.train = try candleImbalanced(s.train, ratio: r)
    } else if let tau = o.imbalance {
        guard let shots = o.shots, shots > 0 else {
            throw DatasetError(.inconsistent, "a class-imbalance tau needs a shot count (the head classes keep that many images)")
        }
        s.train = try imbalancedFewShot(s.train, tau: tau, headShots: shots)
    }
    if o.subset != .all, let map = s.imageNetClasses {
        return try subsampleImageNetVariant(s, map: map, subset: o.subset)
    }
    return subsampleClasses(s, subset: o.subset)
}

// MARK: - Base/novel on the ImageNet variants

/// See ``select(_:dataset:options:)``: the variant's classes in ImageNet's base (novel) half, in
/// ImageNet-label order, relabelled from 0.
func subsampleImageNetVariant(_ splits: DatasetSplits, map: ImageNetClassMap, subset: ClassSubset) throws -> DatasetSplits {
    let half = Set(BaseNovelSplit(labels: 0..<map.count).selected(subset))
    let kept = map.labels.indices.filter { half.contains(map.labels[$0]) }.sorted { map.labels[$0] < map.labels[$1] }
    guard !kept.isEmpty else {
        let which = subset == .base ? "base" : "novel"
        throw DatasetError(.inconsistent, "\(splits.name) has none of ImageNet's \(which) classes (ImageNet labels \(subset == .base ? "0..<\((map.count + 1) / 2)" : "\((map.count + 1) / 2)..<\(map.count)") by sorted wnid), so its \(which) test set is empty")
    }
    let relabel = Dictionary(uniqueKeysWithValues: kept.enumerated().map { ($1, $0) })
    func apply(_ list: [Datum]) -> [Datum] {
        list.compactMap { d in relabel[d.label].map { Datum(path: d.path, label: $0, className: d.className) } }
    }
    var out = splits
    out.train = apply(splits.train)
    out.val = apply(splits.val)
    out.test = apply(splits.test)
    out.classNames = kept.map { $0 < splits.classNames.count ? splits.classNames[$0] : "" }
    out.imageNetClasses = ImageNetClassMap(count: map.count, labels: kept.map { map.labels[$0] })
    return out
}

// MARK: - CoOp's cached few-shot draws

/// `<dataset folder>/split_fewshot/shot_K-seed_S.pkl` when it exists, for the datasets CoOp
/// draws from (not the test-only ImageNet variants, image folders, Fashion-MNIST or CIFAR-100-LT).
func coopCacheFile(_ splits: DatasetSplits, dataset: DatasetName, shots: Int, seed: Int) -> URL? {
    guard dataset.folder != nil, !dataset.isTestOnly, dataset != .imageFolder, dataset != .fashionMNIST,
          dataset.imbalanceRatio == nil else { return nil }
    var dir = splits.imageRoot.standardizedFileURL
    for _ in dataset.imageSubfolder.split(separator: "/") { dir.deleteLastPathComponent() }
    let file = FewShotCache.url(datasetDirectory: dir, shots: shots, seed: seed)
    return DatasetFiles.isFile(file) ? file : nil
}

/// What to do about a cache file that does not fit, for the tail of the errors.
private func ignoreHint(_ file: URL) -> String {
    "It is CoOp's cached few-shot draw; to draw anew instead, turn off the CoOp cache (SelectionOptions.useCoOpCache = false; the CLI's --no-coop-cache) or move \(file.path) away"
}

/// Reads and checks CoOp's cache file against `splits` (see ``select(_:dataset:options:)``).
func readCoOpCache(_ file: URL, splits: DatasetSplits, dataset: DatasetName) throws -> (train: [Datum], val: [Datum]) {
    let cache: FewShotCache
    do {
        do {
            cache = try FewShotCache(contentsOf: file, imageRoot: splits.imageRoot)
        } catch SamplingError.cachePathOutsideRoot {
            cache = try rerootedCache(file, splits: splits)
        }
    } catch let e as DatasetError {
        throw e
    } catch {
        throw DatasetError(.malformedFile, "\(error). \(ignoreHint(file))")
    }
    try checkCache(cache.train, split: "train", against: splits.train, file: file, splits: splits)
    if dataset == .imageNet {
        // CoOp's ImageNet caches train only; its val is the whole val set (a "val" list is ignored).
        return (cache.train, splits.val)
    }
    guard let val = cache.val else {
        throw DatasetError(.inconsistent, "\(file.path) holds no \"val\" list; CoOp's \(dataset.coopName ?? dataset.rawValue) writes one (only ImageNet's holds train alone). \(ignoreHint(file))")
    }
    try checkCache(val, split: "val", against: splits.val, file: file, splits: splits)
    return (cache.train, val)
}

/// The cache read with its absolute paths made relative to the folder it was written with, found
/// as the prefix of its first train image whose shortest tail is an image of `splits.train`.
private func rerootedCache(_ file: URL, splits: DatasetSplits) throws -> FewShotCache {
    var cache = try FewShotCache(contentsOf: file, imageRoot: URL(fileURLWithPath: "/"))
    guard let first = cache.train.first else { return cache }
    let known = Set(splits.train.map(\.path))
    let parts = first.path.split(separator: "/", omittingEmptySubsequences: false)
    guard let k = (1...parts.count).first(where: { known.contains(parts.suffix($0).joined(separator: "/")) }) else {
        throw DatasetError(.inconsistent, "\(file.path): train[0] is /\(first.path), and no tail of it is an image of \(splits.name)'s train split under \(splits.imageRoot.path): the file was written for other data. \(ignoreHint(file))")
    }
    let prefix = parts.dropLast(k).joined(separator: "/") + "/"
    func strip(_ list: [Datum], _ name: String) throws -> [Datum] {
        try list.enumerated().map { i, d in
            guard d.path.hasPrefix(prefix) else {
                throw DatasetError(.inconsistent, "\(file.path): \(name)[\(i)] is /\(d.path), not under /\(prefix.dropLast()), the image folder train[0] was written from. \(ignoreHint(file))")
            }
            return Datum(path: String(d.path.dropFirst(prefix.count)), label: d.label, className: d.className)
        }
    }
    cache.train = try strip(cache.train, "train")
    cache.val = try cache.val.map { try strip($0, "val") }
    return cache
}

/// Every cached item is an image of `split` (present on disk), with the dataset's label and class name.
private func checkCache(_ items: [Datum], split name: String, against list: [Datum], file: URL, splits: DatasetSplits) throws {
    let index = Dictionary(list.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
    let fm = FileManager.default
    for (i, d) in items.enumerated() {
        let at = "\(file.path): \(name)[\(i)] (\(d.path))"
        guard d.label < splits.classNames.count else {
            throw DatasetError(.inconsistent, "\(at) has label \(d.label), but \(splits.name) has \(splits.classNames.count) classes (labels 0..<\(splits.classNames.count)). \(ignoreHint(file))")
        }
        guard d.className == splits.classNames[d.label] else {
            throw DatasetError(.inconsistent, "\(at) names label \(d.label) '\(d.className)', but \(splits.name) calls it '\(splits.classNames[d.label])'. \(ignoreHint(file))")
        }
        guard let mine = index[d.path] else {
            throw DatasetError(.inconsistent, "\(at) is not an image of \(splits.name)'s \(name) split under \(splits.imageRoot.path). \(ignoreHint(file))")
        }
        guard mine.label == d.label else {
            throw DatasetError(.inconsistent, "\(at) has label \(d.label) ('\(d.className)'), but \(splits.name) labels that image \(mine.label) ('\(mine.className)'). \(ignoreHint(file))")
        }
        guard fm.fileExists(atPath: splits.imageRoot.appendingPathComponent(d.path).path) else {
            throw DatasetError(.missingImages, "\(at) is missing under \(splits.imageRoot.path). \(ignoreHint(file))",
                               missingPaths: [splits.imageRoot.appendingPathComponent(d.path).path], missingCount: 1)
        }
    }
}
