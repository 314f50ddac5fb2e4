import Experiments
import Foundation
import PromptLearning
import TensorCore
import TestSupport
import XCTest
@testable import prompttune

/// `--precision fp16-reference` on `train` and `run`.
final class PrecisionCLITests: XCTestCase {
    func testParsing() throws {
        XCTAssertEqual(try Run.parse(["--datasets", "dtd", "--methods", "coop", "--precision", "fp16-reference"]).precision, .fp16Reference)
        XCTAssertEqual(try Run.parse(["--datasets", "dtd", "--methods", "coop"]).precision, .fp32)
        XCTAssertEqual(PrecisionChoice.fp16Reference.training, .fp16Reference)
        XCTAssertEqual(PrecisionChoice.fp16Reference.compute, .fp32)
        XCTAssertEqual(PrecisionChoice.bf16.compute, .bf16)
        XCTAssertEqual(PrecisionChoice.bf16.training, .fp32)
        XCTAssertThrowsError(try Train.parse(["--features", "f", "--precision", "fp16"]))
    }

    func testTrainPerIterationWritesTheSetting() throws {
        let dir = try makeTempDir(self)
        func run(_ args: [String]) throws { var c = try PromptTune.parseAsRoot(args); try c.run() }
        func train(_ out: String, _ extra: [String]) throws -> ParameterCheckpoint {
            try run(["train", "--model", CLITests.tiny, "--augment", "per-iteration", "--dataset", "fashion_mnist", "--shots", "1",
                     "--method", "coop", "--epochs", "2", "--batch-size", "5", "--lr", "0.05", "--out", dir.appendingPathComponent(out).path] + extra)
            return try ParameterCheckpoint.read(path: dir.appendingPathComponent(out + "/prompt.safetensors").path)
        }
        let half = try train("half", ["--precision", "fp16-reference"])
        let single = try train("single", [])
        XCTAssertEqual(half.header.config.precision, .fp16Reference)
        let ctx = try XCTUnwrap(half.parameters[ParameterName.textContext])
        XCTAssertEqual(ctx, ctx.roundedToHalf())
        XCTAssertNotEqual(ctx, single.parameters[ParameterName.textContext])
        let config = try String(contentsOf: dir.appendingPathComponent("half/config.json"), encoding: .utf8)
        XCTAssertTrue(config.contains("fp16-reference"), config)
        let plain = try String(contentsOf: dir.appendingPathComponent("single/config.json"), encoding: .utf8)
        XCTAssertFalse(plain.contains("precision"), plain)
        // The setting is part of the run: resuming it in fp32 is refused; in fp16-reference it resumes.
        XCTAssertThrowsError(try train("half", ["--resume"])) { XCTAssertTrue("\($0)".contains("other training settings"), "\($0)") }
        XCTAssertEqual(try train("half", ["--resume", "--precision", "fp16-reference"]).parameters, half.parameters)
    }

    /// Cached features train in fp16-reference too: the features rounded to fp16 values, the prompts fp16.
    func testTrainOnFeatures() throws {
        let dir = try makeTempDir(self)
        let features = repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path
        let out = dir.appendingPathComponent("run").path
        var c = try PromptTune.parseAsRoot(["train", "--model", CLITests.tiny, "--features", features, "--epochs", "2", "--batch-size", "8",
                                            "--lr", "0.05", "--precision", "fp16-reference", "--out", out])
        try c.run()
        let p = try ParameterCheckpoint.read(path: out + "/prompt.safetensors")
        XCTAssertEqual(p.header.config.precision, .fp16Reference)
        let ctx = try XCTUnwrap(p.parameters[ParameterName.textContext])
        XCTAssertEqual(ctx, ctx.roundedToHalf())
        XCTAssertTrue(try String(contentsOf: URL(fileURLWithPath: out + "/config.json"), encoding: .utf8).contains("fp16-reference"))
    }
}
