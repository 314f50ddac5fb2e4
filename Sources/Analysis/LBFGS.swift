import Foundation

/// Limited-memory BFGS (Nocedal & Wright, algorithms 7.4 and 3.5-3.6) for smooth unconstrained
/// minimisation in Double. Deterministic: no randomness, sequential arithmetic.
public enum LBFGS {
    public struct Options: Sendable, Equatable {
        /// Correction pairs kept (scipy's default for L-BFGS-B is 10).
        public var memory = 10
        /// Iteration cap (CoOp's probe passes sklearn max_iter = 1000).
        public var maxIterations = 1000
        /// Stop when max_j |g_j| <= this.
        public var gradientTolerance = 1e-9
        /// Stop when (f_prev - f) <= this * max(|f_prev|, |f|, 1) (scipy's ftol as sklearn sets it).
        public var relativeDecrease = 64 * Double.ulpOfOne
        /// Function evaluations allowed per line search.
        public var maxLineSearch = 50

        public init() {}
    }

    public struct Result: Sendable, Equatable {
        public var x: [Double]
        public var value: Double
        /// max_j |g_j| at `x`.
        public var gradientMax: Double
        public var iterations: Int
        /// True when a tolerance, not the iteration cap or a failed line search, stopped it.
        public var converged: Bool
    }

    /// Minimises f from x0; `f` returns the value and the gradient.
    public static func minimize(from x0: [Double], options: Options = Options(),
                                _ f: ([Double]) -> (value: Double, gradient: [Double])) -> Result {
        var x = x0
        var (fx, g) = f(x)
        var s: [[Double]] = [], y: [[Double]] = [], rho: [Double] = []
        var iterations = 0
        func maxAbs(_ v: [Double]) -> Double { v.reduce(0) { max($0, abs($1)) } }
        if maxAbs(g) <= options.gradientTolerance {
            return Result(x: x, value: fx, gradientMax: maxAbs(g), iterations: 0, converged: true)
        }
        while iterations < options.maxIterations {
            iterations += 1
            // Two-loop recursion: d = -H g.
            var q = g
            var alpha = [Double](repeating: 0, count: s.count)
            for i in stride(from: s.count - 1, through: 0, by: -1) {
                alpha[i] = rho[i] * dot(s[i], q)
                for j in q.indices { q[j] -= alpha[i] * y[i][j] }
            }
            let gamma = s.isEmpty ? 1 / max(dot(g, g).squareRoot(), 1e-300) : dot(s[s.count - 1], y[y.count - 1]) / dot(y[y.count - 1], y[y.count - 1])
            for j in q.indices { q[j] *= gamma }
            for i in s.indices {
                let beta = rho[i] * dot(y[i], q)
                for j in q.indices { q[j] += s[i][j] * (alpha[i] - beta) }
            }
            var direction = q.map { -$0 }
            var slope = dot(g, direction)
            if !(slope < 0) {  // not a descent direction (lost curvature): restart from steepest descent
                s.removeAll(); y.removeAll(); rho.removeAll()
                let scale = 1 / max(dot(g, g).squareRoot(), 1e-300)
                direction = g.map { -$0 * scale }
                slope = dot(g, direction)
            }
            guard let step = lineSearch(x: x, fx: fx, slope: slope, direction: direction, options: options, f) else {
                return Result(x: x, value: fx, gradientMax: maxAbs(g), iterations: iterations, converged: false)
            }
            let sk = direction.map { $0 * step.alpha }
            let yk = zip(step.gradient, g).map { $0 - $1 }
            let fPrev = fx
            x = step.x; fx = step.value; g = step.gradient
            let sy = dot(sk, yk)
            if sy > 1e-12 * dot(yk, yk).squareRoot() * dot(sk, sk).squareRoot() {
                s.append(sk); y.append(yk); rho.append(1 / sy)
                if s.count > options.memory { s.removeFirst(); y.removeFirst(); rho.removeFirst() }
            }
            if maxAbs(g) <= options.gradientTolerance
                || fPrev - fx <= options.relativeDecrease * max(abs(fPrev), abs(fx), 1) {
                return Result(x: x, value: fx, gradientMax: maxAbs(g), iterations: iterations, converged: true)
            }
        }
        return Result(x: x, value: fx, gradientMax: maxAbs(g), iterations: iterations, converged: false)
    }

    struct Step { var alpha: Double; var x: [Double]; var value: Double; var gradient: [Double] }

    /// A step satisfying the strong Wolfe conditions (c1 = 1e-4, c2 = 0.9), by bracketing and
    /// safeguarded cubic interpolation; nil when none is found within the evaluation budget.
    static func lineSearch(x: [Double], fx: Double, slope: Double, direction: [Double], options: Options,
                           _ f: ([Double]) -> (value: Double, gradient: [Double])) -> Step? {
        let c1 = 1e-4, c2 = 0.9
        var evaluations = 0
        func at(_ a: Double) -> (Step, Double) {
            evaluations += 1
            let xa = zip(x, direction).map { $0 + a * $1 }
            let (v, g) = f(xa)
            return (Step(alpha: a, x: xa, value: v, gradient: g), dot(g, direction))
        }
        var best: Step?  // the lowest point with sufficient decrease, if the search runs out
        func zoom(_ lo0: (Step, Double), _ hi0: (Step, Double)) -> Step? {
            var lo = lo0, hi = hi0
            while evaluations < options.maxLineSearch {
                let (a, b) = (lo.0.alpha, hi.0.alpha)
                var trial = cubicMinimum(a, lo.0.value, lo.1, b, hi.0.value, hi.1)
                let (left, right) = (min(a, b), max(a, b))
                let margin = 0.1 * (right - left)
                if !trial.isFinite || trial < left + margin || trial > right - margin { trial = (a + b) / 2 }
                if right - left <= 1e-16 * max(1, right) { break }
                let cur = at(trial)
                if !cur.0.value.isFinite || cur.0.value > fx + c1 * trial * slope || cur.0.value >= lo.0.value {
                    hi = cur
                } else {
                    if cur.0.value < (best?.value ?? .infinity) { best = cur.0 }
                    if abs(cur.1) <= -c2 * slope { return cur.0 }
                    if cur.1 * (b - a) >= 0 { hi = lo }
                    lo = cur
                }
            }
            return best
        }
        var previous = (Step(alpha: 0, x: x, value: fx, gradient: []), slope)
        var alpha = 1.0
        while evaluations < options.maxLineSearch {
            let cur = at(alpha)
            if !cur.0.value.isFinite || cur.0.value > fx + c1 * alpha * slope
                || (evaluations > 1 && cur.0.value >= previous.0.value) {
                return zoom(previous, cur)
            }
            best = cur.0
            if abs(cur.1) <= -c2 * slope { return cur.0 }
            if cur.1 >= 0 { return zoom(cur, previous) }
            previous = cur
            alpha *= 2
        }
        return best
    }

    /// Minimiser of the cubic through (a, fa, da) and (b, fb, db) (Nocedal & Wright eq. 3.59).
    static func cubicMinimum(_ a: Double, _ fa: Double, _ da: Double, _ b: Double, _ fb: Double, _ db: Double) -> Double {
        let d1 = da + db - 3 * (fa - fb) / (a - b)
        let disc = d1 * d1 - da * db
        guard disc >= 0 else { return .nan }
        let d2 = (b > a ? 1.0 : -1.0) * disc.squareRoot()
        return b - (b - a) * (db + d2 - d1) / (db - da + 2 * d2)
    }
}
