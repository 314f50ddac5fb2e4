import TensorCore
import XCTest

/// The activation arena: reuse by element count, zeroing, and value semantics kept when the
/// ownership rule is broken.
final class WorkspaceTests: XCTestCase {
    func testReuseZeroingAndSafety() {
        let ws = Workspace()
        var a = ws.tensor([2, 3])
        XCTAssertEqual(a.data, [Float](repeating: 0, count: 6))
        XCTAssertEqual(ws.allocated, 1)
        for i in 0..<6 { a[i] = Float(i + 1) }
        let kept = a  // a copy outlives the recycle: breaks the rule
        ws.recycle(a)
        var b = ws.tensor([3, 2], zeroed: false)  // same count: the pooled buffer
        XCTAssertEqual(ws.reused, 1)
        XCTAssertEqual(b.shape, [3, 2])
        b[0] = -7  // the shared buffer is copied on this write
        XCTAssertEqual(kept.data, [1, 2, 3, 4, 5, 6], "a recycled tensor's copy never changes")
        ws.recycle(b)
        let c = ws.tensor([6])  // zeroed on request
        XCTAssertEqual(c.data, [Float](repeating: 0, count: 6))
        XCTAssertEqual(CPUBackend.default.tensor(nil, [4]).data, [0, 0, 0, 0])
        ws.recycle(c)
        XCTAssertEqual(ws.pooledBytes, 6 * 4)
        ws.reset()
        XCTAssertEqual(ws.pooledBytes, 0)
    }

    /// A transformer's backward releasing its trace into a workspace, with and without the linear
    /// layers' inputs kept, equals the plain backward bit for bit, step after step (the second and
    /// third steps run on reused, stale buffers).
    func testReleasingBackwardIsBitIdentical() {
        var rng = SeededGenerator(seed: 7)
        let (c, heads, blocks) = (8, 2, 2)
        func lin(_ o: Int, _ i: Int) -> Linear {
            Linear(weight: .randomNormal([o, i], std: 0.3, using: &rng), bias: .randomNormal([o], std: 0.1, using: &rng))
        }
        func ln() -> LayerNorm {
            LayerNorm(weight: .randomUniform([c], 0.5, 1.5, using: &rng), bias: .randomNormal([c], std: 0.1, using: &rng))
        }
        let t = Transformer(blocks: (0..<blocks).map { _ in
            ResidualBlock(ln1: ln(), attention: MultiheadAttention(inProj: lin(3 * c, c), outProj: lin(c, c), heads: heads),
                          ln2: ln(), fc: lin(4 * c, c), proj: lin(c, 4 * c))
        })
        let ws = Workspace()
        let (b, tokens) = (3, 5)
        let rows = (0..<b).map { $0 * tokens }
        for step in 0..<3 {
            let x = Tensor.randomNormal([b * tokens, c], using: &rng)
            let dy = Tensor.randomNormal([b, c], using: &rng)
            let layout = SequenceLayout.uniform(batch: b, tokens: tokens)
            let (y0, trace0) = t.forward(x, layout: layout, causal: false, outputRows: rows, keepCaches: true)
            var none: [ResidualBlock.Grads]? = nil
            let d0 = t.backward(dy, trace: trace0, grads: &none)
            for keep in [false, true] {
                var (y1, trace1) = t.forward(x, layout: layout, causal: false, outputRows: rows, keepCaches: true,
                                             workspace: ws, keepLinearInputs: keep)
                XCTAssertEqual(y1.data, y0.data, "step \(step) forward, keepLinearInputs \(keep)")
                let d1 = t.backward(dy, releasing: &trace1, grads: &none, workspace: ws)
                XCTAssertEqual(d1.data, d0.data, "step \(step) backward, keepLinearInputs \(keep)")
                XCTAssertTrue(trace1.caches.isEmpty)
                ws.recycle(y1); y1 = Tensor(zeros: [0])
            }
        }
        XCTAssertGreaterThan(ws.reused, 0)
    }
}
