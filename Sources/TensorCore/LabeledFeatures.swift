/// Feature vectors with integer labels and class names: what training, evaluation and analysis
/// read. `features` is [V, N, D]: V views (augmentations) of N items of dimension D; V = 1 for
/// test-time features. Files of this (the feature cache) live in the Features target.
public struct LabeledFeatures: Sendable, Equatable {
    public var features: Tensor        // V, N, D
    public var labels: [Int]           // N
    public var classNames: [String]    // K

    public init(features: Tensor, labels: [Int], classNames: [String]) {
        precondition(features.rank == 3 && features.shape[1] == labels.count,
                     "LabeledFeatures: features \(features.shape) must be [views, \(labels.count), dim]")
        self.features = features
        self.labels = labels
        self.classNames = classNames
    }

    public var views: Int { features.shape[0] }
    public var count: Int { features.shape[1] }
    public var dimension: Int { features.shape[2] }

    /// Features of one view: N, D.
    public func view(_ v: Int) -> Tensor { features.slice(rows: v..<(v + 1)).reshaped([count, dimension]) }
}
