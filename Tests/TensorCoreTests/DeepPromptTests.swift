import TensorCore
import TestSupport
import XCTest

/// Row replacement before a block (deep prompts): the values' gradients by finite differences,
/// replacing rows with the values they already had changes nothing, and the replaced rows receive
/// no gradient from before the block.
final class DeepPromptTests: XCTestCase {
    /// Values equal to the rows each block already receives: outputs bit for bit those of the
    /// transformer without hooks (causal packed text-like sequences with a shared prefix, and
    /// non-causal uniform image-like ones restricted to their first rows); with the input's own
    /// rows replaced, the input gradient is the unhooked one with the replaced rows' share moved
    /// to the values. (Replacing rows deeper cuts the paths through the rows replaced, so the
    /// input gradient then differs, as it should.)
    func testReplacingRowsWithTheirOwnValuesIsBitIdentical() {
        var rng = SeededGenerator(seed: 31)
        let c = 8
        let model = randomTransformer(width: c, layers: 3, using: &rng)
        let cases: [(SequenceLayout, Bool, Int, [Int]?)] = [
            (SequenceLayout(prefix: 4, lengths: [2, 3, 1]), true, 1, nil),
            (SequenceLayout(lengths: [4, 6, 3]), true, 1, nil),
            (SequenceLayout.uniform(batch: 3, tokens: 5), false, 3, [0, 5, 10]),
        ]
        for (layout, causal, position, outputRows) in cases {
            let x = Tensor.randomNormal([layout.rows, c], using: &rng)
            let n = 2
            let starts = layout.spanStarts(position: position, count: n)
            let (plain, hidden) = model.forward(x, layout: layout, causal: causal, keepHiddenStates: true)
            // Each block's input rows at the spans, one set per span: [S, n, W].
            func rows(_ t: Tensor) -> Tensor {
                Tensor(shape: [starts.count, n, c], data: starts.flatMap { Array(t.data[($0 * c)..<(($0 + n) * c)]) })
            }
            let deep = DeepPrompts([0: RowReplacement(starts: starts, values: rows(x)),
                                    1: RowReplacement(starts: starts, values: rows(hidden.hiddenStates[0])),
                                    2: RowReplacement(starts: starts, values: rows(hidden.hiddenStates[1]))])
            let (hooked, _) = model.forward(x, layout: layout, causal: causal, deepPrompts: deep, keepHiddenStates: true)
            XCTAssertEqual(hooked, plain, "outputs, \(layout.lengths) causal \(causal)")
            let (y0, t0) = model.forward(x, layout: layout, causal: causal, outputRows: outputRows, keepCaches: true)
            let (y1, _) = model.forward(x, layout: layout, causal: causal, outputRows: outputRows, deepPrompts: deep)
            XCTAssertEqual(y1, y0, "outputs with output rows, \(layout.lengths)")
            let inputOnly = DeepPrompts([0: deep.blocks[0]!])
            let (y2, t1) = model.forward(x, layout: layout, causal: causal, outputRows: outputRows, deepPrompts: inputOnly, keepCaches: true)
            XCTAssertEqual(y2, y0)
            let dy = Tensor.randomNormal(y0.shape, using: &rng)
            var none: [ResidualBlock.Grads]? = nil
            let dx0 = model.backward(dy, trace: t0, grads: &none)
            var dDeep: [Int: Tensor] = [:]
            let dx1 = model.backward(dy, trace: t1, grads: &none, deepPromptGrads: &dDeep)
            // The gradient reaching the spans of block 0's input went to block 0's values instead.
            var moved = dx1
            for (j, r) in starts.enumerated() {
                for k in 0..<(n * c) { moved[r * c + k] = dDeep[0]![j * n * c + k] }
            }
            XCTAssertEqual(moved, dx0, "input gradient, \(layout.lengths)")
            XCTAssertEqual(Set(dDeep.keys), [0])
        }
    }

