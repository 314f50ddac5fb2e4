import TensorCore
import TestSupport
import XCTest

/// Several shared prefixes, each read by its group of sequences (CoCoOp: one per image, shared by
/// its classes), behave as each group run on its own.
final class SeveralPrefixesTests: XCTestCase {
    func testSeveralPrefixesEqualEachGroupRunAlone() {
        var rng = SeededGenerator(seed: 34)
        let c = 8
        let model = randomTransformer(width: c, using: &rng)
        let groups: [(prefix: Int, lengths: [Int])] = [(3, [2, 4]), (2, [1, 3, 2]), (0, [3]), (4, [1])]
        let layout = SequenceLayout(groups: groups)
        XCTAssertEqual(layout.prefixes.map(\.length), [3, 2, 4])
        XCTAssertEqual(layout.prefixes.map(\.sequences), [0..<2, 2..<5, 6..<7])
        XCTAssertEqual(layout.prefixIndex, [0, 0, 1, 1, 1, nil, 2])
        let x = Tensor.randomNormal([layout.rows, c], using: &rng), r = Tensor.randomNormal([layout.rows, c], using: &rng)
        let (y, trace) = model.forward(x, layout: layout, causal: true, keepCaches: true)
        var none: [ResidualBlock.Grads]? = nil
        let dx = model.backward(r, trace: trace, grads: &none)
        var row = 0
        for (g, group) in groups.enumerated() {
            let alone = SequenceLayout(prefix: group.prefix, lengths: group.lengths)
            let rows = row..<(row + alone.rows)
            let (ya, ta) = model.forward(x.slice(rows: rows), layout: alone, causal: true, keepCaches: true)
            let dxa = model.backward(r.slice(rows: rows), trace: ta, grads: &none)
            assertClose(y.slice(rows: rows), ya, atol: 1e-5, "group \(g) output")
            assertClose(dx.slice(rows: rows), dxa, atol: 1e-5, "group \(g) input gradient")
            row += alone.rows
        }
        XCTAssertEqual(row, layout.rows)
        checkGradient("several prefixes dx", at: x, analytic: dx) { project(model.forward($0, layout: layout, causal: true).0, r) }
        // A workspace's reused buffers give the same (dqkv starts from zero with any prefix).
        let workspace = Workspace()
        for _ in 0..<2 {
            var (yw, tw) = model.forward(x, layout: layout, causal: true, keepCaches: true, workspace: workspace, keepLinearInputs: false)
            XCTAssertEqual(yw, y)
            XCTAssertEqual(model.backward(r, releasing: &tw, grads: &none, workspace: workspace), dx)
            workspace.recycle(yw)
            yw = Tensor(zeros: [0])
            XCTAssertTrue(yw.data.isEmpty)
        }
    }

    func testPositionsAndSpans() {
        let layout = SequenceLayout(groups: [(prefix: 3, lengths: [2, 1]), (prefix: 0, lengths: [4]), (prefix: 3, lengths: [3])])
        XCTAssertEqual(layout.rowOffsets, [3, 5, 6, 13])
        XCTAssertEqual(layout.positions, [0, 1, 2, 3, 4, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5])
        // Positions 1..<3: in the first prefix (once for its two sequences), in the sequence
        // without a prefix, in the last prefix.
        XCTAssertEqual(layout.spanStarts(position: 1, count: 2), [1, 7, 11])
        // Past the prefix: in each sequence's own rows.
        XCTAssertEqual(layout.spanStarts(position: 3, count: 1), [3, 5, 9, 13])
        XCTAssertEqual(SequenceLayout(lengths: [4, 5]).spanStarts(position: 2, count: 2), [2, 6])
        // Today's single prefix: one group, prefix first.
        let single = SequenceLayout(prefix: 3, lengths: [2, 4])
        XCTAssertEqual(single, SequenceLayout(groups: [(prefix: 3, lengths: [2, 4])]))
        XCTAssertEqual(single.rowOffsets, [3, 5])
        XCTAssertEqual(single.prefixes.map(\.rowOffset), [0])
        XCTAssertEqual(single.prefixes.map(\.sequences), [0..<2])
        XCTAssertTrue(SequenceLayout(lengths: [2, 4]).prefixes.isEmpty)
    }
}
