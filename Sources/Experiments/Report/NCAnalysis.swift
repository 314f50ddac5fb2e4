import Analysis
import Foundation

// The NPT paper's central analysis: does the neural-collapse optimality of the text-to-image
// representation track accuracy? Each measure is set against test accuracy across runs, one point
// per (finished run, evaluation set): `record.nc[e.name]` against `e.accuracy`.

/// One neural-collapse measure as the report names and plots it.
struct NCMeasure: Sendable {
    /// Slug for plot ids ("image-nc1").
    var key: String
    /// Short name ("image NC1").
    var name: String
    /// Axis title with its unit.
    var axisTitle: String
    /// What it measures, for captions.
    var definition: String
    var value: @Sendable (NeuralCollapseReport) -> Double

    /// Every measure of a `NeuralCollapseReport` (METHODS.md section 6), image side first. All are
    /// 0 at full collapse except NC4, which is 1.
    static let all: [NCMeasure] = [
        NCMeasure(key: "image-nc1", name: "image NC1", axisTitle: "image NC1 (dimensionless)",
                  definition: "within-class variability of the image features, tr(S_W S_B⁺)/K") { $0.image.nc1 },
        NCMeasure(key: "image-equinorm", name: "image equinorm", axisTitle: "image equinorm (dimensionless)",
                  definition: "std/mean of the norms of the centred image class means") { $0.image.equinorm },
        NCMeasure(key: "image-equiangularity", name: "image equiangularity", axisTitle: "image equiangularity (dimensionless)",
                  definition: "std of the pairwise cosines of the centred image class means") { $0.image.equiangularity },
        NCMeasure(key: "image-max-angle", name: "image max-angle", axisTitle: "image max-angle (dimensionless)",
                  definition: "mean |cos + 1/(K−1)| over pairs of centred image class means") { $0.image.maxAngle },
        NCMeasure(key: "image-etf-error", name: "image ETF error", axisTitle: "image ETF error (dimensionless)",
                  definition: "Frobenius distance of the image class means' normalised Gram matrix from a simplex ETF") { $0.image.etfError },
        NCMeasure(key: "text-equinorm", name: "text equinorm", axisTitle: "text equinorm (dimensionless)",
                  definition: "std/mean of the norms of the centred text features") { $0.text.equinorm },
        NCMeasure(key: "text-equiangularity", name: "text equiangularity", axisTitle: "text equiangularity (dimensionless)",
                  definition: "std of the pairwise cosines of the centred text features") { $0.text.equiangularity },
        NCMeasure(key: "text-max-angle", name: "text max-angle", axisTitle: "text max-angle (dimensionless)",
                  definition: "mean |cos + 1/(K−1)| over pairs of centred text features") { $0.text.maxAngle },
        NCMeasure(key: "text-etf-error", name: "text ETF error", axisTitle: "text ETF error (dimensionless)",
                  definition: "Frobenius distance of the text features' normalised Gram matrix from a simplex ETF") { $0.text.etfError },
        NCMeasure(key: "nc3", name: "NC3", axisTitle: "NC3 self-duality distance (dimensionless)",
                  definition: "text-to-image self-duality, the distance between the normalised centred text features and image class means") { $0.nc3 },
        NCMeasure(key: "nc4", name: "NC4", axisTitle: "NC4 agreement (fraction of images)",
                  definition: "fraction of images whose prediction is their nearest class mean") { $0.nc4 },
    ]

    /// The measures plotted over training epochs.
    static let overTraining: [NCMeasure] = all.filter {
        ["image-nc1", "image-etf-error", "text-etf-error", "text-equiangularity", "nc3"].contains($0.key)
    }

    /// CPT's within-cluster ETF error: only CPT's runs have it (NaN for the others, which every
    /// use leaves out), and it is shown only where some report has it.
    static let clusterETF = NCMeasure(key: "text-cluster-etf-error", name: "text within-cluster ETF error",
                                      axisTitle: "text within-cluster ETF error (dimensionless)",
                                      definition: "mean over CPT's class clusters of the relative Frobenius distance of the text features' cosine matrix from a simplex ETF") {
        $0.clusterETFError ?? .nan
    }

    /// `all`, and `clusterETF` where one of `reports` has it.
    static func shown(_ reports: [NeuralCollapseReport]) -> [NCMeasure] {
        all + (reports.contains { $0.clusterETFError != nil } ? [clusterETF] : [])
    }
}

/// A finished, trained run's measures on one evaluation set and its accuracy there.
struct NCRunPoint {
    var method: String
    /// The training dataset.
    var dataset: String
    /// The evaluation set's name (`test`, `base`, `novel`, a target).
    var set: String
    var nc: NeuralCollapseReport
    /// Percent.
    var accuracy: Double
}

