import Foundation

// Class imbalance (METHODS.md section 4): head classes keep 16 shots and class k (k = 0..K-1 in
// label order) keeps n_k = max(1, floor(16 * tau^(k / (K - 1)))) of its seeded 16-shot draw.

/// The shots each class keeps under imbalance `tau`: `n_k = max(1, floor(headShots * tau^(k/(K-1))))`
/// for `k = 0..<classCount` (computed in doubles with C's `pow`, as Python's `**` does).
///
/// - `tau = 1` is balanced (every class keeps `headShots`); smaller `tau` thins the tail
///   (0.25 imbalanced, 0.06 highly imbalanced); the last class gets `floor(headShots * tau)`.
/// - One class (`classCount == 1`, where `k / (K - 1)` is 0/0) counts as a head class: `[headShots]`.
/// - `tau` must lie in (0, 1]: `tau > 1` would ask the tail for more than the head, which a
///   `headShots`-shot draw cannot give, and `tau <= 0` or NaN has no meaning; both throw
///   `SamplingError.invalidImbalance`. `headShots` must be at least 1 and `classCount` non-negative.
public func imbalanceShotCounts(classCount: Int, tau: Double, headShots: Int = 16) throws -> [Int] {
    guard tau > 0, tau <= 1 else { throw SamplingError.invalidImbalance(tau: tau) }
    guard headShots >= 1 else { throw SamplingError.invalidHeadShots(headShots) }
    guard classCount >= 0 else { throw SamplingError.invalidClassCount(classCount) }
    if classCount == 1 { return [headShots] }
    let last = Double(classCount - 1)
    return (0..<classCount).map { k in
        let n = (Double(headShots) * Foundation.pow(tau, Double(k) / last)).rounded(.down)
        return max(1, Int(n))
    }
}

/// Positions into a few-shot list (given by its labels) that an imbalance profile keeps.
///
/// The classes are the distinct labels of the list, ranked in ascending label order (`k` is the
/// rank, `K` their number; with labels 0..<K the rank is the label). Class `k` keeps the first `n_k`
/// of its items in list order, that is the first `n_k` of its seeded draw (all of them when it has
/// fewer). Kept positions are returned in list order, so the result is a sub-list of the input.
public func imbalancedIndices(labels: [Int], tau: Double, headShots: Int = 16) throws -> [Int] {
    let sortedLabels = Array(Set(labels)).sorted()
    let counts = try imbalanceShotCounts(classCount: sortedLabels.count, tau: tau, headShots: headShots)
    var quota: [Int: Int] = [:]
    for (k, label) in sortedLabels.enumerated() { quota[label] = counts[k] }
    var out: [Int] = []
    for (i, label) in labels.enumerated() {
        let left = quota[label]!
        if left > 0 {
            out.append(i)
            quota[label] = left - 1
        }
    }
    return out
}

/// The imbalanced version of a few-shot list: a pure function of the list (normally the seeded
/// 16-shot draw from `fewShotSample` / `fewShotSplits`) and `tau`. See `imbalancedIndices` and
/// `imbalanceShotCounts`; `tau = 1` returns the list unchanged when no class has more than
/// `headShots` items.
public func imbalancedFewShot(_ fewShot: [Datum], tau: Double, headShots: Int = 16) throws -> [Datum] {
    try imbalancedIndices(labels: fewShot.map(\.label), tau: tau, headShots: headShots).map { fewShot[$0] }
}
