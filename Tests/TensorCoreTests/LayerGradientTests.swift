import TensorCore
import TestSupport
import XCTest

/// Finite-difference checks of every forward/backward pair on tiny shapes.
final class LayerGradientTests: XCTestCase {
    var rng = SeededGenerator(seed: 42)

    func randomLinear(_ out: Int, _ inp: Int, bias: Bool = true) -> Linear {
        Linear(weight: .randomNormal([out, inp], std: 0.5, using: &rng),
               bias: bias ? .randomNormal([out], std: 0.5, using: &rng) : nil)
    }

    func randomLayerNorm(_ c: Int) -> LayerNorm {
        LayerNorm(weight: .randomUniform([c], 0.5, 1.5, using: &rng), bias: .randomNormal([c], std: 0.2, using: &rng))
    }

    func randomBlock(width c: Int, heads: Int) -> ResidualBlock {
        ResidualBlock(ln1: randomLayerNorm(c),
                      attention: MultiheadAttention(inProj: randomLinear(3 * c, c), outProj: randomLinear(c, c), heads: heads),
                      ln2: randomLayerNorm(c), fc: randomLinear(4 * c, c), proj: randomLinear(c, 4 * c))
    }

    func testLinear() {
        let lin = randomLinear(5, 7)
        let x = Tensor.randomNormal([3, 7], using: &rng), r = Tensor.randomNormal([3, 5], using: &rng)
        var dx = Tensor(zeros: x.shape)
        var grads: Linear.Grads? = .init(zerosLike: lin)
        lin.backward(r, input: x, dx: &dx, grads: &grads)
        checkGradient("linear dx", at: x, analytic: dx) { project(lin.forward($0), r) }
        checkGradient("linear dW", at: lin.weight, analytic: grads!.weight) {
            project(Linear(weight: $0, bias: lin.bias).forward(x), r)
        }
        checkGradient("linear db", at: lin.bias!, analytic: grads!.bias!) {
            project(Linear(weight: lin.weight, bias: $0).forward(x), r)
        }
    }

    func testBackwardAccumulatesAndSkipsFrozenWeights() {
        let lin = randomLinear(4, 6)
        let x = Tensor.randomNormal([2, 6], using: &rng), r = Tensor.randomNormal([2, 4], using: &rng)
        var dxOnce = Tensor(zeros: x.shape)
        var none: Linear.Grads? = nil
        lin.backward(r, input: x, dx: &dxOnce, grads: &none)
        XCTAssertNil(none)
        var dxTwice = Tensor(zeros: x.shape)
        var grads: Linear.Grads? = .init(zerosLike: lin)
        lin.backward(r, input: x, dx: &dxTwice, grads: &grads)
        lin.backward(r, input: x, dx: &dxTwice, grads: &grads)
        assertClose(dxTwice, dxOnce * 2, atol: 1e-5, "dx accumulates")
        var gradsOnce: Linear.Grads? = .init(zerosLike: lin)
        var scratch = Tensor(zeros: x.shape)
        lin.backward(r, input: x, dx: &scratch, grads: &gradsOnce)
        assertClose(grads!.weight, gradsOnce!.weight * 2, atol: 1e-5, "dW accumulates")
    }

    func testLayerNorm() {
        let ln = randomLayerNorm(19)
        let x = Tensor.randomNormal([4, 19], std: 2, using: &rng), r = Tensor.randomNormal([4, 19], using: &rng)
        let (_, cache) = ln.forward(x)
        var dx = Tensor(zeros: x.shape)
        var grads: LayerNorm.Grads? = .init(zerosLike: ln)
        ln.backward(r, cache: cache, dx: &dx, grads: &grads)
        checkGradient("layernorm dx", at: x, analytic: dx) { project(ln.forward($0).0, r) }
        checkGradient("layernorm dw", at: ln.weight, analytic: grads!.weight) {
            project(LayerNorm(weight: $0, bias: ln.bias).forward(x).0, r)
        }
        checkGradient("layernorm db", at: ln.bias, analytic: grads!.bias) {
            project(LayerNorm(weight: ln.weight, bias: $0).forward(x).0, r)
        }
    }

