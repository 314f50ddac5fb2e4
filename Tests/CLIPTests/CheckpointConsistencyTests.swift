import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest
@testable import CLIP

/// Checkpoints whose shapes agree with each other but not with what the model code needs (the
/// issue's K2 and K3), non-finite weights, and mutated Hugging Face config files.
final class CheckpointConsistencyTests: XCTestCase {
    static let goldens = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints")

    func tinyTensors() throws -> [String: Tensor] {
        try Safetensors.read(path: Self.goldens.appendingPathComponent("open_clip_model.safetensors").path).0
    }

    func error(loading tensors: [String: Tensor]) throws -> FileError? {
        let url = try makeTempDir(self, prefix: "clip-consistency").appendingPathComponent("model.safetensors")
        try Safetensors.write(tensors: tensors, to: url)
        do {
            _ = try CLIPModel.load(path: url.path)
            XCTFail("\(url.path) loaded")
            return nil
        } catch let e as FileError {
            XCTAssertTrue(e.message.contains(url.path), e.message)
            return e
        }
    }

    /// K2: a vocabulary smaller than the tokenizer's ids (100, or 49,407 rows) is refused at load,
    /// before `embed` could index past it.
    func testVocabularySmallerThanTheTokenizerIsRefused() throws {
        for rows in [100, 49407] {
            var t = try tinyTensors()
            let width = t["token_embedding.weight"]!.shape[1]
            t["token_embedding.weight"] = Tensor(zeros: [rows, width])
            let e = try XCTUnwrap(try error(loading: t))
            XCTAssertEqual(e.kind, .unsupported)
            XCTAssertTrue(e.message.contains("token_embedding.weight' has \(rows) rows"), e.message)
            XCTAssertTrue(e.message.contains("49407"), e.message)
        }
    }

    /// K3: a context length of 1 (and 2) is refused at load, before the tokenizer could trap.
    func testContextTooShortForAPromptIsRefused() throws {
        for length in [1, 2] {
            var t = try tinyTensors()
            let width = t["positional_embedding"]!.shape[1]
            t["positional_embedding"] = Tensor(zeros: [length, width])
            let e = try XCTUnwrap(try error(loading: t))
            XCTAssertEqual(e.kind, .unsupported)
            XCTAssertTrue(e.message.contains("context length of \(length)"), e.message)
        }
    }

    /// NaN or infinite weights are named, not turned into NaN features.
    func testNonFiniteWeightsAreNamed() throws {
        var t = try tinyTensors()
        var w = t["visual.ln_post.bias"]!
        w[3] = .nan
        t["visual.ln_post.bias"] = w
        var s = t["logit_scale"]!
        s[0] = .infinity
        t["logit_scale"] = s
        let e = try XCTUnwrap(try error(loading: t))
        XCTAssertEqual(e.kind, .nonFinite)
        XCTAssertTrue(e.message.contains("tensor 'logit_scale' holds NaN or infinite values (and 1 more: visual.ln_post.bias)"), e.message)
    }

    /// A finite but huge weight (5e37: one flipped exponent bit of an fp32 file) used to overflow
    /// every feature's norm and give all-zero embeddings; it is refused at load, naming the tensor.
    func testHugeFiniteWeightsAreRefused() throws {
        for name in ["text_projection", "visual.proj"] {
            var t = try tinyTensors()
            var w = t[name]!
            w[5] = 5e37
            t[name] = w
            let e = try XCTUnwrap(try error(loading: t))
            XCTAssertEqual(e.kind, .outOfRange)
            XCTAssertTrue(e.message.contains("tensor '\(name)' holds a weight of magnitude 5e+37"), e.message)
        }
    }

    /// A logit scale whose exp leaves float32 (raw 100, or 3e38) or any sane range is refused; the
    /// bounds are the documented ones.
    func testLogitScaleOutOfRangeIsRefused() throws {
        for raw: Float in [100, 3e38, -10, 7.0] {
            var t = try tinyTensors()
            t["logit_scale"] = Tensor(shape: t["logit_scale"]!.shape, data: [raw])
            let e = try XCTUnwrap(try error(loading: t))
            XCTAssertEqual(e.kind, .outOfRange)
            XCTAssertTrue(e.message.contains("tensor 'logit_scale' is \(raw)"), e.message)
        }
        var t = try tinyTensors()
        t["logit_scale"] = Tensor(shape: t["logit_scale"]!.shape, data: [Float(log(100.0))])
        let url = try makeTempDir(self, prefix: "clip-scale").appendingPathComponent("model.safetensors")
        try Safetensors.write(tensors: t, to: url)
        XCTAssertEqual(Double(try CLIPModel.load(path: url.path).logitScale), 100, accuracy: 1e-3)
    }

    /// A Hugging Face config.json, mutated 2,000 times through its reader (and every 100th through
    /// the whole loader): a typed error or a plausible result, never a trap.
    func testMutatedHuggingFaceConfigs() throws {
        let dir = try makeTempDir(self, prefix: "clip-hf-fuzz")
        try FileManager.default.copyItem(at: Self.goldens.appendingPathComponent("hf/model.safetensors"),
                                         to: dir.appendingPathComponent("model.safetensors"))
        let seed = Array(try Data(contentsOf: Self.goldens.appendingPathComponent("hf/config.json")))
        let config = dir.appendingPathComponent("config.json")
        var mutator = Mutator(seed: 7)
        var errors = 0, read = 0
        let iterations = Int(ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"] ?? "") ?? 2000
        for i in 0..<iterations {
            try Data(mutator.mutate(seed)).write(to: config)
            do {
                let hf = try HFConfigFile.read(config.path)
                _ = hf.int(hf.vision, "hidden_size")
                _ = hf.int(hf.text, "num_attention_heads")
                read += 1
                if i % 100 == 0 { _ = try loadCLIPWeights(path: dir.path) }
            } catch is FileError {
                errors += 1
            }
        }
        print("fuzz hf-config: \(iterations) inputs, \(errors) typed errors, \(read) read, 0 crashes")
        XCTAssertEqual(errors + read, iterations)
        XCTAssertGreaterThan(errors, iterations / 10)
        // Deep nesting and oversized files are refused before parsing.
        try Data((String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)).utf8).write(to: config)
        assertThrows(try loadCLIPWeights(path: dir.path), contains: ["nested 100000 levels deep"])
    }
}
