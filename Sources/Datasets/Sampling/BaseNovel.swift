import Foundation

// Base-to-novel class splits as CoOp/CoCoOp's `OxfordPets.subsample_classes`.

/// Which classes an experiment uses (CoOp's `DATASET.SUBSAMPLE_CLASSES`; raw values are CoOp's).
public enum ClassSubset: String, Sendable, CaseIterable, Codable {
    /// Every class, labels unchanged.
    case all
    /// The first `ceil(n / 2)` labels in ascending order, relabelled 0..<m.
    case base
    /// The remaining labels, relabelled from 0 in ascending order (CoOp calls it "new").
    case novel = "new"
}

/// The base/novel halves of a label set: labels sorted ascending, `m = ceil(n / 2)`,
/// base = the first `m`, novel = the rest; each half is relabelled from 0 in sorted order.
public struct BaseNovelSplit: Sendable, Equatable {
    /// The distinct labels, ascending.
    public let labels: [Int]
    /// Original labels of the base classes (new label = position).
    public let base: [Int]
    /// Original labels of the novel classes (new label = position).
    public let novel: [Int]

    /// From any labels (duplicates and order do not matter).
    public init<S: Sequence>(labels: S) where S.Element == Int {
        self.labels = Array(Set(labels)).sorted()
        let m = (self.labels.count + 1) / 2
        base = Array(self.labels[..<m])
        novel = Array(self.labels[m...])
    }

    /// From a dataset list, as CoOp does with its first argument (the train list).
    public init(_ data: [Datum]) { self.init(labels: data.map(\.label)) }

    /// The original labels a subset keeps, in new-label order (`.all`: every label).
    public func selected(_ subset: ClassSubset) -> [Int] {
        switch subset {
        case .all: return labels
        case .base: return base
        case .novel: return novel
        }
    }

    /// Original label -> new label for a subset (`.all`: the identity on `labels`).
    public func relabeling(_ subset: ClassSubset) -> [Int: Int] {
        if subset == .all { return Dictionary(uniqueKeysWithValues: labels.map { ($0, $0) }) }
        return Dictionary(uniqueKeysWithValues: selected(subset).enumerated().map { ($1, $0) })
    }

    /// The items of `data` whose class is in the subset, in list order, relabelled; paths and class
    /// names are carried. `.all` returns `data` unchanged (as CoOp does, labels not renumbered).
    public func apply(_ subset: ClassSubset, to data: [Datum]) -> [Datum] {
        if subset == .all { return data }
        let map = relabeling(subset)
        return data.compactMap { item in
            map[item.label].map { Datum(path: item.path, label: $0, className: item.className) }
        }
    }

    /// The class names of a subset in new-label order, given the names indexed by original label.
    /// `.all` returns `allClassNames` unchanged; a label outside `allClassNames` gets "".
    public func classNames(_ subset: ClassSubset, allClassNames: [String]) -> [String] {
        if subset == .all { return allClassNames }
        return selected(subset).map { $0 >= 0 && $0 < allClassNames.count ? allClassNames[$0] : "" }
    }
}

/// CoOp's `subsample_classes(*lists, subsample=subset)`: the split is made from the labels of the
/// first list (CoOp passes train, after few-shot sampling), then applied to every list.
/// `.all` returns the lists unchanged.
public func subsampleClasses(_ lists: [[Datum]], subset: ClassSubset) -> [[Datum]] {
    guard subset != .all, let first = lists.first else { return lists }
    let split = BaseNovelSplit(first)
    return lists.map { split.apply(subset, to: $0) }
}

/// `DatasetSplits` restricted to a subset: the split comes from `train`, and train/val/test and
/// the class names are relabelled together.
public func subsampleClasses(_ splits: DatasetSplits, subset: ClassSubset) -> DatasetSplits {
    guard subset != .all else { return splits }
    let split = BaseNovelSplit(splits.train)
    var out = splits
    out.train = split.apply(subset, to: splits.train)
    out.val = split.apply(subset, to: splits.val)
    out.test = split.apply(subset, to: splits.test)
    out.classNames = split.classNames(subset, allClassNames: splits.classNames)
    return out
}
