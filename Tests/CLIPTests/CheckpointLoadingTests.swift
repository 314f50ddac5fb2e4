import Foundation
import TestSupport
import XCTest
import TensorCore
import TensorIO
@testable import CLIP

/// Loads the tiny CLIP goldens written by `reference/write_checkpoints.py` in all four formats, and
/// damaged copies of them made on the fly.
final class CheckpointLoadingTests: XCTestCase {
    static let goldens = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints")

    let tinyConfig = CLIPConfig(embedDim: 32, imageResolution: 32, patchSize: 8, visionWidth: 128, visionLayers: 2,
                                visionHeads: 2, contextLength: 77, vocabSize: 49408, textWidth: 64, textLayers: 2, textHeads: 1)

    func golden(_ name: String) -> String { Self.goldens.appendingPathComponent(name).path }

    func assertBitIdentical(_ a: CLIPWeights, _ b: CLIPWeights, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Set(a.tensors.keys), Set(b.tensors.keys), "\(a.format) vs \(b.format)", file: file, line: line)
        for (name, t) in a.tensors {
            guard let u = b.tensors[name] else { continue }
            XCTAssertEqual(t.shape, u.shape, "\(name): \(a.format) vs \(b.format)", file: file, line: line)
            let same = t.data.count == u.data.count && t.data.withUnsafeBytes { x in
                u.data.withUnsafeBytes { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 }
            }
            if !same {
                XCTFail("\(name) differs between \(a.format) and \(b.format)", file: file, line: line)
            }
        }
    }

    // MARK: - The four formats

    func testAllFormatsLoadIdentically() throws {
        let cases: [(String, CheckpointFormat)] = [
            ("openai.pt", .torchScript), ("state_dict.pt", .stateDict),
            ("open_clip_model.safetensors", .openCLIPSafetensors), ("hf", .huggingFace),
            ("hf/model.safetensors", .huggingFace), ("hf/config.json", .huggingFace),
        ]
        var loaded: [CLIPWeights] = []
        for (name, format) in cases {
            let w = try loadCLIPWeights(path: golden(name))
            XCTAssertEqual(w.format, format, name)
            XCTAssertEqual(try detectCheckpointFormat(path: golden(name)), format, name)
            XCTAssertEqual(w.config, tinyConfig, name)
            XCTAssertEqual(w.tensors.count, 62, name)
            let expected = expectedCLIPTensorShapes(tinyConfig)
            XCTAssertEqual(expected.count, 62)
            for (key, shape) in expected { XCTAssertEqual(w.tensors[key]?.shape, shape, "\(name): \(key)") }
            loaded.append(w)
        }
        for w in loaded.dropFirst() { assertBitIdentical(loaded[0], w) }
        // Spot checks: names and values that only line up if the renaming is right.
        let sd = loaded[1], hf = loaded[3]
        XCTAssertEqual(sd.tensors["logit_scale"]?.shape, [])
        XCTAssertNotEqual(sd.tensors["visual.proj"]?.data, sd.tensors["visual.proj"].map { $0.transposed().data })
        XCTAssertEqual(hf.hiddenAct, "quick_gelu")
        XCTAssertNil(sd.hiddenAct)
    }

    func testWrappedStateDictsAreUnwrapped() throws {
        let base = try loadCLIPWeights(path: golden("open_clip_model.safetensors"))
        let dir = try makeTempDir(self, prefix: "clip-ckpt-tests")
        for prefix in ["module.", "state_dict.", "state_dict.module.", "model."] {
            var renamed: [String: Tensor] = [:]
            for (k, v) in base.tensors { renamed[prefix + k] = v }
            renamed["epoch"] = Tensor(shape: [], data: [3])            // unrelated entries of a training checkpoint
            renamed["optimizer.state.0.exp_avg"] = Tensor(shape: [2], data: [0, 0])
            let url = dir.appendingPathComponent("wrapped.safetensors")
            try Safetensors.write(tensors: renamed, to: url, dtype: .float16)
            let w = try loadCLIPWeights(path: url.path)
            XCTAssertEqual(w.config, tinyConfig, prefix)
            assertBitIdentical(base, w)
        }
    }

    /// A training checkpoint as torch.save writes it: {"epoch": 3, "state_dict": {"module.<name>": fp16 tensor}}.
    func testWrappedTorchSaveCheckpoint() throws {
        let base = try loadCLIPWeights(path: golden("state_dict.pt"))
        var writer = TorchSaveWriter()
        let state = PickleDict()
        for name in base.tensors.keys.sorted() {
            state.set(.string("module." + name), try writer.add(base.tensors[name]!, dtype: .float16))
        }
        let root = PickleDict()
        root.set(.string("epoch"), .int(3))
        root.set(.string("state_dict"), .dict(state))
        let url = try makeTempDir(self, prefix: "clip-ckpt-tests").appendingPathComponent("epoch_3.pt")
        try writer.write(root: .dict(root), to: url, archiveName: "epoch_3")
        let w = try loadCLIPWeights(path: url.path)
        XCTAssertEqual(w.format, .stateDict)
        XCTAssertEqual(w.config, tinyConfig)
        assertBitIdentical(base, w)
    }

    // MARK: - Errors

    func testMissingFile() {
        let path = Self.goldens.appendingPathComponent("no_such_checkpoint.pt").path
        assertThrows(try loadCLIPWeights(path: path), contains: [path, "no such file"])
    }

    func testRandomBytes() throws {
        let dir = try makeTempDir(self, prefix: "clip-ckpt-tests")
        var rng = SystemRandomNumberGenerator()
        _ = rng.next()
        var state: UInt64 = 0x9e37_79b9_7f4a_7c15
        var bytes = (0..<4096).map { _ -> UInt8 in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        bytes[0] = 0x13; bytes[8] = 0x21  // neither 'PK', a pickle, nor '{' at offset 8
        let url = dir.appendingPathComponent("random.pt")
        try Data(bytes).write(to: url)
        assertThrows(try loadCLIPWeights(path: url.path), contains: [url.path, "unknown checkpoint format", "13 "])
    }

    func testTruncatedZip() throws {
        let dir = try makeTempDir(self, prefix: "clip-ckpt-tests")
        let data = try Data(contentsOf: Self.goldens.appendingPathComponent("openai.pt"))
        let url = dir.appendingPathComponent("openai.pt")
        try data.prefix(data.count / 2).write(to: url)
        assertThrows(try loadCLIPWeights(path: url.path), contains: [url.path, "truncated zip archive", "download"])
    }

    func testTruncatedSafetensors() throws {
        let dir = try makeTempDir(self, prefix: "clip-ckpt-tests")
        let data = try Data(contentsOf: Self.goldens.appendingPathComponent("open_clip_model.safetensors"))
        let url = dir.appendingPathComponent("open_clip_model.safetensors")
        try data.prefix(data.count / 2).write(to: url)
        assertThrows(try loadCLIPWeights(path: url.path),
                     contains: [url.path, "truncated safetensors file", "extends past the end of the file"])
        // Cut inside the header.
        try data.prefix(100).write(to: url)
        assertThrows(try loadCLIPWeights(path: url.path), contains: [url.path, "truncated safetensors file", "header length"])
    }

    func testMissingTensorIsNamed() throws {
        let dir = try makeTempDir(self, prefix: "clip-ckpt-tests")
        var (tensors, metadata) = try Safetensors.read(path: golden("open_clip_model.safetensors"))
        XCTAssertNotNil(tensors.removeValue(forKey: "visual.ln_post.weight"))
        let url = dir.appendingPathComponent("missing.safetensors")
        try Safetensors.write(tensors: tensors, metadata: metadata, to: url, dtype: .float16)
        assertThrows(try loadCLIPWeights(path: url.path), contains: [url.path, "tensor 'visual.ln_post.weight' is missing"])
        // A tensor the architecture is inferred from.
        var noTokens = tensors
        noTokens.removeValue(forKey: "token_embedding.weight")
        try Safetensors.write(tensors: noTokens, to: url, dtype: .float16)
        assertThrows(try loadCLIPWeights(path: url.path), contains: [url.path, "tensor 'token_embedding.weight' is missing", "vocabulary"])
    }

    func testWrongShapeIsNamed() throws {
        let dir = try makeTempDir(self, prefix: "clip-ckpt-tests")
        var (tensors, _) = try Safetensors.read(path: golden("open_clip_model.safetensors"))
        tensors["visual.transformer.resblocks.1.mlp.c_fc.bias"] = Tensor(zeros: [500])
        let url = dir.appendingPathComponent("wrong.safetensors")
        try Safetensors.write(tensors: tensors, to: url)
        assertThrows(try loadCLIPWeights(path: url.path),
                     contains: [url.path, "tensor 'visual.transformer.resblocks.1.mlp.c_fc.bias' has shape [500], expected [512]"])
    }

    func testHuggingFaceErrors() throws {
        let dir = try makeTempDir(self, prefix: "clip-ckpt-tests")
        // A model directory without model.safetensors.
        let hf = dir.appendingPathComponent("hf")
        try FileManager.default.createDirectory(at: hf, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.goldens.appendingPathComponent("hf/config.json"), to: hf.appendingPathComponent("config.json"))
        assertThrows(try loadCLIPWeights(path: hf.path), contains: [hf.path, "model.safetensors", "config.json"])
        // One of q/k/v missing: the error names the Hugging Face tensor.
        var (tensors, _) = try Safetensors.read(path: golden("hf/model.safetensors"))
        tensors.removeValue(forKey: "vision_model.encoder.layers.1.self_attn.k_proj.weight")
        try Safetensors.write(tensors: tensors, to: hf.appendingPathComponent("model.safetensors"))
        assertThrows(try loadCLIPWeights(path: hf.path),
                     contains: [hf.path, "visual.transformer.resblocks.1.attn.in_proj_weight",
                                "vision_model.encoder.layers.1.self_attn.k_proj.weight"])
        // A transposed projection of the wrong shape.
        (tensors, _) = try Safetensors.read(path: golden("hf/model.safetensors"))
        tensors["visual_projection.weight"] = Tensor(zeros: [31, 128])
        try Safetensors.write(tensors: tensors, to: hf.appendingPathComponent("model.safetensors"))
        assertThrows(try loadCLIPWeights(path: hf.path),
                     contains: ["tensor 'visual.proj' has shape [128, 31], expected [128, 32]", "visual_projection.weight"])
        // A config.json that contradicts the weights.
        (tensors, _) = try Safetensors.read(path: golden("hf/model.safetensors"))
        try Safetensors.write(tensors: tensors, to: hf.appendingPathComponent("model.safetensors"))
        var config = try String(contentsOf: hf.appendingPathComponent("config.json"), encoding: .utf8)
        config = config.replacingOccurrences(of: "\"hidden_size\": 128", with: "\"hidden_size\": 256")
        try config.write(to: hf.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        assertThrows(try loadCLIPWeights(path: hf.path),
                     contains: ["config.json", "vision_config.hidden_size is 256 but the weights have 128"])
        // Heads come from config.json when it says so.
        config = config.replacingOccurrences(of: "\"hidden_size\": 256", with: "\"hidden_size\": 128")
            .replacingOccurrences(of: "\"num_attention_heads\": 2", with: "\"num_attention_heads\": 4")
        try config.write(to: hf.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        XCTAssertEqual(try loadCLIPWeights(path: hf.path).config.visionHeads, 4)
    }
}
