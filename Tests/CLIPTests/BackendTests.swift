import CLIP
import TensorCore
import TestSupport
import XCTest

/// The backend interface as the model sees it: the operations against plain loops, and a
/// backend that belongs to a model (set for all its layers, never leaking into another model).
final class BackendTests: XCTestCase {
    static let config = CLIPConfig(embedDim: 8, imageResolution: 8, patchSize: 4, visionWidth: 16, visionLayers: 2,
                                   visionHeads: 2, contextLength: 12, vocabSize: 64, textWidth: 16, textLayers: 2, textHeads: 2)

    func testRowOperationsEqualPlainLoops() {
        var rng = SeededGenerator(seed: 41)
        let backend = CPUBackend.default
        let src = Tensor.randomNormal([6, 5], using: &rng)
        var dst = Tensor.randomNormal([7, 5], using: &rng)
        var want = dst
        // Spans in order; the second and third add onto the same rows (sums in span order).
        let spans = [RowSpan(source: 0, target: 1, count: 2), RowSpan(source: 3, target: 4, count: 3), RowSpan(source: 2, target: 4, count: 1)]
        backend.copyRows(src, into: &dst, spans: spans, accumulate: true)
        for s in spans { for r in 0..<s.count { for x in 0..<5 { want[(s.target + r) * 5 + x] += src[(s.source + r) * 5 + x] } } }
        XCTAssertEqual(dst, want)
        backend.copyRows(src, into: &dst, spans: [RowSpan(source: 5, target: 0, count: 1)], accumulate: false)
        for x in 0..<5 { want[x] = src[25 + x] }
        XCTAssertEqual(dst, want)

        let rows = [4, 0, 4, 2]
        XCTAssertEqual(backend.gatherRows(src, rows), Tensor(shape: [4, 5], data: rows.flatMap { r in (0..<5).map { src[r * 5 + $0] } }))
        var scattered = Tensor(zeros: [6, 5]), expected = scattered
        let g = Tensor.randomNormal([4, 5], using: &rng)
        backend.scatterAddRows(g, rows: rows, into: &scattered)
        for (i, r) in rows.enumerated() { for x in 0..<5 { expected[r * 5 + x] += g[i * 5 + x] } }
        XCTAssertEqual(scattered, expected)

        var blocks = Tensor.randomNormal([6, 5], using: &rng), blocksWant = blocks
        let block = Tensor.randomNormal([3, 5], using: &rng)
        backend.addBroadcast(block, to: &blocks)
        for i in 0..<30 { blocksWant[i] += block[i % 15] }
        XCTAssertEqual(blocks, blocksWant)

        var sums = Tensor(shape: [5], data: [1, 2, 3, 4, 5]), sumsWant = sums
        backend.columnSums(src, accumulating: &sums)
        for r in 0..<6 { for x in 0..<5 { sumsWant[x] += src[r * 5 + x] } }
        XCTAssertEqual(sums, sumsWant)

        var y = Tensor.randomNormal([6, 5], using: &rng), yWant = y
        backend.axpy(0.5, src, &y)
        for i in 0..<30 { yWant[i] += 0.5 * src[i] }
        assertClose(y, yWant, atol: 1e-6, "axpy")
    }

    func testPatchifyLaysOutPatchesAsTheKernel() {
        var rng = SeededGenerator(seed: 42)
        let (b, r, p) = (2, 8, 4)
        let pixels = Tensor.randomNormal([b, 3, r, r], using: &rng)
        var out = Tensor(zeros: [b * 4, 3 * p * p])
        CPUBackend.default.patchify(pixels, patchSize: p, into: &out)
        for i in 0..<b { for gy in 0..<2 { for gx in 0..<2 { for ch in 0..<3 { for y in 0..<p { for x in 0..<p {
            let row = (i * 2 + gy) * 2 + gx, col = (ch * p + y) * p + x
            XCTAssertEqual(out[row * 3 * p * p + col], pixels[((i * 3 + ch) * r + gy * p + y) * r + gx * p + x])
        } } } } } }
    }

