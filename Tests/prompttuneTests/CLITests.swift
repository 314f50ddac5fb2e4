import ArgumentParser
import CLIP
import Foundation
import Imaging
import Features
import TensorIO
import TestSupport
import XCTest
@testable import prompttune

final class CLITests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path

    func testEmbedMatchesPyTorchGoldens() throws {
        let gold = repoRoot.appendingPathComponent("Goldens/tiny/model")
        let g = try Safetensors.read(path: gold.appendingPathComponent("goldens.safetensors").path).tensors
        let clip = try CLIPModel.load(path: Self.tiny)
        let images = try ["embed_0.png", "embed_1.png"].map { try decodePNG(path: gold.appendingPathComponent($0).path) }
        let out = try embed(clip, texts: ["a photo of a cat.", "a diagram"], images: images)
        XCTAssertLessThan(zip(out.text.flatMap { $0 }, g["embed_text"]!.data).map { abs($0 - Double($1)) }.max()!, 1e-5)
        XCTAssertLessThan(zip(out.image.flatMap { $0 }, g["embed_image"]!.data).map { abs($0 - Double($1)) }.max()!, 1e-5)
        for row in out.text + out.image { XCTAssertEqual(row.reduce(0) { $0 + $1 * $1 }, 1, accuracy: 1e-5) }
    }

    func testBadOptionsGetClearMessages() throws {
        func message(_ args: [String]) -> String {
            do { _ = try PromptTune.parseAsRoot(args); return "" } catch { return PromptTune.message(for: error) }
        }
        let base = ["train", "--model", "m.pt", "--features", "f.safetensors"]
        XCTAssertTrue(message(base + ["--method", "prograd"]).contains("unknown method 'prograd'"))
        XCTAssertTrue(message(base + ["--ctx-init", "a photo of a", "--n-ctx", "16"]).contains("has 4 words but --n-ctx is 16"))
        XCTAssertTrue(message(base + ["--etf", "random"]).contains("--etf applies to NPT methods"))
        XCTAssertTrue(message(base + ["--method", "coop", "--kg-weight", "2"]).contains("--kg-weight does not apply"))
        XCTAssertTrue(message(["embed", "--model", "m.pt"]).contains("give at least one --text or --image"))
        XCTAssertTrue(message(["features", "--model", "m.pt", "--dataset", "fashion_mnist", "--imbalance", "0.25"]).contains("--imbalance needs --shots"))
        XCTAssertTrue(message(["sample", "--dataset", "nosuch"]).lowercased().contains("nosuch"))
    }

    func testMissingCheckpointIsNamed() throws {
        var cmd = try PromptTune.parseAsRoot(["info", "--model", "/nonexistent/ViT-B-16.pt"])
        XCTAssertThrowsError(try cmd.run()) { XCTAssertTrue("\($0)".contains("/nonexistent/ViT-B-16.pt"), "\($0)") }
    }

    /// features (Fashion-MNIST, from Debian's package) -> train -> eval, through the commands.
    func testFeaturesTrainEvalEndToEnd() throws {
        guard FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") else {
            throw XCTSkip("dataset-fashion-mnist is not installed")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptcli-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        func run(_ args: [String]) throws { var c = try PromptTune.parseAsRoot(args); try c.run() }
        let train = dir.appendingPathComponent("train.safetensors").path, test = dir.appendingPathComponent("test.safetensors").path
        try run(["features", "--model", Self.tiny, "--dataset", "fashion_mnist", "--shots", "4", "--seed", "2", "--views", "2", "--out", train])
        try run(["features", "--model", Self.tiny, "--dataset", "fashion_mnist", "--split", "test", "--limit", "100", "--out", test])
        let set = try FeatureSet.read(path: train)
        XCTAssertEqual(set.count, 40)
        XCTAssertEqual(set.views, 2)
        XCTAssertEqual(set.provenance["template"], "a photo of a {}.")
        let out = dir.appendingPathComponent("run").path
        try run(["train", "--model", Self.tiny, "--features", train, "--method", "kgcoop+npt", "--epochs", "3", "--batch-size", "8", "--out", out])
        let ckpt = try PromptLearningCheckpointProbe.read(out + "/prompt.safetensors")
        XCTAssertEqual(ckpt, 3)
        // eval reports the accuracy of the trained prompt, computed here independently.
        let eval = try XCTUnwrap(try PromptTune.parseAsRoot(["eval", "--model", Self.tiny, "--prompt", out + "/prompt.safetensors",
                                                             "--features", test, "--json"]) as? Eval)
        let printed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(try eval.report(classNames: nil).utf8)) as? [String: Any])
        let testSet = try FeatureSet.read(path: test)
        let checkpoint = try ParameterCheckpoint.read(path: out + "/prompt.safetensors")
        let clip = try CLIPModel.load(path: Self.tiny)
        let text = try promptTextFeatures(model: clip, method: checkpoint.header.config.method, context: checkpoint.parameters[ParameterName.textContext]!,
                                          classNames: testSet.classNames, tokenizer: try CLIPTokenizer())
        let (d, k) = (testSet.dimension, testSet.classNames.count)
        let images = testSet.view(0)
        var correct = 0
        for (i, y) in testSet.labels.enumerated() {
            let h = Array(images.data[(i * d)..<((i + 1) * d)])
            let scores = (0..<k).map { c -> Float in
                let t = Array(text.data[(c * d)..<((c + 1) * d)])
                let dot = zip(h, t).reduce(Float(0)) { $0 + $1.0 * $1.1 }
                return dot / (t.reduce(Float(0)) { $0 + $1 * $1 }).squareRoot()
            }
            if scores.indices.max(by: { scores[$0] < scores[$1] }) == y { correct += 1 }
        }
        XCTAssertEqual(printed["count"] as? Int, 100)
        XCTAssertEqual(try XCTUnwrap(printed["accuracy"] as? Double), Double(correct) / 100, accuracy: 1e-9)
        let macro = try XCTUnwrap(printed["macro_f1"] as? Double)
        XCTAssertTrue(macro >= 0 && macro <= 1, "macro-F1 \(macro)")
        let perClass = try XCTUnwrap(printed["per_class_accuracy"] as? [String: Double])
        XCTAssertEqual(Set(perClass.keys), Set(testSet.labels.map { testSet.classNames[$0] }))
        // A second train into the same folder without --resume is refused; with it there is nothing left to do.
        XCTAssertThrowsError(try run(["train", "--model", Self.tiny, "--features", train, "--method", "kgcoop+npt", "--epochs", "3", "--batch-size", "8", "--out", out]))
        try run(["train", "--model", Self.tiny, "--features", train, "--method", "kgcoop+npt", "--epochs", "3", "--batch-size", "8", "--out", out, "--resume"])
        // Features from another model are refused by eval.
        let other = dir.appendingPathComponent("other.safetensors").path
        try run(["features", "--model", repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path,
                 "--dataset", "fashion_mnist", "--split", "test", "--limit", "10", "--out", other])
        XCTAssertThrowsError(try run(["eval", "--model", Self.tiny, "--prompt", out + "/prompt.safetensors", "--features", other])) {
            XCTAssertTrue("\($0)".contains("made with another model"), "\($0)")
        }
    }
}

import PromptLearning
enum PromptLearningCheckpointProbe {
    static func read(_ path: String) throws -> Int { try ParameterCheckpoint.read(path: path).header.epochsDone }
}
