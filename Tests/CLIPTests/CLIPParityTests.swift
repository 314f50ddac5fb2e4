import CLIP
import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// Every stage of the Swift CLIP against openai's PyTorch code (reference/clip_goldens.py).
///
/// CI uses the committed tiny goldens. For ViT-B/16:
///   python3 reference/write_checkpoints.py --config vit-b-16 --out /tmp/vitb16
///   python3 reference/clip_goldens.py --config vit-b-16 --out /tmp/vitb16/model
///   PROMPTTUNE_GOLDENS=/tmp/vitb16/model PROMPTTUNE_CHECKPOINT=/tmp/vitb16/state_dict.pt \
///     swift test -c release --filter CLIPParityTests
final class CLIPParityTests: XCTestCase {
    static let env = ProcessInfo.processInfo.environment
    static let goldenDir = env["PROMPTTUNE_GOLDENS"] ?? repoRoot.appendingPathComponent("Goldens/tiny/model").path
    static let checkpoint = env["PROMPTTUNE_CHECKPOINT"] ?? repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path

    struct Meta: Decodable {
        var tokens: [[Int]]
        var eot: [Int]
        var labels: [Int]
        var logit_scale: Float
    }

    // Loaded once for all tests.
    static let fixture: (model: CLIPModel, g: [String: Tensor], meta: Meta)? = {
        guard let weights = try? loadCLIPWeights(path: checkpoint),
              let model = try? CLIPModel(config: weights.config, tensors: weights.tensors),
              let g = try? Safetensors.read(path: goldenDir + "/goldens.safetensors").tensors,
              let data = FileManager.default.contents(atPath: goldenDir + "/meta.json"),
              let meta = try? JSONDecoder().decode(Meta.self, from: data) else { return nil }
        return (model, g, meta)
    }()

    func load() throws -> (CLIPModel, [String: Tensor], Meta) {
        guard let f = Self.fixture else {
            // Surface the real error.
            let w = try loadCLIPWeights(path: Self.checkpoint)
            _ = try CLIPModel(config: w.config, tensors: w.tensors)
            _ = try Safetensors.read(path: Self.goldenDir + "/goldens.safetensors")
            throw XCTSkip("goldens unreadable at \(Self.goldenDir)")
        }
        return f
    }

    // Tolerances: float32 with different summation orders; hidden states grow with depth.
    let atol: Float = 2e-5, rtol: Float = 1e-4

    func testTextTowerEveryStage() throws {
        let (model, g, meta) = try load()
        let emb = model.text.embed(meta.tokens)
        XCTAssertEqual(emb, g["text_embeddings"]!, "token embedding lookup is exact")
        let (features, trace) = model.text.forward(embeddings: emb, eot: meta.eot, keepHiddenStates: true)
        XCTAssertEqual(eotPositions(meta.tokens), meta.eot)
        XCTAssertEqual(trace.outputRows.count, meta.eot.count)
        // Hidden states come packed (each row cut after its EOT); compare those positions.
        for (i, h) in trace.blocks.hiddenStates.enumerated() {
            let want = g["text_block_\(i)"]!.packed(trace.layout)
            assertAgrees(h, want, atol: 1e-4, rtol: 1e-4, "text block \(i)")
        }
        assertAgrees(trace.pooled, g["text_pooled"]!, atol: 1e-4, rtol: 1e-4, "text pooled")
        assertAgrees(features, g["text_features"]!, atol: atol, rtol: rtol, "text features")
        // Rows cut after the last EOT give the same features (causal mask).
        assertAgrees(model.encodeText(meta.tokens), g["text_features"]!, atol: atol, rtol: rtol, "text features, rows cut")
    }

