import CLIP
import TensorCore
import TestSupport
import XCTest

/// The towers' prompt hooks on a tiny random CLIP (3 blocks per tower): where image prompt tokens
/// enter, deep prompts replacing rows before later blocks in both towers, and the gradients the
/// frozen towers return for them.
final class TowerHookTests: XCTestCase {
    static let config = CLIPConfig(embedDim: 8, imageResolution: 8, patchSize: 4, visionWidth: 16, visionLayers: 3,
                                   visionHeads: 2, contextLength: 12, vocabSize: 40, textWidth: 16, textLayers: 3, textHeads: 2)
    static let model = CLIPModel.random(config: config, seed: 3)

    /// sum(w * y) in Double.
    func project(_ y: Tensor, _ w: Tensor) -> Double {
        zip(y.data, w.data).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Finite differences of sum(w * features) w.r.t. the extra tokens (both entries, shared by the
    /// batch and per image) and w.r.t. deep prompts replacing their rows before blocks 1 and 2.
    func testImagePromptGradientsForBothEntries() {
        let tower = Self.model.image
        var rng = SeededGenerator(seed: 41)
        let b = 2, n = 3, wd = tower.width
        let pixels = Tensor.randomNormal([b, 3, tower.resolution, tower.resolution], using: &rng)
        let w = Tensor.randomNormal([b, Self.config.embedDim], using: &rng)
        for entry in [ImagePromptEntry.afterLnPre, .appendedBeforeLnPre] {
            for shape in [[n, wd], [b, n, wd]] {
                let extra = Tensor.randomUniform(shape, -0.5, 0.5, using: &rng)
                let deep = [1: Tensor.randomUniform(shape, -0.5, 0.5, using: &rng), 2: Tensor.randomUniform(shape, -0.5, 0.5, using: &rng)]
                func loss(_ extra: Tensor, _ deep: [Int: Tensor]) -> Double {
                    project(tower.forward(pixels: pixels, extraTokens: extra, promptEntry: entry, deepPrompts: deep).0, w)
                }
                let (_, trace) = tower.forward(pixels: pixels, extraTokens: extra, promptEntry: entry, deepPrompts: deep, keepCaches: true)
                var dDeep: [Int: Tensor] = [:]
                let dExtra = tower.backwardToExtraTokens(w, trace: trace, deepPromptGrads: &dDeep)
                let what = "\(entry) \(shape)"
                XCTAssertEqual(dExtra.shape, shape)
                XCTAssertEqual(Set(dDeep.keys), [1, 2])
                for g in [dExtra, dDeep[1]!, dDeep[2]!] { XCTAssertGreaterThan(g.maxAbs, 1e-4, "\(what): the gradient must not vanish") }
                checkGradient("extra tokens \(what)", at: extra, analytic: dExtra, maxProbes: 96) { loss($0, deep) }
                for block in [1, 2] {
                    checkGradient("deep prompt block \(block) \(what)", at: deep[block]!, analytic: dDeep[block]!, maxProbes: 96) {
                        var d = deep
                        d[block] = $0
                        return loss(extra, d)
                    }
                }
                // The releasing backward (workspace, linear inputs dropped) gives the same bits.
                let workspace = Workspace()
                var (_, traceW) = tower.forward(pixels: pixels, extraTokens: extra, promptEntry: entry, deepPrompts: deep,
                                                keepCaches: true, workspace: workspace, keepLinearInputs: false)
                var dDeepW: [Int: Tensor] = [:]
                XCTAssertEqual(tower.backwardToExtraTokens(w, releasing: &traceW, deepPromptGrads: &dDeepW, workspace: workspace), dExtra, what)
                XCTAssertEqual(dDeepW[1], dDeep[1], what)
                XCTAssertEqual(dDeepW[2], dDeep[2], what)
            }
        }
    }

    /// MaPLe's entry built by hand: [class; patches] + positional embedding, the prompt rows
    /// appended without one, ln_pre over all of them, then the blocks; and the full backward's
    /// ln_pre gradients include the prompt rows'.
    func testAppendedEntryIsAppendedBeforeLnPre() {
        let tower = Self.model.image
        var rng = SeededGenerator(seed: 42)
        let b = 2, n = 2, wd = tower.width, gg = tower.patchesPerImage
        let pixels = Tensor.randomNormal([b, 3, tower.resolution, tower.resolution], using: &rng)
        let extra = Tensor.randomNormal([n, wd], using: &rng)
        let patches = tower.patchEmbedding.forward(tower.patchify(pixels))
        var rows: [Float] = []
        for i in 0..<b {
            var image = tower.classEmbedding.data + patches.data[(i * gg * wd)..<((i + 1) * gg * wd)]
            for k in 0..<image.count { image[k] += tower.positionalEmbedding[k] }
            rows += image + extra.data
        }
        let t = 1 + gg + n
        let h = tower.lnPre.forward(Tensor(shape: [b * t, wd], data: rows)).0
        let out = tower.transformer.forward(h, layout: .uniform(batch: b, tokens: t), causal: false).0
        let want = matmul(tower.lnPost.forward(out.gatherRows((0..<b).map { $0 * t })).0, tower.projection)
        let (got, trace) = tower.forward(pixels: pixels, extraTokens: extra, promptEntry: .appendedBeforeLnPre, keepCaches: true)
        assertClose(got, want, atol: 1e-6, "appended before ln_pre")
        XCTAssertEqual(trace.tokens, t)
        XCTAssertEqual(trace.promptRow, 1 + gg)
        // The weight-gradient backward: ln_pre's weight gradient by finite differences (the
        // prompt rows' share included), and the same extra-token gradient as the frozen backward.
        let w = Tensor.randomNormal([b, Self.config.embedDim], using: &rng)
        var grads = Self.model.zeroGradient().image
        let dExtra = tower.backward(w, trace: trace, grads: &grads)
        XCTAssertEqual(dExtra, tower.backwardToExtraTokens(w, trace: trace))
        checkGradient("ln_pre weight, appended prompts", at: tower.lnPre.weight, analytic: grads.lnPre.weight) {
            var changed = tower
            changed.lnPre.weight = $0
            return project(changed.forward(pixels: pixels, extraTokens: extra, promptEntry: .appendedBeforeLnPre).0, w)
        }
    }

    /// Deep prompts equal to the rows each block already receives change nothing, bit for bit,
    /// and without hooks the default entry is today's path.
    func testImageDeepPromptsWithTheirOwnValuesAreBitIdentical() {
        let tower = Self.model.image
        var rng = SeededGenerator(seed: 43)
        let b = 2, n = 3, wd = tower.width
        let pixels = Tensor.randomNormal([b, 3, tower.resolution, tower.resolution], using: &rng)
        for entry in [ImagePromptEntry.afterLnPre, .appendedBeforeLnPre] {
            let extra = Tensor.randomNormal([n, wd], using: &rng)
            let (plain, hidden) = tower.forward(pixels: pixels, extraTokens: extra, promptEntry: entry, keepHiddenStates: true)
            let t = hidden.tokens, row = hidden.promptRow
            // Block i's input rows of the prompt tokens: block i-1's output, per image.
            func own(_ block: Int) -> Tensor {
                let states = hidden.blocks.hiddenStates[block - 1]
                var data: [Float] = []
                for i in 0..<b {
                    let first = (i * t + row) * wd
                    data += states.data[first..<(first + n * wd)]
                }
                return Tensor(shape: [b, n, wd], data: data)
            }
            let deep = [1: own(1), 2: own(2)]
            XCTAssertEqual(tower.forward(pixels: pixels, extraTokens: extra, promptEntry: entry, deepPrompts: deep).0,
                           tower.forward(pixels: pixels, extraTokens: extra, promptEntry: entry).0, "\(entry)")
            XCTAssertEqual(tower.forward(pixels: pixels, extraTokens: extra, promptEntry: entry, deepPrompts: deep, keepHiddenStates: true).0,
                           plain, "\(entry), hidden states kept")
        }
        XCTAssertEqual(tower.forward(pixels: pixels, extraTokens: Tensor.randomNormal([n, wd], using: &rng), deepPrompts: [:]).1.promptRow, 1)
    }

    /// Text: deep prompts replacing positions 1..<1+n (after SOS) before blocks 1 and 2, in plain
    /// packed sequences and with CoOp's shared prefix: finite differences, and their own values
    /// bit-identical to no hook.
    func testTextDeepPrompts() {
        let tower = Self.model.text
        var rng = SeededGenerator(seed: 44)
        let c = tower.width, n = 2
        let layouts = [SequenceLayout(lengths: [5, 4, 7]), SequenceLayout(prefix: 3, lengths: [2, 1, 4]),
                       SequenceLayout(groups: [(prefix: 3, lengths: [2, 3]), (prefix: 3, lengths: [1])])]
        for layout in layouts {
            var h = Tensor.randomNormal([layout.rows, c], using: &rng)
            let positions = layout.positions
            for r in 0..<layout.rows { for k in 0..<c { h[r * c + k] += tower.positionalEmbedding[positions[r] * c + k] } }
            let w = Tensor.randomNormal([layout.lengths.count, Self.config.embedDim], using: &rng)
            let values = [1: Tensor.randomNormal([n, c], using: &rng), 2: Tensor.randomNormal([n, c], using: &rng)]
            func loss(_ v: [Int: Tensor]) -> Double {
                project(tower.forward(packed: h, layout: layout, deepPrompts: DeepPrompts(values: v, position: 1, layout: layout)).0, w)
            }
            let what = "\(layout.lengths) prefixes \(layout.prefixes.count)"
            let (_, trace) = tower.forward(packed: h, layout: layout, deepPrompts: DeepPrompts(values: values, position: 1, layout: layout),
                                           keepCaches: true)
            var grads: [Int: Tensor] = [:]
            let dRows = tower.backwardPacked(w, trace: trace, deepPromptGrads: &grads)
            for block in [1, 2] {
                XCTAssertGreaterThan(grads[block]!.maxAbs, 1e-4, "\(what): the gradient must not vanish")
                checkGradient("text deep prompt block \(block) \(what)", at: values[block]!, analytic: grads[block]!, maxProbes: 96) {
                    var v = values
                    v[block] = $0
                    return loss(v)
                }
            }
            let workspace = Workspace()
            var (_, traceW) = tower.forward(packed: h, layout: layout, deepPrompts: DeepPrompts(values: values, position: 1, layout: layout),
                                            keepCaches: true, workspace: workspace, keepLinearInputs: false)
            var gradsW: [Int: Tensor] = [:]
            XCTAssertEqual(tower.backwardPacked(w, releasing: &traceW, deepPromptGrads: &gradsW, workspace: workspace), dRows, what)
            XCTAssertEqual(gradsW[1], grads[1], what)
            XCTAssertEqual(gradsW[2], grads[2], what)
            // Their own values: the rows block i receives (block i-1's output at the spans).
            let (plain, hidden) = tower.forward(packed: h, layout: layout, keepHiddenStates: true)
            let starts = layout.spanStarts(position: 1, count: n)
            func own(_ block: Int) -> Tensor {
                let s = hidden.blocks.hiddenStates[block - 1]
                return Tensor(shape: [starts.count, n, c], data: starts.flatMap { Array(s.data[($0 * c)..<(($0 + n) * c)]) })
            }
            let hooked = tower.forward(packed: h, layout: layout, deepPrompts: DeepPrompts(values: [1: own(1), 2: own(2)], position: 1, layout: layout),
                                       keepHiddenStates: true).0
            XCTAssertEqual(hooked, plain, "own values, \(what)")
        }
    }

    /// CoCoOp's layout in the text tower: one prefix per image shared by its classes gives each
    /// group's features as run alone, and the positional embedding's gradient their sum.
    func testSeveralPrefixesInTheTextTower() {
        let tower = Self.model.text
        var rng = SeededGenerator(seed: 45)
        let c = tower.width
        let groups: [(prefix: Int, lengths: [Int])] = [(4, [2, 3, 1]), (4, [3, 1, 2])]
        let layout = SequenceLayout(groups: groups)
        let h = Tensor.randomNormal([layout.rows, c], using: &rng)
        let w = Tensor.randomNormal([layout.lengths.count, Self.config.embedDim], using: &rng)
        let (features, trace) = tower.forward(packed: h, layout: layout, keepCaches: true)
        var grads: TextTower? = Self.model.zeroGradient().text
        let dRows = tower.backwardPacked(w, trace: trace, grads: &grads)
        var row = 0, sequence = 0
        var positionalSum = Tensor(zeros: tower.positionalEmbedding.shape)
        for (g, group) in groups.enumerated() {
            let alone = SequenceLayout(prefix: group.prefix, lengths: group.lengths)
            let rows = row..<(row + alone.rows), classes = sequence..<(sequence + group.lengths.count)
            let (fa, ta) = tower.forward(packed: h.slice(rows: rows), layout: alone, keepCaches: true)
            assertClose(features.slice(rows: classes), fa, atol: 1e-6, "group \(g) features")
            var ga: TextTower? = Self.model.zeroGradient().text
            let da = tower.backwardPacked(w.slice(rows: classes), trace: ta, grads: &ga)
            assertClose(dRows.slice(rows: rows), da, atol: 1e-6, "group \(g) input gradient")
            positionalSum.accumulate(ga!.positionalEmbedding)
            row += alone.rows
            sequence += group.lengths.count
        }
        assertClose(grads!.positionalEmbedding, positionalSum, atol: 1e-6, "positional embedding gradient")
    }
}
