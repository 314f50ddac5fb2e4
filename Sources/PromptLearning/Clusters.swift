import Foundation
import TensorCore

// CPT's class clusters (arXiv 2605.11939, a documented reconstruction: docs/METHODS-NOTES.md):
// seeded K-means on the frozen, normalised zero-shot text features, computed once per run and
// cached per (features, options), so every run on the same dataset, classes and options shares
// one assignment.

/// How K-means picks its first centres (`tetf.kmeans_init`).
public enum ClusterInitialisation: Int, Codable, Sendable, CaseIterable {
    /// k-means++ (Arthur & Vassilvitskii 2007): the first centre uniform, each next one drawn with
    /// probability proportional to the squared distance to the nearest centre so far.
    case kMeansPlusPlus = 0
    /// M distinct classes drawn uniformly.
    case random = 1
}

/// What becomes of a cluster of one class, which has no within-cluster ETF (`tetf.singletons`).
public enum SingletonRule: Int, Codable, Sendable, CaseIterable {
    /// Left out of L_TETF's mean over clusters (the default).
    case exclude = 0
    /// Counted in the mean with the value 0.
    case count = 1
    /// Its class joins the cluster whose centroid is nearest, until no singleton is left (fewer
    /// clusters than asked).
    case merge = 2
}

/// The K-means settings of CPT's within-cluster ETF term, from its parameters.
public struct ClusterOptions: Hashable, Sendable {
    /// Clusters asked for; 0: ceil(sqrt(K)).
    public var count: Int
    public var initialisation: ClusterInitialisation
    public var singletons: SingletonRule
    public var seed: UInt64
    /// Runs from successive initialisations of one seeded stream; the one with the least
    /// within-cluster sum of squares is kept (the first of equals). Lloyd's iterations stop in
    /// local minima (two clusters of two, started from one cluster's two members, stay mixed).
    public var restarts: Int
    /// Lloyd iterations at most per run (they stop when no class changes cluster).
    public var maxIterations: Int

    public init(count: Int = 0, initialisation: ClusterInitialisation = .kMeansPlusPlus, singletons: SingletonRule = .exclude,
                seed: UInt64 = 0, restarts: Int = 10, maxIterations: Int = 100) {
        self.count = count; self.initialisation = initialisation; self.singletons = singletons; self.seed = seed
        self.restarts = restarts; self.maxIterations = maxIterations
    }

    /// The options a `tetf` term's parameters say (the parameters are checked integers by then);
    /// its `seed` -1 (the default) is the run's seed `runSeed`.
    public init(parameters p: [String: Float], runSeed: UInt64) {
        let seed = p["seed"] ?? -1
        self.init(count: Int(p["clusters"] ?? 0), initialisation: ClusterInitialisation(rawValue: Int(p["kmeans_init"] ?? 0)) ?? .kMeansPlusPlus,
                  singletons: SingletonRule(rawValue: Int(p["singletons"] ?? 0)) ?? .exclude, seed: seed < 0 ? runSeed : UInt64(seed),
                  restarts: Int(p["restarts"] ?? 10))
    }

    /// The cluster count for `classes` classes.
    public func clusters(classes k: Int) -> Int { count > 0 ? count : Int(Double(k).squareRoot().rounded(.up)) }
}

/// Seeded K-means (squared Euclidean distance, Lloyd iterations, `options.restarts` runs) of the
/// rows of `x` (N x D) into `m` clusters: the cluster of each row, numbered in order of each
/// cluster's first row. Ties go to the lower centre index; a cluster left empty takes the row
/// farthest from its centre. With `singletons` .merge, clusters of one row are merged into the
/// nearest other cluster.
public func kMeans(_ x: Tensor, clusters m: Int, options: ClusterOptions) -> [Int] {
    let (n, d) = (x.rows, x.lastDim)
    precondition(m >= 1 && m <= n, "kMeans: \(m) clusters for \(n) rows")
    let rows = (0..<n).map { i in (0..<d).map { Double(x[i * d + $0]) } }
    func dist(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } }
    var rng = SeededGenerator(seed: options.seed)
    var best: (inertia: Double, assignment: [Int])?
    for _ in 0..<max(1, options.restarts) {
        let run = lloyd(rows, clusters: m, options: options, rng: &rng)
        if best == nil || run.inertia < best!.inertia { best = run }
    }
    var assignment = best!.assignment
    if options.singletons == .merge {
        while true {
            var sizes = [Int: Int]()
            for a in assignment { sizes[a, default: 0] += 1 }
            guard sizes.count > 1, let lone = (0..<n).first(where: { sizes[assignment[$0]] == 1 }) else { break }
            let others = Set(assignment).subtracting([assignment[lone]]).sorted()
            func centroid(_ c: Int) -> [Double] {
                let members = (0..<n).filter { assignment[$0] == c }
                return (0..<d).map { x in members.reduce(0.0) { $0 + rows[$1][x] } / Double(members.count) }
            }
            assignment[lone] = others.min { dist(rows[lone], centroid($0)) < dist(rows[lone], centroid($1)) }!
        }
    }
    // Number clusters by their first row, so that equal partitions give equal assignments.
    var renumber: [Int: Int] = [:]
    return assignment.map { a in
        if let r = renumber[a] { return r }
        renumber[a] = renumber.count
        return renumber[a]!
    }
}

