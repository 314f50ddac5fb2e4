import Foundation
import TensorCore

/// CoOp's linear-probe baseline (`lpclip/linear_probe.py`): sklearn's
/// `LogisticRegression(solver="lbfgs", penalty="l2", C=c, max_iter=1000)`, i.e. multinomial
/// logistic regression minimising C * sum_i CE_i + 0.5 ||W||_F^2 with unpenalised biases.
///
/// Features are used as given: CoOp feeds the raw image-encoder outputs (`clip_model.visual`,
/// not normalised). As sklearn, only the classes present in the training labels are fitted and
/// predicted (`classIndices`). The objective is minimised in the equivalent scale
/// F = (1/N) sum_i CE_i + ||W||^2 / (2 C N) (sklearn's own), by L-BFGS to a tighter gradient
/// tolerance than sklearn's 1e-4, so the optimum, not the stopping point, defines the result.
public struct LinearProbe: Sendable, Equatable {
    /// The training classes, ascending; row r of `weights` and `bias` scores class classIndices[r].
    public var classIndices: [Int]
    public var dimension: Int
    /// classIndices.count x dimension, row-major.
    public var weights: [Double]
    /// classIndices.count values; they sum to zero (the softmax leaves their mean free, and L-BFGS
    /// from zero never moves it).
    public var bias: [Double]
    /// The inverse regularisation strength C.
    public var c: Double
    /// C * sum_i CE_i + 0.5 ||W||_F^2 at the solution (sklearn's scale).
    public var objective: Double
    public var iterations: Int
    public var converged: Bool

    /// Fits the probe to `features` (N x d) with `labels` in 0..<classes.
    public static func fit(features: Tensor, labels: [Int], classes: Int, c: Double,
                           options: LBFGS.Options = LBFGS.Options()) throws -> LinearProbe {
        guard features.rank == 2 else { throw AnalysisError.notAMatrix(name: "features", shape: features.shape) }
        let (n, d) = (features.shape[0], features.shape[1])
        try checkLabels(labels, rows: n, classes: classes)
        guard n > 0, d > 0 else { throw AnalysisError.noData }
        guard c > 0, c.isFinite else { throw AnalysisError.invalidParameter(name: "C", value: c) }
        let present = Array(Set(labels)).sorted()
        guard present.count >= 2 else { throw AnalysisError.tooFewClasses(present.count) }
        let row = Dictionary(uniqueKeysWithValues: present.enumerated().map { ($1, $0) })
        let y = labels.map { row[$0] ?? 0 }
        let x = features.data.map(Double.init)
        let k = present.count
        let result = LBFGS.minimize(from: [Double](repeating: 0, count: k * (d + 1)), options: options) {
            objective(theta: $0, x: x, y: y, n: n, d: d, k: k, c: c)
        }
        let w = Array(result.x[0 ..< k * d]), b = Array(result.x[(k * d)...])
        return LinearProbe(classIndices: present, dimension: d, weights: w, bias: b, c: c,
                           objective: result.value * c * Double(n), iterations: result.iterations,
                           converged: result.converged)
    }

    /// F(W, b) = (1/N) sum_i [logsumexp_k z_ik - z_iy_i] + ||W||^2 / (2 C N), z_ik = w_k . x_i + b_k,
    /// and its gradient: dF/dW = (P - Y)^T X / N + W / (C N), dF/db = sum_i (p_i - y_i) / N.
    /// theta = [W (k x d) row-major, b (k)].
    static func objective(theta: [Double], x: [Double], y: [Int], n: Int, d: Int, k: Int, c: Double)
        -> (value: Double, gradient: [Double]) {
        var grad = [Double](repeating: 0, count: theta.count)
        var loss = 0.0
        let regScale = 1 / (c * Double(n))
        theta.withUnsafeBufferPointer { th in x.withUnsafeBufferPointer { xs in grad.withUnsafeMutableBufferPointer { gr in
            var z = [Double](repeating: 0, count: k)
            for i in 0..<n {
                let xi = xs.baseAddress! + i * d
                for r in 0..<k {
                    let wr = th.baseAddress! + r * d
                    var s = th[k * d + r]
                    for j in 0..<d { s += wr[j] * xi[j] }
                    z[r] = s
                }
                let m = z.max() ?? 0
                var sum = 0.0
                for r in 0..<k { z[r] = exp(z[r] - m); sum += z[r] }
                loss += m + log(sum) - (log(z[y[i]]) + m)
                for r in 0..<k {
                    let dz = (z[r] / sum - (r == y[i] ? 1 : 0)) / Double(n)
                    let gw = gr.baseAddress! + r * d
                    for j in 0..<d { gw[j] += dz * xi[j] }
                    gr[k * d + r] += dz
                }
            }
            var reg = 0.0
            for j in 0..<(k * d) { reg += th[j] * th[j]; gr[j] += th[j] * regScale }
            loss = loss / Double(n) + 0.5 * reg * regScale
        } } }
        return (loss, grad)
    }

