import ArgumentParser
import CLIP
import Features
import Foundation
import PromptLearning
import TestSupport
import XCTest
@testable import prompttune

/// The commands with a ResNet CLIP (the committed small ModifiedResNet in an OpenAI TorchScript
/// archive): features at the model's resolution, CoOp training and evaluation; DAPT stops with
/// the typed error saying it needs a ViT.
final class ResNetCLITests: XCTestCase {
    static let model = repoRoot.appendingPathComponent("Goldens/rn/checkpoint/openai.pt").path

    func run(_ args: [String]) throws { var c = try PromptTune.parseAsRoot(args); try c.run() }

    func testFeaturesTrainEvalWithAResNet() throws {
        guard FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") else {
            throw XCTSkip("dataset-fashion-mnist is not installed")
        }
        let dir = try makeTempDir(self)
        let train = dir.appendingPathComponent("train.safetensors").path, test = dir.appendingPathComponent("test.safetensors").path
        try run(["features", "--model", Self.model, "--dataset", "fashion_mnist", "--shots", "2", "--seed", "1", "--out", train])
        try run(["features", "--model", Self.model, "--dataset", "fashion_mnist", "--split", "test", "--limit", "30", "--out", test])
        let set = try FeatureSet.read(path: train)
        XCTAssertEqual(set.count, 20)
        XCTAssertEqual(set.dimension, 32, "the ResNet's attention pool output")
        // The stored features are the tower's on the images preprocessed at 96 px.
        XCTAssertTrue(set.view(0).data.allSatisfy(\.isFinite))
        let out = dir.appendingPathComponent("run").path
        try run(["train", "--model", Self.model, "--features", train, "--method", "coop", "--epochs", "3", "--batch-size", "8", "--out", out])
        let eval = try XCTUnwrap(try PromptTune.parseAsRoot(["eval", "--model", Self.model, "--prompt", out + "/prompt.safetensors",
                                                             "--features", test, "--json"]) as? Eval)
        let printed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(try eval.report(classNames: nil).utf8)) as? [String: Any])
        let accuracy = try XCTUnwrap(printed["accuracy"] as? Double)
        XCTAssertTrue((0...1).contains(accuracy))

        XCTAssertThrowsError(try run(["train", "--model", Self.model, "--augment", "per-iteration", "--dataset", "fashion_mnist",
                                      "--shots", "1", "--seed", "1", "--method", "dapt", "--epochs", "1",
                                      "--out", dir.appendingPathComponent("dapt").path])) { e in
            XCTAssertEqual((e as? PromptError)?.kind, .needsViT, "\(e)")
            XCTAssertTrue("\(e)".contains("method dapt"), "\(e)")
        }
    }
}
