import Foundation

/// One labelled image of a dataset, as Dassl's `Datum`: a path relative to the dataset's image
/// root, the label, and the class name.
public struct Datum: Equatable, Hashable, Sendable, Codable {
    public var path: String
    public var label: Int
    public var className: String

    public init(path: String, label: Int, className: String) {
        self.path = path
        self.label = label
        self.className = className
    }
}

/// A dataset as the CoOp papers use it: train / val / test lists, the class names indexed by
/// label, the folder image paths are relative to, and the hand-written prompt template.
public struct DatasetSplits: Sendable {
    public var name: String
    public var imageRoot: URL
    public var train: [Datum]
    public var val: [Datum]
    public var test: [Datum]
    public var classNames: [String]
    /// Zero-shot template with `{}` for the class name, e.g. "a photo of a {}.".
    public var template: String
    /// For the ImageNet variants: each class's ImageNet label, which base/novel selection splits
    /// by (see ``select(_:dataset:options:)``); nil for every other dataset.
    public var imageNetClasses: ImageNetClassMap?
    /// Set by ``select(_:dataset:options:)``: the path of CoOp's cached few-shot draw
    /// (`<dataset folder>/split_fewshot/shot_K-seed_S.pkl`) the train (and val) lists were read
    /// from; nil when the draw was made here (or there was none).
    public var coopCache: String?

    public init(name: String, imageRoot: URL, train: [Datum], val: [Datum], test: [Datum],
                classNames: [String], template: String, imageNetClasses: ImageNetClassMap? = nil,
                coopCache: String? = nil) {
        self.name = name; self.imageRoot = imageRoot; self.train = train; self.val = val; self.test = test
        self.classNames = classNames; self.template = template
        self.imageNetClasses = imageNetClasses; self.coopCache = coopCache
    }
}

/// Where an ImageNet variant's classes sit among ImageNet's: `labels[k]` is the ImageNet label of
/// the variant's class `k` (its wnid's position among the `count` sorted wnids of
/// `classnames.txt`, which is ImageNet's label when its class folders are those wnids).
public struct ImageNetClassMap: Sendable, Equatable {
    /// The number of ImageNet classes (1000).
    public var count: Int
    /// ImageNet label of each class of the variant, indexed by the variant's label.
    public var labels: [Int]

    public init(count: Int, labels: [Int]) {
        self.count = count; self.labels = labels
    }
}