    /// Setting a model's backend reaches every layer of both towers; another model, and the
    /// default, keep theirs (the product library used to be one process-wide setting).
    func testBackendBelongsToTheModel() {
        let model = CLIPModel.random(config: Self.config, seed: 3)
        let naive = model.on(CPUBackend(gemm: .naive))
        func names(_ m: CLIPModel) -> Set<String> {
            var out: Set<String> = [m.text.lnFinal.backend.name, m.image.patchEmbedding.backend.name, m.image.lnPre.backend.name,
                                    m.image.lnPost.backend.name]
            for blk in m.text.transformer.blocks + m.image.transformer.blocks {
                for n in [blk.ln1.backend.name, blk.ln2.backend.name, blk.fc.backend.name, blk.proj.backend.name,
                          blk.attention.inProj.backend.name, blk.attention.outProj.backend.name] { out.insert(n) }
            }
            return out
        }
        XCTAssertEqual(names(naive), ["cpu naive fp32"])
        XCTAssertEqual(names(model), [defaultBackend.name])
        XCTAssertEqual(defaultBackend.name, CPUBackend.default.name)
        // Same numbers to rounding on both: the naive loops accumulate in Double.
        var rng = SeededGenerator(seed: 4)
        let pixels = Tensor.randomNormal([2, 3, 8, 8], using: &rng)
        assertClose(naive.encodeImage(pixels), model.encodeImage(pixels), atol: 1e-4, rtol: 1e-4, "image features")
        let tokens = [[1, 5, 9, 63, 0], [1, 7, 63, 0, 0]]
        assertClose(naive.encodeText(tokens), model.encodeText(tokens), atol: 1e-4, rtol: 1e-4, "text features")
    }

    /// Both towers' work goes through the model's backend: on a backend that counts its calls, a
    /// visual-prompt forward and backward and a full text backward equal the CPU model's bit for
    /// bit, and every kind of operation they need was called (a tower doing one on host memory
    /// instead would leave its count at zero).
    func testTowersRunThroughTheirBackend() {
        let model = CLIPModel.random(config: Self.config, seed: 5)
        let recording = RecordingBackend()
        let recorded = model.on(recording)
        var rng = SeededGenerator(seed: 6)
        let pixels = Tensor.randomNormal([2, 3, 8, 8], using: &rng)
        let extra = Tensor.randomNormal([3, 16], std: 0.1, using: &rng), deep = Tensor.randomNormal([3, 16], std: 0.1, using: &rng)
        let dFeatures = Tensor.randomNormal([2, 8], using: &rng)
        func visual(_ m: CLIPModel) -> (Tensor, Tensor, [Int: Tensor]) {
            let workspace = Workspace(backend: m.backend)
            var (f, trace) = m.image.forward(pixels: pixels, extraTokens: extra, deepPrompts: [1: deep], keepCaches: true,
                                             workspace: workspace, keepLinearInputs: false)
            var deepGrads: [Int: Tensor] = [:]
            let g = m.image.backwardToExtraTokens(dFeatures, releasing: &trace, deepPromptGrads: &deepGrads, workspace: workspace)
            return (f, g, deepGrads)
        }
        let (want, got) = (visual(model), visual(recorded))
        XCTAssertEqual(got.0, want.0, "image features")
        XCTAssertEqual(got.1, want.1, "extra tokens' gradient")
        XCTAssertEqual(got.2, want.2, "deep prompt's gradient")
        let imageCalls = recording.calls
        for op in ["patchify", "copyRows", "copyRows+", "addBroadcast", "layerNorm", "layerNormBackward", "linear",
                   "linearInputGradient", "attention", "attentionBackward", "quickGELU", "quickGELUBackward", "add",
                   "gatherRows", "matmul", "makeTensor"] {
            XCTAssertGreaterThan(imageCalls[op] ?? 0, 0, "image tower: \(op)")
        }

        recording.reset()
        let tokens = [[1, 5, 9, 63, 0], [1, 7, 63, 0, 0]]
        func text(_ m: CLIPModel) -> (Tensor, TextTower) {
            let eot = eotPositions(tokens)
            let (f, trace) = m.text.forward(embeddings: m.text.embed(tokens), eot: eot, keepCaches: true)
            var grads = CLIPModel.random(config: Self.config, seed: 5).zeroGradient().text
            m.text.backward(dFeatures, trace: trace, tokens: tokens, grads: &grads)
            return (f, grads)
        }
        let (tw, tg) = (text(model), text(recorded))
        XCTAssertEqual(tg.0, tw.0, "text features")
        XCTAssertEqual(tg.1.tokenEmbedding, tw.1.tokenEmbedding, "token embedding gradient")
        XCTAssertEqual(tg.1.transformer.blocks[0].fc.weight, tw.1.transformer.blocks[0].fc.weight, "a block's weight gradient")
        for op in ["gatherRows", "copyRows", "copyRows+", "scatterAddRows", "columnSums", "attention", "attentionBackward", "matmul"] {
            XCTAssertGreaterThan(recording.calls[op] ?? 0, 0, "text tower: \(op)")
        }

        // The fp16 model rounds its activations on its backend.
        recording.reset()
        _ = model.roundedToHalf().on(recording).encodeImage(pixels)
        XCTAssertGreaterThan(recording.calls["roundToHalf"] ?? 0, 0)
        XCTAssertGreaterThan(recording.calls["quickGELUHalf"] ?? 0, 0)
    }
}