/// One K-means run from a seeded initialisation: the assignment and its within-cluster sum of squares.
private func lloyd(_ rows: [[Double]], clusters m: Int, options: ClusterOptions,
                   rng: inout SeededGenerator) -> (inertia: Double, assignment: [Int]) {
    let (n, d) = (rows.count, rows[0].count)
    func dist(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } }
    func uniform() -> Double { Double(rng.next() >> 11) * (1.0 / Double(1 << 53)) }

    var chosen: [Int] = []
    switch options.initialisation {
    case .random:
        var pool = Array(0..<n)
        for j in 0..<m {
            let r = j + Int(rng.next() % UInt64(n - j))
            pool.swapAt(j, r)
            chosen.append(pool[j])
        }
    case .kMeansPlusPlus:
        chosen.append(Int(rng.next() % UInt64(n)))
        var nearest = rows.map { dist($0, rows[chosen[0]]) }
        while chosen.count < m {
            let total = nearest.reduce(0, +)
            var next: Int
            if total > 0 {
                let u = uniform() * total
                var acc = 0.0
                next = nearest.lastIndex { $0 > 0 }!
                for (i, w) in nearest.enumerated() where w > 0 {
                    acc += w
                    if acc > u { next = i; break }
                }
            } else {
                // Every row coincides with a centre already: the first row not chosen.
                next = (0..<n).first { !chosen.contains($0) }!
            }
            chosen.append(next)
            for i in 0..<n { nearest[i] = min(nearest[i], dist(rows[i], rows[next])) }
        }
    }
    var centres = chosen.map { rows[$0] }
    var assignment = [Int](repeating: -1, count: n)
    for _ in 0..<max(1, options.maxIterations) {
        var changed = false
        for i in 0..<n {
            var best = 0, bestD = dist(rows[i], centres[0])
            for c in 1..<m { let dc = dist(rows[i], centres[c]); if dc < bestD { best = c; bestD = dc } }
            if assignment[i] != best { assignment[i] = best; changed = true }
        }
        // An empty cluster takes the row farthest from its own centre (from a cluster of 2 or more).
        for c in 0..<m where !assignment.contains(c) {
            var sizes = [Int](repeating: 0, count: m)
            for a in assignment { sizes[a] += 1 }
            var far = -1, farD = -1.0
            for i in 0..<n where sizes[assignment[i]] > 1 {
                let di = dist(rows[i], centres[assignment[i]])
                if di > farD { far = i; farD = di }
            }
            assignment[far] = c
            changed = true
        }
        centres = (0..<m).map { c in
            let members = (0..<n).filter { assignment[$0] == c }
            return (0..<d).map { x in members.reduce(0.0) { $0 + rows[$1][x] } / Double(members.count) }
        }
        if !changed { break }
    }
    let inertia = (0..<n).reduce(0.0) { $0 + dist(rows[$1], centres[assignment[$1]]) }
    return (inertia, assignment)
}

/// CPT's clusters of `k` classes from their normalised zero-shot text features: K-means with
/// `options`, cached per process by (features, options).
public func classClusters(zeroShot: Tensor, options: ClusterOptions) throws -> [Int] {
    let k = zeroShot.rows
    let m = options.clusters(classes: k)
    guard m <= k else {
        throw PromptError(.invalidSetting, "CPT asks for \(m) clusters (tetf.clusters) but the data has \(k) classes: set tetf.clusters to at most \(k), or 0 for ceil(sqrt(K))")
    }
    let key = ClusterCache.Key(features: zeroShot.data, dimension: zeroShot.lastDim, options: options)
    if let hit = ClusterCache.shared.get(key) { return hit }
    let assignment = kMeans(zeroShot, clusters: m, options: options)
    ClusterCache.shared.set(key, assignment)
    return assignment
}

/// The process's K-means results, so that the cells of a grid on one dataset cluster once.
final class ClusterCache: @unchecked Sendable {
    struct Key: Hashable { var features: [Float]; var dimension: Int; var options: ClusterOptions }
    static let shared = ClusterCache()
    private let lock = NSLock()
    private var entries: [Key: [Int]] = [:]
    func get(_ key: Key) -> [Int]? { lock.lock(); defer { lock.unlock() }; return entries[key] }
    func set(_ key: Key, _ value: [Int]) { lock.lock(); defer { lock.unlock() }; entries[key] = value }
}
