import Foundation
import TensorCore

// CPT (cluster-aware neural-collapse prompt tuning, CVPR'26, arXiv 2605.11939; no public code):
// a documented reconstruction from the paper's text (docs/METHODS-NOTES.md). Three terms that
// join any base method's loss (`coop+cpt`, `maple+cpt`; `cpt` alone is `coop+cpt`):
// 0.25 L_TETF + 0.15 L_CC + 0.10 L_RS.

/// L_TETF: mean over clusters m of ||T_m T_m^T - E_m||_F^2, T_m the cluster's rows of the
/// normalised text features (so T_m T_m^T is their cosine matrix) and E_m the Gram matrix of a
/// k_m-class simplex ETF (1 on the diagonal, -1/(k_m - 1) off it). A cluster of one class has no
/// ETF: `singletons` .exclude leaves it out of the mean, .count counts it as 0 (.merge leaves none).
/// The gradient of one cluster's distance to t_i is 4 sum_j D_ij t_j, D = T_m T_m^T - E_m.
public func withinClusterETF(text t: Tensor, clusters: [Int], singletons: SingletonRule = .exclude) -> (value: Double, dText: Tensor) {
    let (k, d) = (t.rows, t.lastDim)
    precondition(clusters.count == k, "withinClusterETF: \(clusters.count) cluster labels for \(k) classes")
    var members: [Int: [Int]] = [:]
    for (i, c) in clusters.enumerated() { members[c, default: []].append(i) }
    let groups = members.keys.sorted().map { members[$0]! }
    let counted = groups.filter { $0.count > 1 || singletons == .count }.count
    var grad = [Double](repeating: 0, count: k * d)
    guard counted > 0 else { return (0, Tensor(zeros: t.shape)) }
    var value = 0.0
    for g in groups where g.count > 1 {
        let off = -1 / Double(g.count - 1)
        for (a, i) in g.enumerated() {
            for (b, j) in g.enumerated() {
                var dot = 0.0
                for x in 0..<d { dot += Double(t[i * d + x]) * Double(t[j * d + x]) }
                let diff = dot - (a == b ? 1 : off)
                value += diff * diff / Double(counted)
                let coef = 4 * diff / Double(counted)
                for x in 0..<d { grad[i * d + x] += coef * Double(t[j * d + x]) }
            }
        }
    }
    return (value, Tensor(shape: t.shape, data: grad.map(Float.init)))
}

/// L_CC: sum_b w_b ||f_b - t_{y_b}||^2 with class-balanced weights w_b proportional to 1/n_{y_b},
/// normalised to sum to 1 over the batch: n the class's count in the batch (`counts` nil: each
/// class present weighs the same, whatever its number of images) or in the training data
/// (`counts`). f normalised image features (B x D), t normalised text features (K x D).
public func classBalancedCompactness(images f: Tensor, labels: [Int], text t: Tensor,
                                     counts: [Int]? = nil) -> (value: Double, dText: Tensor, dImages: Tensor) {
    let (b, d) = (f.rows, f.lastDim)
    precondition(labels.count == b, "classBalancedCompactness: \(labels.count) labels for \(b) images")
    var inBatch: [Int: Int] = [:]
    for y in labels { inBatch[y, default: 0] += 1 }
    let raw = labels.map { 1 / Double(max(1, counts?[$0] ?? inBatch[$0]!)) }
    let total = raw.reduce(0, +)
    var value = 0.0
    var dText = [Double](repeating: 0, count: t.count)
    var dImages = Tensor(zeros: f.shape)
    for i in 0..<b {
        let (y, w) = (labels[i], raw[i] / total)
        for x in 0..<d {
            let diff = Double(f[i * d + x]) - Double(t[y * d + x])
            value += w * diff * diff
            dImages[i * d + x] = Float(2 * w * diff)
            dText[y * d + x] -= 2 * w * diff
        }
    }
    return (value, Tensor(shape: t.shape, data: dText.map(Float.init)), dImages)
}

