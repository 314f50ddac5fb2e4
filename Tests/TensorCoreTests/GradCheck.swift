import TensorCore
import XCTest

/// Central finite differences of a scalar function of one tensor, checked against an analytic
/// gradient. Float32 forward passes limit the attainable agreement, so the step is largish and the
/// tolerance is stated per call; the worst element is reported.
func checkGradient(_ name: String, at x: Tensor, analytic: Tensor, eps: Float = 1e-2,
                   atol: Float = 2e-3, rtol: Float = 2e-2, maxProbes: Int = 64,
                   file: StaticString = #filePath, line: UInt = #line, _ f: (Tensor) -> Double) {
    XCTAssertEqual(x.shape, analytic.shape, "\(name): gradient shape", file: file, line: line)
    let stride = max(1, x.count / maxProbes)
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

/// Sum of y * r in Double: the scalar "loss" whose gradient w.r.t. y is r.
func project(_ y: Tensor, _ r: Tensor) -> Double {
    zip(y.data, r.data).reduce(0) { $0 + Double($1.0) * Double($1.1) }
}

func assertClose(_ a: Tensor, _ b: Tensor, atol: Float, rtol: Float = 0, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.shape, b.shape, "\(what): shapes", file: file, line: line)
    var worst: (Float, Int) = (0, -1)
    for i in 0..<min(a.count, b.count) {
        let e = abs(a[i] - b[i]) - rtol * abs(b[i])
        if e > worst.0 { worst = (e, i) }
    }
    XCTAssertLessThanOrEqual(worst.0, atol, "\(what): worst element \(worst.1): \(worst.1 >= 0 ? a[worst.1] : 0) vs \(worst.1 >= 0 ? b[worst.1] : 0)", file: file, line: line)
}

/// A small random transformer (2 heads, width c) for the layout tests; draws from `rng`.
func randomTransformer(width c: Int, layers: Int = 2, using rng: inout SeededGenerator) -> Transformer {
    func lin(_ o: Int, _ i: Int) -> Linear {
        Linear(weight: .randomNormal([o, i], std: 0.4, using: &rng), bias: .randomNormal([o], std: 0.1, using: &rng))
    }
    func ln() -> LayerNorm {
        LayerNorm(weight: .randomUniform([c], 0.5, 1.5, using: &rng), bias: .randomNormal([c], std: 0.1, using: &rng))
    }
    return Transformer(blocks: (0..<layers).map { _ in
        ResidualBlock(ln1: ln(), attention: MultiheadAttention(inProj: lin(3 * c, c), outProj: lin(c, c), heads: 2),
                      ln2: ln(), fc: lin(4 * c, c), proj: lin(c, 4 * c))
    })
}
