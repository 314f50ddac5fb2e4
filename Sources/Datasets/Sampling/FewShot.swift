import Foundation

// Few-shot sampling exactly as Dassl's `DatasetBase.generate_fewshot_dataset` and
// `split_dataset_by_label` do it, and as CoOp's dataset classes call them.

/// The labels of `labels` in order of first appearance, each with the positions of its items in
/// list order: Dassl's `split_dataset_by_label` (a `defaultdict(list)`, which iterates in
/// insertion order).
public func labelGroups(_ labels: [Int]) -> [(label: Int, indices: [Int])] {
    var slot: [Int: Int] = [:]
    var groups: [(label: Int, indices: [Int])] = []
    for (i, label) in labels.enumerated() {
        if let s = slot[label] {
            groups[s].indices.append(i)
        } else {
            slot[label] = groups.count
            groups.append((label, [i]))
        }
    }
    return groups
}

/// Dassl's `generate_fewshot_dataset(data, num_shots=shots, repeat=repeat)` on a list given by its
/// labels, returning positions into that list: for each label in order of first appearance,
/// `random.sample(items, shots)` when the label has at least `shots` items; otherwise all its items
/// in list order, or `random.choices(items, k=shots)` when `repeat` is true. `shots <= 0` returns
/// every position (`0..<labels.count`) and draws nothing.
public func fewShotIndices(labels: [Int], shots: Int, rng: inout PythonRandom, repeat repeats: Bool = false) -> [Int] {
    guard shots > 0 else { return Array(labels.indices) }
    var out: [Int] = []
    for group in labelGroups(labels) {
        let items = group.indices
        if items.count >= shots {
            out += rng.sample(items, k: shots)
        } else if repeats {
            out += rng.choices(items, k: shots)
        } else {
            out += items
        }
    }
    return out
}

/// Dassl's `generate_fewshot_dataset(data, num_shots=shots, repeat=repeat)`: `shots` items per
/// label, labels in order of first appearance, items in draw order. See `fewShotIndices`.
public func fewShotSample(_ data: [Datum], shots: Int, rng: inout PythonRandom, repeat repeats: Bool = false) -> [Datum] {
    guard shots > 0 else { return data }
    return fewShotIndices(labels: data.map(\.label), shots: shots, rng: &rng, repeat: repeats).map { data[$0] }
}

/// The train and val lists of a few-shot experiment (what CoOp caches in
/// `split_fewshot/shot_{K}-seed_{S}.pkl`).
public struct FewShotSplit: Sendable, Equatable {
    public var train: [Datum]
    public var val: [Datum]

    public init(train: [Datum], val: [Datum]) {
        self.train = train
        self.val = val
    }
}

/// The validation shots CoOp draws for `shots` training shots: `min(shots, 4)`.
public func fewShotValidationShots(_ shots: Int) -> Int { min(shots, 4) }

/// What CoOp's dataset classes do for `NUM_SHOTS = shots` and `SEED = seed`:
/// `random.seed(seed)` (Dassl's `set_random_seed`, once at start-up; CoOp seeds only when the seed is
/// set, we always do, and a negative seed acts as its absolute value, as in Python), then
/// `train = generate_fewshot_dataset(train, num_shots=shots)`, then
/// `val = generate_fewshot_dataset(val, num_shots=min(shots, 4))` from the same stream.
///
/// `sampleVal`: every CoOp dataset samples val except ImageNet, whose class samples train only
/// (its pickle holds only "train") and uses the full test set as val. Pass `false` for ImageNet:
/// `val` is then returned unchanged and nothing is drawn after train.
///
/// `shots <= 0` means all data: both lists are returned unchanged and nothing is drawn.
/// The result equals Python's only if nothing else drew from Python's `random` between the seed and
/// the sampling, which holds for CoOp when the split json (`split_zhou_*.json`) already exists
/// (building it shuffles with the same generator first).
public func fewShotSplits(train: [Datum], val: [Datum], shots: Int, seed: Int,
                          sampleVal: Bool = true, repeat repeats: Bool = false) -> FewShotSplit {
    guard shots > 0 else { return FewShotSplit(train: train, val: val) }
    var rng = PythonRandom(seed: seed)
    let fewTrain = fewShotSample(train, shots: shots, rng: &rng, repeat: repeats)
    let fewVal = sampleVal ? fewShotSample(val, shots: fewShotValidationShots(shots), rng: &rng, repeat: repeats) : val
    return FewShotSplit(train: fewTrain, val: fewVal)
}
