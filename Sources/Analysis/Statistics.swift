import Foundation

/// Summary statistics and correlations of samples, in Double. Each returns nil where the quantity
/// is undefined (too few values, zero variance, or samples of different lengths).
///
/// Spread over seeds: papers' "mean ± std over 3 seeds" is usually the sample std (n - 1); the
/// neural-collapse measures use population stds (n). Both are here; say which one a report shows.
public enum Statistics {
    /// (1/n) sum_i x_i; nil for an empty sample.
    public static func mean(_ x: [Double]) -> Double? {
        x.isEmpty ? nil : x.reduce(0, +) / Double(x.count)
    }

    /// sqrt((1/n) sum_i (x_i - mean)^2); nil for an empty sample.
    public static func populationStd(_ x: [Double]) -> Double? {
        guard let m = mean(x) else { return nil }
        return (x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(x.count)).squareRoot()
    }

    /// sqrt((1/(n-1)) sum_i (x_i - mean)^2); nil for fewer than 2 values.
    public static func sampleStd(_ x: [Double]) -> Double? {
        guard x.count >= 2, let m = mean(x) else { return nil }
        return (x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(x.count - 1)).squareRoot()
    }

    /// sum (x_i - mx)(y_i - my) / sqrt(sum (x_i - mx)^2 sum (y_i - my)^2); nil for n < 2, different
    /// lengths or a constant sample.
    public static func pearson(_ x: [Double], _ y: [Double]) -> Double? {
        guard x.count == y.count, x.count >= 2, let mx = mean(x), let my = mean(y) else { return nil }
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for (a, b) in zip(x, y) {
            sxy += (a - mx) * (b - my); sxx += (a - mx) * (a - mx); syy += (b - my) * (b - my)
        }
        guard sxx > 0, syy > 0 else { return nil }
        return max(-1, min(1, sxy / (sxx * syy).squareRoot()))
    }

    /// Pearson correlation of the ranks (ties get their average rank, as scipy's spearmanr);
    /// nil where `pearson` of the ranks is.
    public static func spearman(_ x: [Double], _ y: [Double]) -> Double? {
        guard x.count == y.count else { return nil }
        return pearson(ranks(x), ranks(y))
    }

    /// 1-based ranks, tied values sharing the mean of the ranks they span ([10, 20, 20, 5] ->
    /// [2, 3.5, 3.5, 1]). NaNs are not supported.
    public static func ranks(_ x: [Double]) -> [Double] {
        let order = x.indices.sorted { x[$0] < x[$1] || (x[$0] == x[$1] && $0 < $1) }
        var out = [Double](repeating: 0, count: x.count)
        var start = 0
        while start < order.count {
            var end = start + 1
            while end < order.count && x[order[end]] == x[order[start]] { end += 1 }
            let rank = Double(start + 1 + end) / 2  // mean of start+1 ... end
            for p in start..<end { out[order[p]] = rank }
            start = end
        }
        return out
    }
}
