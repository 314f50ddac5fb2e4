import TensorCore
import XCTest

/// Step and tolerances of a finite-difference gradient check. Float32 forward passes limit the
/// attainable agreement, so what fits depends on the function checked; the presets name the two
/// regimes the test targets use, and a call can override any field.
public struct GradientTolerance: Sendable {
    /// Central-difference step.
    public var eps: Float
    /// Passes when |numeric - analytic| - rtol * |numeric| <= atol for every probed element.
    public var atol: Float
    public var rtol: Float
    /// At most about this many elements are probed (evenly strided).
    public var maxProbes: Int

    public init(eps: Float, atol: Float, rtol: Float, maxProbes: Int) {
        self.eps = eps; self.atol = atol; self.rtol = rtol; self.maxProbes = maxProbes
    }

    /// Layers and whole networks in Float32 (TensorCore): a largish step, a loose tolerance.
    public static let layers = GradientTolerance(eps: 1e-2, atol: 2e-3, rtol: 2e-2, maxProbes: 64)
    /// Loss terms on small tensors (PromptLearning): a small step, a tight tolerance.
    public static let lossTerms = GradientTolerance(eps: 1e-3, atol: 1e-4, rtol: 2e-2, maxProbes: 48)
}

/// Central finite differences of a scalar function of one tensor, checked against an analytic
/// gradient; the worst element is reported. `eps`, `atol`, `rtol`, `maxProbes` override the preset.
public func checkGradient(_ name: String, at x: Tensor, analytic: Tensor, tolerance: GradientTolerance = .layers,
                          eps: Float? = nil, atol: Float? = nil, rtol: Float? = nil, maxProbes: Int? = nil,
                          file: StaticString = #filePath, line: UInt = #line, _ f: (Tensor) -> Double) {
    let eps = eps ?? tolerance.eps, atol = atol ?? tolerance.atol, rtol = rtol ?? tolerance.rtol
    XCTAssertEqual(x.shape, analytic.shape, "\(name): gradient shape", file: file, line: line)
    let stride = max(1, x.count / (maxProbes ?? tolerance.maxProbes))
    var worst: (Float, Int, Float, Float) = (0, -1, 0, 0)
    for i in Swift.stride(from: 0, to: x.count, by: stride) {
        var xp = x, xm = x
        xp[i] += eps
        xm[i] -= eps
        let numeric = Float((f(xp) - f(xm)) / Double(2 * eps))
        let err = abs(numeric - analytic[i]) - rtol * abs(numeric)
        if err > worst.0 { worst = (err, i, numeric, analytic[i]) }
    }
    XCTAssertLessThanOrEqual(worst.0, atol,
        "\(name): worst element \(worst.1): numeric \(worst.2) vs analytic \(worst.3)", file: file, line: line)
}