    func testQuickGELU() {
        let x = Tensor.randomNormal([3, 21], std: 2, using: &rng), r = Tensor.randomNormal([3, 21], using: &rng)
        var dx = Tensor(zeros: x.shape)
        QuickGELU.backward(r, input: x, dx: &dx)
        checkGradient("quickgelu", at: x, analytic: dx) { project(QuickGELU.forward($0), r) }
    }

    func testL2Normalize() {
        let x = Tensor.randomNormal([3, 17], using: &rng), r = Tensor.randomNormal([3, 17], using: &rng)
        let (_, cache) = L2Normalize.forward(x)
        var dx = Tensor(zeros: x.shape)
        L2Normalize.backward(r, cache: cache, dx: &dx)
        checkGradient("l2 normalize", at: x, analytic: dx, eps: 3e-3) { project(L2Normalize.forward($0).0, r) }
    }

    func testAttentionCausalAndFull() {
        let (b, t, c, h) = (2, 5, 8, 2)
        let attn = MultiheadAttention(inProj: randomLinear(3 * c, c), outProj: randomLinear(c, c), heads: h)
        let x = Tensor.randomNormal([b * t, c], using: &rng), r = Tensor.randomNormal([b * t, c], using: &rng)
        for causal in [true, false] {
            let (_, cache) = attn.forward(x, layout: .uniform(batch: b, tokens: t), causal: causal)
            var dx = Tensor(zeros: x.shape)
            var grads: MultiheadAttention.Grads? = .init(zerosLike: attn)
            attn.backward(r, cache: cache, dx: &dx, grads: &grads)
            checkGradient("attention dx causal=\(causal)", at: x, analytic: dx) {
                project(attn.forward($0, layout: .uniform(batch: b, tokens: t), causal: causal).0, r)
            }
            checkGradient("attention dW_in causal=\(causal)", at: attn.inProj.weight, analytic: grads!.inProj.weight) {
                var a = attn; a.inProj.weight = $0
                return project(a.forward(x, layout: .uniform(batch: b, tokens: t), causal: causal).0, r)
            }
            checkGradient("attention db_out causal=\(causal)", at: attn.outProj.bias!, analytic: grads!.outProj.bias!) {
                var a = attn; a.outProj.bias = $0
                return project(a.forward(x, layout: .uniform(batch: b, tokens: t), causal: causal).0, r)
            }
        }
    }

    func testCausalAttentionIgnoresTheFuture() {
        let (t, c) = (6, 8)
        let attn = MultiheadAttention(inProj: randomLinear(3 * c, c), outProj: randomLinear(c, c), heads: 2)
        let x = Tensor.randomNormal([t, c], using: &rng)
        var x2 = x
        for j in 0..<c { x2[(t - 1) * c + j] += 5 }  // change only the last token
        let y1 = attn.forward(x, layout: .uniform(batch: 1, tokens: t), causal: true).0
        let y2 = attn.forward(x2, layout: .uniform(batch: 1, tokens: t), causal: true).0
        XCTAssertEqual(Array(y1.data.prefix((t - 1) * c)), Array(y2.data.prefix((t - 1) * c)))
        // Rows cut after a position give the same outputs for the rows kept.
        let cut = attn.forward(x.slice(rows: 0..<4), layout: .uniform(batch: 1, tokens: 4), causal: true).0
        assertClose(cut, y1.slice(rows: 0..<4), atol: 1e-6, "rows cut")
    }

    func testResidualBlockAndTransformer() {
        let (b, t, c) = (2, 4, 8)
        let blocks = [randomBlock(width: c, heads: 2), randomBlock(width: c, heads: 2)]
        let model = Transformer(blocks: blocks)
        let x = Tensor.randomNormal([b * t, c], using: &rng), r = Tensor.randomNormal([b * t, c], using: &rng)
        let (_, trace) = model.forward(x, batch: b, tokens: t, causal: true, keepCaches: true)
        var grads: [ResidualBlock.Grads]? = blocks.map { .init(zerosLike: $0) }
        let dx = model.backward(r, trace: trace, grads: &grads)
        checkGradient("transformer dx", at: x, analytic: dx) {
            project(model.forward($0, batch: b, tokens: t, causal: true).0, r)
        }
        checkGradient("block 0 c_fc weight", at: blocks[0].fc.weight, analytic: grads![0].fc.weight) {
            var m = model; m.blocks[0].fc.weight = $0
            return project(m.forward(x, batch: b, tokens: t, causal: true).0, r)
        }
        checkGradient("block 1 ln_1 weight", at: blocks[1].ln1.weight, analytic: grads![1].ln1.weight) {
            var m = model; m.blocks[1].ln1.weight = $0
            return project(m.forward(x, batch: b, tokens: t, causal: true).0, r)
        }
        // Frozen weights: the input gradient is the same without weight gradients.
        var noGrads: [ResidualBlock.Grads]? = nil
        let dxFrozen = model.backward(r, trace: trace, grads: &noGrads)
        assertClose(dxFrozen, dx, atol: 1e-6, "frozen dx")
    }
}

