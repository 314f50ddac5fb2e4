import Foundation

/// Which images of a dataset a run uses: few-shot draw, imbalance, base/novel classes.
public struct SelectionOptions: Codable, Equatable, Sendable {
    /// Shots per class; nil or <= 0 = all images.
    public var shots: Int?
    public var seed: Int
    /// Class-imbalance tau in (0, 1]; the head keeps `shots` images (METHODS.md section 4).
    public var imbalance: Double?
    public var subset: ClassSubset

    public init(shots: Int? = nil, seed: Int = 1, imbalance: Double? = nil, subset: ClassSubset = .all) {
        self.shots = shots; self.seed = seed; self.imbalance = imbalance; self.subset = subset
    }
}

/// The dataset after selection: the same shape as `DatasetSplits`, relabelled when a subset is taken.
public typealias Selection = DatasetSplits

/// CoOp's order: the few-shot draw on all classes (train, then val with min(K, 4) shots; ImageNet
/// draws train only), then the imbalance profile on the drawn train list, then base/novel
/// subsampling decided by the labels of train. A pure function of (dataset, options).
public func select(_ splits: DatasetSplits, dataset: DatasetName, options o: SelectionOptions) throws -> Selection {
    var s = splits
    if let shots = o.shots, shots > 0 {
        let few = fewShotSplits(train: splits.train, val: splits.val, shots: shots, seed: o.seed,
                                sampleVal: dataset != .imageNet)
        s.train = few.train
        s.val = few.val
    }
    if let tau = o.imbalance {
        guard let shots = o.shots, shots > 0 else {
            throw DatasetError(.inconsistent, "--imbalance needs --shots (the head classes keep that many images)")
        }
        s.train = try imbalancedFewShot(s.train, tau: tau, headShots: shots)
    }
    return subsampleClasses(s, subset: o.subset)
}