    /// Finite differences of a loss on the output w.r.t. values replacing rows before blocks 0, 1
    /// and 2: shared values ([n, W], one gradient summed over spans) and one set per span
    /// ([S, n, W]), in plain, shared-prefix and uniform non-causal layouts.
    func testDeepPromptGradientsByFiniteDifferences() {
        var rng = SeededGenerator(seed: 32)
        let c = 8
        let model = randomTransformer(width: c, layers: 3, using: &rng)
        let cases: [(SequenceLayout, Bool, Int)] = [
            (SequenceLayout(lengths: [5, 3, 4]), true, 1),
            (SequenceLayout(prefix: 3, lengths: [2, 3]), true, 1),
            (SequenceLayout(groups: [(prefix: 3, lengths: [2, 1]), (prefix: 3, lengths: [3])]), true, 1),
            (SequenceLayout.uniform(batch: 2, tokens: 5), false, 3),
        ]
        for (layout, causal, position) in cases {
            let n = 2
            let spans = layout.spanStarts(position: position, count: n).count
            let x = Tensor.randomNormal([layout.rows, c], using: &rng), r = Tensor.randomNormal([layout.rows, c], using: &rng)
            for shared in [true, false] {
                let shape = shared ? [n, c] : [spans, n, c]
                var values = [Int: Tensor]()
                for block in [0, 1, 2] { values[block] = Tensor.randomNormal(shape, using: &rng) }
                func loss(_ v: [Int: Tensor]) -> Double {
                    project(model.forward(x, layout: layout, causal: causal,
                                          deepPrompts: DeepPrompts(values: v, position: position, layout: layout)).0, r)
                }
                let deep = DeepPrompts(values: values, position: position, layout: layout)
                let (_, trace) = model.forward(x, layout: layout, causal: causal, deepPrompts: deep, keepCaches: true)
                var none: [ResidualBlock.Grads]? = nil
                var grads: [Int: Tensor] = [:]
                let dx = model.backward(r, trace: trace, grads: &none, deepPromptGrads: &grads)
                for block in [0, 1, 2] {
                    let what = "block \(block) \(shared ? "shared" : "per span") \(layout.lengths) prefixes \(layout.prefixes.count)"
                    XCTAssertGreaterThan(grads[block]!.maxAbs, 1e-3, "\(what): the gradient must not vanish")
                    checkGradient(what, at: values[block]!, analytic: grads[block]!) { v in
                        var changed = values
                        changed[block] = v
                        return loss(changed)
                    }
                }
                // The input rows block 0 replaced reach nothing.
                checkGradient("input \(layout.lengths)", at: x, analytic: dx) {
                    project(model.forward($0, layout: layout, causal: causal, deepPrompts: deep).0, r)
                }
            }
        }
    }

    /// Accumulation into given gradients, and the releasing backward (workspace) equal to the
    /// plain one bit for bit.
    func testReleasingBackwardAndAccumulation() {
        var rng = SeededGenerator(seed: 33)
        let c = 8
        let model = randomTransformer(width: c, layers: 3, using: &rng)
        let layout = SequenceLayout(prefix: 3, lengths: [2, 4, 1])
        let x = Tensor.randomNormal([layout.rows, c], using: &rng), dy = Tensor.randomNormal([layout.rows, c], using: &rng)
        let deep = DeepPrompts(values: [1: .randomNormal([2, c], using: &rng), 2: .randomNormal([2, c], using: &rng)],
                               position: 1, layout: layout)
        let (y, trace) = model.forward(x, layout: layout, causal: true, deepPrompts: deep, keepCaches: true)
        var none: [ResidualBlock.Grads]? = nil
        var plain: [Int: Tensor] = [:]
        let dx = model.backward(dy, trace: trace, grads: &none, deepPromptGrads: &plain)
        let workspace = Workspace()
        var (yw, traceW) = model.forward(x, layout: layout, causal: true, deepPrompts: deep, keepCaches: true,
                                         workspace: workspace, keepLinearInputs: false)
        XCTAssertEqual(yw, y)
        var released: [Int: Tensor] = [1: plain[1]!]  // accumulated into: twice block 1's gradient
        let dxw = model.backward(dy, releasing: &traceW, grads: &none, deepPromptGrads: &released, workspace: workspace)
        XCTAssertEqual(dxw, dx)
        XCTAssertEqual(released[2], plain[2])
        XCTAssertEqual(released[1], plain[1]! * 2)
        XCTAssertTrue(traceW.caches.isEmpty)
    }
}