/// Sequences of different lengths packed into one activation behave as if run one by one.
final class SequenceLayoutTests: XCTestCase {
    func testPackedSequencesEqualSeparateRunsForwardAndBackward() {
        var rng = SeededGenerator(seed: 9)
        let c = 8
        let model = randomTransformer(width: c, using: &rng)
        let lengths = [3, 6, 1, 4]
        let layout = SequenceLayout(lengths: lengths)
        let x = Tensor.randomNormal([layout.rows, c], using: &rng), r = Tensor.randomNormal([layout.rows, c], using: &rng)
        for causal in [true, false] {
            let (y, trace) = model.forward(x, layout: layout, causal: causal, keepCaches: true)
            var none: [ResidualBlock.Grads]? = nil
            let dx = model.backward(r, trace: trace, grads: &none)
            for (s, t) in lengths.enumerated() {
                let rows = layout.rowOffsets[s]..<(layout.rowOffsets[s] + t)
                let (ys, ts) = model.forward(x.slice(rows: rows), batch: 1, tokens: t, causal: causal, keepCaches: true)
                assertClose(y.slice(rows: rows), ys, atol: 1e-5, "sequence \(s) output causal=\(causal)")
                let dxs = model.backward(r.slice(rows: rows), trace: ts, grads: &none)
                assertClose(dx.slice(rows: rows), dxs, atol: 1e-5, "sequence \(s) input gradient causal=\(causal)")
            }
        }
    }

    func testThreadCountDoesNotChangeResults() {
        var rng = SeededGenerator(seed: 10)
        let c = 16
        let attn = MultiheadAttention(inProj: Linear(weight: .randomNormal([3 * c, c], std: 0.3, using: &rng), bias: nil),
                                      outProj: Linear(weight: .randomNormal([c, c], std: 0.3, using: &rng), bias: nil), heads: 4)
        let layout = SequenceLayout(lengths: [5, 7, 2])
        let x = Tensor.randomNormal([layout.rows, c], using: &rng)
        let saved = Compute.threads
        defer { Compute.threads = saved }
        Compute.threads = 1
        let one = attn.forward(x, layout: layout, causal: true).0
        Compute.threads = 2
        let two = attn.forward(x, layout: layout, causal: true).0
        XCTAssertEqual(one, two)
    }
}

