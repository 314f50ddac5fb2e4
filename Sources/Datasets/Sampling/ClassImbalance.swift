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

/// How an imbalance value thins a training list.
///
/// - `tau` (NPT's and CPT's protocol, the default): classes in label order, the head keeps the shot
///   count (16), class k keeps `max(1, floor(16 * tau^(k/(K-1))))` (``imbalanceShotCounts``).
/// - `candle` (Candle, KDD'24, reused by PromptLT): classes ranked by their count in the list,
///   largest first, ties in order of first appearance; the class at rank i keeps
///   `int(max(img_max * r^(i/(C-1)), 1))` of its items, img_max the largest class count, r the
///   imbalance value (e.g. 0.02; ImageNet 0.01). Only the training list is thinned (val is not).
public enum ImbalanceProfile: String, Codable, CaseIterable, Sendable {
    case tau
    case candle
}

/// The items each class keeps under Candle's rule with ratio `r` in (0, 1]: positions into the
/// list (given by its labels), in list order; each class keeps its first n_i items.
public func candleImbalancedIndices(labels: [Int], ratio r: Double) throws -> [Int] {
    guard r > 0, r <= 1 else { throw SamplingError.invalidImbalance(tau: r) }
    var counts: [Int: Int] = [:], order: [Int] = []
    for y in labels {
        if counts[y] == nil { order.append(y) }
        counts[y, default: 0] += 1
    }
    // Ranked by count, largest first; ties keep first-appearance order (a stable sort).
    let ranked = order.enumerated().sorted { a, b in
        let (ca, cb) = (counts[a.element]!, counts[b.element]!)
        return ca != cb ? ca > cb : a.offset < b.offset
    }.map(\.element)
    let imgMax = Double(ranked.first.map { counts[$0]! } ?? 0)
    let last = Double(max(ranked.count - 1, 1))
    var quota: [Int: Int] = [:]
    for (i, y) in ranked.enumerated() {
        // Python's int() of a positive float truncates, as rounding down does.
        quota[y] = ranked.count == 1 ? Int(imgMax) : Int(max(imgMax * Foundation.pow(r, Double(i) / last), 1).rounded(.towardZero))
    }
    var out: [Int] = []
    for (i, y) in labels.enumerated() where quota[y]! > 0 {
        out.append(i)
        quota[y]! -= 1
    }
    return out
}

/// The list thinned by Candle's rule (``candleImbalancedIndices``).
public func candleImbalanced(_ list: [Datum], ratio: Double) throws -> [Datum] {
    try candleImbalancedIndices(labels: list.map(\.label), ratio: ratio).map { list[$0] }
}
