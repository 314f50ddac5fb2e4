import TensorCore
import XCTest

// checkGradient, assertClose and maxDiff live in TestSupport.

/// Sum of y * r in Double: the scalar "loss" whose gradient w.r.t. y is r.
func project(_ y: Tensor, _ r: Tensor) -> Double {
    zip(y.data, r.data).reduce(0) { $0 + Double($1.0) * Double($1.1) }
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