/// L_RS: mean over the K x D elements of |t - t_zs|, t_zs the frozen zero-shot text features.
public func frozenTextL1(text t: Tensor, zeroShot z: Tensor) -> (value: Double, dText: Tensor) {
    meanAbsoluteDifference(t, z)
}

/// CPT's L_TETF, with the K-means options as parameters (integers; see `ClusterOptions`).
public struct WithinClusterETFTerm: ObjectiveTerm {
    public static let key = "tetf", codingName = "withinClusterETF"
    public static let parameters = [
        TermParameter("clusters", default: 0, maximum: 1_048_576, help: "CPT's K-means cluster count M; 0: ceil(sqrt(K))"),
        TermParameter("kmeans_init", default: 0, maximum: 1, help: "K-means initialisation: 0 k-means++, 1 random classes"),
        TermParameter("singletons", default: 0, maximum: 2,
                      help: "a cluster of one class: 0 left out of L_TETF's mean, 1 counted as 0, 2 merged into the nearest cluster"),
        TermParameter("seed", default: -1, minimum: -1, maximum: 16_777_216, help: "K-means seed; -1: the run's seed"),
        TermParameter("restarts", default: 10, minimum: 1, maximum: 1000, help: "K-means runs; the one with the least within-cluster sum of squares is kept"),
    ]
    public static var needs: Set<TermInput> { [.clusters] }
    public static func problem(weight: Float, parameters: [String: Float]) -> String? {
        for p in ["clusters", "kmeans_init", "singletons", "seed", "restarts"] where (parameters[p] ?? 0).rounded() != parameters[p] ?? 0 {
            return "parameter \(p) of loss term 'tetf' must be a whole number (got \(parameters[p]!))"
        }
        return nil
    }
    public var singletons: SingletonRule
    public init(parameters: [String: Float]) { singletons = SingletonRule(rawValue: Int(parameters["singletons"] ?? 0)) ?? .exclude }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = withinClusterETF(text: a.text, clusters: a.inputs.clusters!, singletons: singletons)
        return TermResult(value: v, dText: g)
    }
}

/// CPT's L_CC. It reads the image features but does not need trainable image prompts: its text
/// gradient trains text-only methods, and its image gradient joins where the image tower is
/// prompted (`readsImages` stays false so that `coop+cpt` trains from cached features).
public struct ClassBalancedCompactnessTerm: ObjectiveTerm {
    public static let key = "cc", codingName = "classBalancedCompactness"
    public static let parameters = [
        TermParameter("balance", default: 0, maximum: 1,
                      help: "class weights 1/n_c with n_c the class's images in the batch (0) or in the training data (1)"),
    ]
    public static var needs: Set<TermInput> { [.classCounts] }
    public static func problem(weight: Float, parameters: [String: Float]) -> String? {
        let b = parameters["balance"] ?? 0
        return b == 0 || b == 1 ? nil : "parameter balance of loss term 'cc' must be 0 or 1 (got \(b))"
    }
    public var trainingCounts: Bool
    public init(parameters: [String: Float]) { trainingCounts = parameters["balance"] == 1 }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, gt, gf) = classBalancedCompactness(images: a.images, labels: a.labels, text: a.text,
                                                   counts: trainingCounts ? a.inputs.classCounts! : nil)
        return TermResult(value: v, dText: gt, dImages: gf)
    }
}

/// CPT's L_RS: the L1 anchor of the learned text features to the frozen zero-shot ones.
public struct FrozenTextL1Term: ObjectiveTerm {
    public static let key = "rs", codingName = "frozenTextL1"
    public static var needs: Set<TermInput> { [.zeroShot] }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = frozenTextL1(text: a.text, zeroShot: a.inputs.zeroShot!)
        return TermResult(value: v, dText: g)
    }
}
