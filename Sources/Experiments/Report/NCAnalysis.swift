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
}

/// One measure against test accuracy over every (run, evaluation set).
struct NCCorrelation {
    var measure: NCMeasure
    /// x: the measure, y: accuracy in percent.
    var points: [(method: String, x: Double, y: Double)]
    var pearson: Double?
    var spearman: Double?
    /// Least-squares line y = intercept + slope x; nil where x is constant.
    var fit: (slope: Double, intercept: Double)?
}

/// Each measure's points and correlations across `records` (finished runs).
func ncCorrelations(_ records: [RunRecord]) -> [NCCorrelation] {
    NCMeasure.all.map { measure in
        var points: [(method: String, x: Double, y: Double)] = []
        for record in records where record.status == .ok {
            for e in record.evaluations {
                guard let nc = record.nc[e.name] else { continue }
                let x = measure.value(nc)
                if x.isFinite && e.accuracy.isFinite { points.append((record.spec.method, x, 100 * e.accuracy)) }
            }
        }
        let xs = points.map(\.x), ys = points.map(\.y)
        // A constant sample has no correlation; checked exactly, since rounding in the mean can leave
        // a tiny nonzero variance that `Statistics.pearson` would turn into r = 0.
        guard Set(xs).count > 1, Set(ys).count > 1 else {
            return NCCorrelation(measure: measure, points: points, pearson: nil, spearman: nil, fit: nil)
        }
        return NCCorrelation(measure: measure, points: points, pearson: Statistics.pearson(xs, ys),
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
