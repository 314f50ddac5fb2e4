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

    public init(name: String, imageRoot: URL, train: [Datum], val: [Datum], test: [Datum],
                classNames: [String], template: String) {
        self.name = name; self.imageRoot = imageRoot; self.train = train; self.val = val; self.test = test
        self.classNames = classNames; self.template = template
    }
}