/// A shared causal prefix computed once equals the prefix repeated in front of every sequence:
/// same outputs for every sequence's rows, and the prefix's gradient is the sum over sequences.
final class SharedPrefixTests: XCTestCase {
    func testSharedPrefixEqualsRepeatedPrefix() {
        var rng = SeededGenerator(seed: 11)
        let c = 8
        let model = randomTransformer(width: c, using: &rng)
        let (p, lengths) = (3, [2, 4, 1])
        let shared = SequenceLayout(prefix: p, lengths: lengths)
        let x = Tensor.randomNormal([shared.rows, c], using: &rng), r = Tensor.randomNormal([shared.rows, c], using: &rng)
        // The same rows with the prefix repeated: each sequence is prefix + its rows.
        let full = SequenceLayout(lengths: lengths.map { $0 + p })
        var xf: [Float] = [], rf: [Float] = []
        for (i, t) in lengths.enumerated() {
            xf += x.data[0..<(p * c)] + x.data[(shared.rowOffsets[i] * c)..<((shared.rowOffsets[i] + t) * c)]
            // Only the sequence rows carry a loss; the repeated prefix rows' own outputs do not
            // (in the shared layout the prefix outputs carry their loss once, added below).
            rf += [Float](repeating: 0, count: p * c) + r.data[(shared.rowOffsets[i] * c)..<((shared.rowOffsets[i] + t) * c)]
        }
        var rShared = r
        for j in 0..<(p * c) { rShared[j] = 0 }
        let (y, trace) = model.forward(x, layout: shared, causal: true, keepCaches: true)
        let (yf, tracef) = model.forward(Tensor(shape: [full.rows, c], data: xf), layout: full, causal: true, keepCaches: true)
        var none: [ResidualBlock.Grads]? = nil
        let dx = model.backward(rShared, trace: trace, grads: &none)
        let dxf = model.backward(Tensor(shape: [full.rows, c], data: rf), trace: tracef, grads: &none)
        var prefixGrad = Tensor(zeros: [p, c])
        for (i, t) in lengths.enumerated() {
            let rows = shared.rowOffsets[i]..<(shared.rowOffsets[i] + t)
            let rowsFull = (full.rowOffsets[i] + p)..<(full.rowOffsets[i] + p + t)
            assertClose(y.slice(rows: rows), yf.slice(rows: rowsFull), atol: 1e-5, "sequence \(i) output")
            assertClose(y.slice(rows: 0..<p), yf.slice(rows: full.rowOffsets[i]..<(full.rowOffsets[i] + p)), atol: 1e-5, "prefix output")
            assertClose(dx.slice(rows: rows), dxf.slice(rows: rowsFull), atol: 1e-5, "sequence \(i) gradient")
            prefixGrad.accumulate(dxf.slice(rows: full.rowOffsets[i]..<(full.rowOffsets[i] + p)))
        }
        assertClose(dx.slice(rows: 0..<p), prefixGrad, atol: 1e-5, "prefix gradient summed over sequences")
        // And a finite-difference check of the shared path itself.
        checkGradient("shared prefix dx", at: x, analytic: dx) { project(model.forward($0, layout: shared, causal: true).0, rShared) }
    }
}

/// Restricting the last block to some rows gives those rows of the full computation, and the same
/// input gradient for a loss on them.
final class OutputRowsTests: XCTestCase {
    func testLastBlockOnSelectedRowsEqualsFullComputation() {
        var rng = SeededGenerator(seed: 12)
        let c = 8
        let model = randomTransformer(width: c, using: &rng)
        for (layout, causal) in [(SequenceLayout(prefix: 2, lengths: [3, 1, 4]), true), (SequenceLayout(lengths: [5, 2, 3]), false)] {
            let rows = layout.lengths.indices.map { layout.rowOffsets[$0] + (causal ? layout.lengths[$0] - 1 : 0) }
            let x = Tensor.randomNormal([layout.rows, c], using: &rng)
            let r = Tensor.randomNormal([rows.count, c], using: &rng)
            let (full, fullTrace) = model.forward(x, layout: layout, causal: causal, keepCaches: true)
            let (some, someTrace) = model.forward(x, layout: layout, causal: causal, outputRows: rows, keepCaches: true)
            XCTAssertEqual(someTrace.outputRows, rows)
            assertClose(some, full.gatherRows(rows), atol: 1e-5, "selected rows, causal=\(causal)")
            var none: [ResidualBlock.Grads]? = nil
            var rFull = Tensor(zeros: full.shape)
            rFull.addRows(r, at: rows)
            let dFull = model.backward(rFull, trace: fullTrace, grads: &none)
            let dSome = model.backward(r, trace: someTrace, grads: &none)
            assertClose(dSome, dFull, atol: 1e-5, "input gradient, causal=\(causal)")
            var grads: [ResidualBlock.Grads]? = model.blocks.map { .init(zerosLike: $0) }
            var gradsFull: [ResidualBlock.Grads]? = model.blocks.map { .init(zerosLike: $0) }
            _ = model.backward(r, trace: someTrace, grads: &grads)
            _ = model.backward(rFull, trace: fullTrace, grads: &gradsFull)
            assertClose(grads![1].fc.weight, gradsFull![1].fc.weight, atol: 1e-5, "weight gradient of the last block")
        }
    }
}