    func testImageTowerEveryStage() throws {
        let (model, g, _) = try load()
        let (features, trace) = model.image.forward(pixels: g["pixels"]!, keepHiddenStates: true)
        for (i, h) in trace.blocks.hiddenStates.enumerated() {
            assertAgrees(h, g["image_block_\(i)"]!, atol: 1e-4, rtol: 1e-4, "image block \(i)")
        }
        assertAgrees(features, g["image_features"]!, atol: atol, rtol: rtol, "image features")
        assertAgrees(model.encodeImage(g["pixels"]!, chunk: 1), g["image_features"]!, atol: atol, rtol: rtol, "image features, chunked")
    }

    func testLogits() throws {
        let (model, g, meta) = try load()
        XCTAssertEqual(model.logitScale, meta.logit_scale, accuracy: 1e-4 * meta.logit_scale)
        let logits = model.logits(imageFeatures: g["image_features"]!, textFeatures: g["text_features"]!)
        assertAgrees(logits, g["logits"]!, atol: 1e-3, rtol: 1e-4, "logits")
    }

    /// Cross-entropy over images (with 3 extra tokens) x texts (given as embeddings), backward to
    /// the text input embeddings and the extra tokens, as PyTorch's autograd gives them.
    func testGradientsToTextEmbeddingsAndExtraImageTokens() throws {
        let (model, g, meta) = try load()
        let extra = g["grad_extra_tokens_input"]!
        let (imf, itrace) = model.image.forward(pixels: g["pixels"]!, extraTokens: extra, keepCaches: true)
        assertAgrees(imf, g["grad_image_features"]!, atol: atol, rtol: rtol, "image features with extra tokens")
        let (tf, ttrace) = model.text.forward(embeddings: g["text_embeddings"]!, eot: meta.eot, keepCaches: true)
        let (imn, icache) = L2Normalize.forward(imf)
        let (tn, tcache) = L2Normalize.forward(tf)
        let s = model.logitScale
        let logits = matmul(imn, tn, transB: true) * s  // B_i, B_t
        let (bi, bt) = (logits.shape[0], logits.shape[1])
        // Cross-entropy (mean over images) and its gradient softmax - onehot.
        var loss = 0.0
        var dLogits = Tensor(zeros: logits.shape)
        for i in 0..<bi {
            let row = (0..<bt).map { Double(logits[i * bt + $0]) }
            let mx = row.max()!
            let z = row.map { exp($0 - mx) }.reduce(0, +)
            loss += -(row[meta.labels[i]] - mx - log(z)) / Double(bi)
            for j in 0..<bt {
                dLogits[i * bt + j] = Float((exp(row[j] - mx) / z - (j == meta.labels[i] ? 1 : 0)) / Double(bi))
            }
        }
        XCTAssertEqual(loss, Double(g["grad_loss"]![0]), accuracy: 1e-4)
        var dImf = Tensor(zeros: imf.shape), dTf = Tensor(zeros: tf.shape)
        L2Normalize.backward(matmul(dLogits, tn) * s, cache: icache, dx: &dImf)
        L2Normalize.backward(matmul(dLogits, imn, transA: true) * s, cache: tcache, dx: &dTf)
        let dEmb = model.text.backward(dTf, trace: ttrace, tokens: g["text_embeddings"]!.shape[1])
        let dExtra = model.image.backwardToExtraTokens(dImf, trace: itrace)
        let wantEmb = g["grad_text_embeddings"]!, wantExtra = g["grad_extra_tokens"]!
        assertAgrees(dEmb, wantEmb, atol: 1e-4 * wantEmb.maxAbs, rtol: 1e-3, "grad text embeddings")
        // After each EOT the reference gradient is exactly zero, as ours is by construction.
        for (i, e) in meta.eot.enumerated() {
            let c = wantEmb.shape[2], t = wantEmb.shape[1]
            XCTAssertEqual(wantEmb.data[(i * t + e + 1) * c ..< (i + 1) * t * c].map(abs).max(), 0)
        }
        assertAgrees(dExtra, wantExtra, atol: 1e-4 * wantExtra.maxAbs, rtol: 1e-3, "grad extra image tokens")
    }
}