/// One point per distinct trained run and evaluation set. Zero-shot and the linear probe are left
/// out (no prompt to relate to accuracy). Cells that repeat a run count once: a run is what
/// produced it, the method, recipe, seed, model and precision, the training inputs
/// (`digests["train_inputs"]`: the training features and labels, equal for 1 shot at every tau)
/// and the evaluation set's features; for records without that digest, equal results on the set
/// (accuracy and every measure, bit for bit) stand for equal inputs.
func ncPoints(_ records: [RunRecord]) -> [NCRunPoint] {
    struct Key: Hashable {
        var method: String, recipe: Recipe, seed: Int, model: String, dataset: String, set: String
        var inputs: String
    }
    var seen: Set<Key> = []
    var out: [NCRunPoint] = []
    for r in records where r.status == .ok && r.spec.method != "zeroshot" && r.spec.method != "linear-probe" {
        for e in r.evaluations {
            guard let nc = r.nc[e.name], e.accuracy.isFinite else { continue }
            let evalDigest = r.digests["\(e.name)_features"] ?? e.dataset
            let inputs = r.digests["train_inputs"].map { "\($0)|\(evalDigest)" }
                ?? "results|\(e.accuracy.bitPattern)|" + NCMeasure.all.map { String($0.value(nc).bitPattern) }.joined(separator: ",")
            let key = Key(method: r.spec.reportMethod, recipe: r.spec.recipe, seed: r.spec.seed, model: ModelLabel(r).identity,
                          dataset: r.spec.dataset, set: e.name, inputs: inputs)
            guard seen.insert(key).inserted else { continue }
            out.append(NCRunPoint(method: r.spec.reportMethod, dataset: r.spec.dataset, set: e.name, nc: nc, accuracy: 100 * e.accuracy))
        }
    }
    return out
}

/// The points of each (training dataset, evaluation set), in dataset then evaluation order.
func ncGroups(_ points: [NCRunPoint]) -> [(title: String, id: String, points: [NCRunPoint])] {
    var order: [String] = []
    var groups: [String: [NCRunPoint]] = [:]
    for p in points {
        let key = "\(p.dataset)|\(p.set)"
        if groups[key] == nil { order.append(key) }
        groups[key, default: []].append(p)
    }
    return order.sorted { a, b in
        let (da, db) = (groups[a]![0].dataset, groups[b]![0].dataset)
        return da != db ? da < db : order.firstIndex(of: a)! < order.firstIndex(of: b)!
    }.map { key in
        let p = groups[key]![0]
        return (p.set == "test" ? p.dataset : "\(p.dataset), \(p.set) set", plotID(p.dataset, p.set), groups[key]!)
    }
}

/// One measure against test accuracy over a set of points.
struct NCCorrelation {
    var measure: NCMeasure
    /// x: the measure, y: accuracy in percent.
    var points: [(method: String, x: Double, y: Double)]
    var pearson: Double?
    var spearman: Double?
    /// Least-squares line y = intercept + slope x; nil where x is constant.
    var fit: (slope: Double, intercept: Double)?
    /// The value every point shares, where the measure does not vary (nothing to correlate or plot).
    var constant: Double?
    /// Constant within every (dataset, evaluation set) of the points (the measure of frozen features).
    var constantWithinDatasets = false
}

/// Equal up to rounding of the last bits: a measure computed from the same frozen features.
private func isConstant(_ xs: [Double]) -> Bool {
    guard let lo = xs.min(), let hi = xs.max() else { return false }
    return hi - lo <= 1e-12 * max(1, abs(hi))
}

/// Each measure's points and correlations across `points`. Over a pooled set, a measure that is
/// constant within every (dataset, evaluation set) is reported as constant too: its spread is
/// only the datasets' differences.
func ncCorrelations(_ points: [NCRunPoint]) -> [NCCorrelation] {
    let groups = ncGroups(points)
    return NCMeasure.shown(points.map(\.nc)).map { measure in
        let xy = points.compactMap { p -> (method: String, x: Double, y: Double)? in
            let x = measure.value(p.nc)
            return x.isFinite && p.accuracy.isFinite ? (p.method, x, p.accuracy) : nil
        }
        let xs = xy.map(\.x), ys = xy.map(\.y)
        if !xs.isEmpty && groups.allSatisfy({ g in isConstant(g.points.map { measure.value($0.nc) }.filter(\.isFinite)) }) {
            return NCCorrelation(measure: measure, points: xy, pearson: nil, spearman: nil, fit: nil,
                                 constant: groups.count == 1 ? xs[0] : nil, constantWithinDatasets: true)
        }
        // A constant sample has no correlation; checked exactly, since rounding in the mean can leave
        // a tiny nonzero variance that `Statistics.pearson` would turn into r = 0.
        guard Set(xs).count > 1, Set(ys).count > 1 else {
            return NCCorrelation(measure: measure, points: xy, pearson: nil, spearman: nil, fit: nil)
        }
        return NCCorrelation(measure: measure, points: xy, pearson: Statistics.pearson(xs, ys),
                             spearman: Statistics.spearman(xs, ys), fit: leastSquares(xs, ys))
    }
}

/// Ordinary least squares of y on x; nil for fewer than two points or a constant x.
func leastSquares(_ x: [Double], _ y: [Double]) -> (slope: Double, intercept: Double)? {
    guard x.count == y.count, x.count >= 2, let mx = Statistics.mean(x), let my = Statistics.mean(y) else { return nil }
    var sxy = 0.0, sxx = 0.0
    for (a, b) in zip(x, y) { sxy += (a - mx) * (b - my); sxx += (a - mx) * (a - mx) }
    guard sxx > 0 else { return nil }
    let slope = sxy / sxx
    return (slope, my - slope * mx)
}
