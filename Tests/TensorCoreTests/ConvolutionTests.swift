import Foundation
import TensorCore
import XCTest

/// `Conv2D` (oneDNN's primitive, and the im2col fallback) and `averagePool` against direct loops.
final class ConvolutionTests: XCTestCase {
    /// The definition: y[n, oy, ox, o] = b[o] + sum over (c, ky, kx) of w[o, c, ky, kx] x[n, iy, ix, c]
    /// with iy = oy * stride - padding + ky (zero outside), in Double.
    func directConvolution(_ x: Tensor, _ conv: Conv2D, residual: Tensor?, relu: Bool) -> Tensor {
        let (b, h, w, i) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, k, s, p) = (conv.outChannels, conv.kernel, conv.stride, conv.padding)
        let (oh, ow) = (conv.outputSize(h), conv.outputSize(w))
        var y = Tensor(zeros: [b, oh, ow, o])
        for n in 0..<b { for oy in 0..<oh { for ox in 0..<ow { for a in 0..<o {
            var sum = Double(conv.bias[a])
            for c in 0..<i { for ky in 0..<k { for kx in 0..<k {
                let iy = oy * s - p + ky, ix = ox * s - p + kx
                guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                sum += Double(conv.weight[((a * i + c) * k + ky) * k + kx]) * Double(x[((n * h + iy) * w + ix) * i + c])
            } } }
            let j = ((n * oh + oy) * ow + ox) * o + a
            if let residual { sum += Double(residual[j]) }
            y[j] = relu ? Float(max(sum, 0)) : Float(sum)
        } } } }
        return y
    }

    func check(backend: GEMMBackend) {
        var rng = SeededGenerator(seed: 7)
        // (in, out, kernel, stride, padding, size): the stem's 3x3 stride 2, a 3x3 pad 1, 1x1s, odd sizes.
        for (i, o, k, s, p, n) in [(3, 16, 3, 2, 1, 17), (16, 16, 3, 1, 1, 9), (16, 64, 1, 1, 0, 6), (24, 40, 1, 1, 0, 5)] {
            let x = Tensor.randomNormal([2, n, n, i], using: &rng)
            var conv = Conv2D(weight: Tensor.randomNormal([o, i, k, k], std: 0.2, using: &rng),
                              bias: Tensor.randomNormal([o], std: 0.1, using: &rng), stride: s, padding: p)
            conv.backend = CPUBackend(gemm: backend)
            let shape = [2, conv.outputSize(n), conv.outputSize(n), o]
            let residual = Tensor.randomNormal(shape, using: &rng)
            for (res, relu) in [(nil, false), (nil, true), (residual, true)] as [(Tensor?, Bool)] {
                let got = conv.forward(x, relu: relu, residual: res)
                let want = directConvolution(x, conv, residual: res, relu: relu)
                XCTAssertEqual(got.shape, shape)
                let err = zip(got.data, want.data).map { abs($0 - $1) }.max() ?? 0
                XCTAssertLessThan(err, 1e-4, "\(backend) conv \(i)->\(o) k\(k) s\(s) p\(p) relu \(relu) residual \(res != nil)")
            }
        }
    }

    func testOneDNNConvolutionMatchesDefinition() { check(backend: .oneDNN) }
    func testIm2colConvolutionMatchesDefinition() { check(backend: .openBLAS) }

    func testFoldedBatchNormEqualsConvolutionThenBatchNorm() {
        var rng = SeededGenerator(seed: 3)
        let x = Tensor.randomNormal([1, 5, 5, 4], using: &rng)
        let w = Tensor.randomNormal([6, 4, 3, 3], std: 0.3, using: &rng)
        let gamma = Tensor.randomNormal([6], using: &rng), beta = Tensor.randomNormal([6], using: &rng)
        let mean = Tensor.randomNormal([6], using: &rng), variance = Tensor.randomUniform([6], 0.5, 1.5, using: &rng)
        let plain = Conv2D(weight: w, bias: Tensor(zeros: [6]), padding: 1).forward(x)
        let folded = Conv2D.folding(weight: w, gamma: gamma, beta: beta, mean: mean, variance: variance, padding: 1).forward(x)
        for j in 0..<plain.count {
            let c = j % 6
            let want = (Double(plain[j]) - Double(mean[c])) / (Double(variance[c]) + 1e-5).squareRoot() * Double(gamma[c]) + Double(beta[c])
            XCTAssertEqual(Double(folded[j]), want, accuracy: 1e-4)
        }
    }

    func testAveragePoolDropsThePartialEdge() {
        let x = Tensor(shape: [1, 3, 3, 1], data: (0..<9).map(Float.init))
        XCTAssertEqual(averagePool(x, size: 2), Tensor(shape: [1, 1, 1, 1], data: [(0 + 1 + 3 + 4) / 4]))
        XCTAssertEqual(averagePool(x, size: 1), x)
    }
}