    /// Scores w_k . x_i + b_k, N x classIndices.count, row-major.
    public func scores(_ features: Tensor) throws -> [Double] {
        guard features.rank == 2 else { throw AnalysisError.notAMatrix(name: "features", shape: features.shape) }
        guard features.shape[1] == dimension else { throw AnalysisError.dimensionMismatch(expected: dimension, got: features.shape[1]) }
        let (n, k, d) = (features.shape[0], classIndices.count, dimension)
        var out = [Double](repeating: 0, count: n * k)
        for i in 0..<n { for r in 0..<k {
            var s = bias[r]
            for j in 0..<d { s += weights[r * d + j] * Double(features[i * d + j]) }
            out[i * k + r] = s
        } }
        return out
    }

    /// argmax_k of the scores, as class indices (first on ties).
    public func predict(_ features: Tensor) throws -> [Int] {
        let s = try scores(features), k = classIndices.count
        return (0..<(s.count / k)).map { i in classIndices[argmax(Array(s[i * k ..< (i + 1) * k]))] }
    }

    /// Fraction of rows predicted as their label.
    public func accuracy(features: Tensor, labels: [Int]) throws -> Double {
        let p = try predict(features)
        guard p.count == labels.count else { throw AnalysisError.labelCount(labels: labels.count, rows: p.count) }
        guard !p.isEmpty else { throw AnalysisError.noData }
        return Double(zip(p, labels).filter { $0 == $1 }.count) / Double(p.count)
    }
}

/// The outcome of `LinearProbe.search`.
public struct LinearProbeSearch: Sendable, Equatable {
    public struct Trial: Sendable, Equatable {
        public var c: Double
        public var valAccuracy: Double
    }
    /// The chosen C, its probe (fit on the training split) and its validation accuracy.
    public var c: Double
    public var probe: LinearProbe
    public var valAccuracy: Double
    /// Every fit in the order CoOp makes them (repeated C values are fitted once).
    public var trials: [Trial]
}

extension LinearProbe {
    /// CoOp's initial grid of C, in its order (the first best wins ties, so larger C).
    public static let coopGrid: [Double] = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]

    /// CoOp's C search on a validation split: fit every C of `grid`, take the first with the best
    /// validation accuracy (c_peak), then `steps` rounds (CoOp: 8) of its bisection in log10 C
    /// starting from [c_peak/10, 10 c_peak]: fit both ends, keep the right end if it is strictly
    /// better (else the left) and halve the interval towards it. The answer is the end kept in
    /// the last round, as CoOp reports (with steps = 0: c_peak).
    public static func search(trainFeatures: Tensor, trainLabels: [Int], valFeatures: Tensor, valLabels: [Int],
                              classes: Int, grid: [Double] = coopGrid, steps: Int = 8,
                              options: LBFGS.Options = LBFGS.Options()) throws -> LinearProbeSearch {
        guard !grid.isEmpty else { throw AnalysisError.invalidParameter(name: "grid size", value: 0) }
        try checkLabels(valLabels, rows: valFeatures.rank == 2 ? valFeatures.shape[0] : -1, classes: classes)
        var fitted: [Double: (LinearProbe, Double)] = [:]
        var trials: [LinearProbeSearch.Trial] = []
        func evaluate(_ c: Double) throws -> (LinearProbe, Double) {
            if let done = fitted[c] { return done }
            let probe = try fit(features: trainFeatures, labels: trainLabels, classes: classes, c: c, options: options)
            let acc = try probe.accuracy(features: valFeatures, labels: valLabels)
            fitted[c] = (probe, acc)
            trials.append(.init(c: c, valAccuracy: acc))
            return (probe, acc)
        }
        var peak = grid[0], peakResult = try evaluate(grid[0])
        for c in grid.dropFirst() {
            let r = try evaluate(c)
            if r.1 > peakResult.1 { peak = c; peakResult = r }
        }
        var chosen = (c: peak, probe: peakResult.0, acc: peakResult.1)
        var (left, right) = (0.1 * peak, 10 * peak)
        for _ in 0..<steps {
            let l = try evaluate(left), r = try evaluate(right)
            let (logL, logR) = (log10(left), log10(right))
            if l.1 < r.1 {
                chosen = (right, r.0, r.1)
                (left, right) = (pow(10, 0.5 * (logR + logL)), pow(10, logR))
            } else {
                chosen = (left, l.0, l.1)
                (left, right) = (pow(10, logL), pow(10, 0.5 * (logR + logL)))
            }
        }
        return LinearProbeSearch(c: chosen.c, probe: chosen.probe, valAccuracy: chosen.acc, trials: trials)
    }
}
