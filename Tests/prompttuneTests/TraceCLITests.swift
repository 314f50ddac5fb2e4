import ArgumentParser
import CLIP
import Features
import Foundation
import PromptLearning
import TestSupport
import XCTest
@testable import prompttune

/// `prompttune train --trace`: one JSON line per step, the initial context saved beside the
/// checkpoint, and the two replay the run step for step.
final class TraceCLITests: XCTestCase {
    func testTrainTraceAndInitialContextReplayTheRun() throws {
        let dir = try makeTempDir(self)
        let features = repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path
        let out = dir.appendingPathComponent("run").path
        let trace = dir.appendingPathComponent("trace.jsonl")
        func run(_ args: [String]) throws { var c = try PromptTune.parseAsRoot(args); try c.run() }
        let args = ["train", "--model", CLITests.tiny, "--features", features, "--method", "kgcoop+npt", "--epochs", "2",
                    "--batch-size", "8", "--lr", "0.05", "--out", out, "--trace", trace.path]
        try run(args)
        let steps = try TraceWriter.read(url: trace)
        let set = try FeatureSet.read(path: features)
        let perEpoch = max(1, set.count / 8)
        XCTAssertEqual(steps.count, 2 * perEpoch)
        XCTAssertEqual(steps.map(\.globalStep), Array(1...(2 * perEpoch)))
        XCTAssertEqual(steps.first?.lr, 1e-5)
        for s in steps {
            XCTAssertNil(s.augmentations)
            XCTAssertEqual(s.views?.count, 8)
            XCTAssertEqual(Set(s.terms.keys), ["ce", "kg", "lc", "mi"])
            XCTAssertNil(s.cell)
        }
        // Sorted keys.
        let line = try XCTUnwrap(try String(contentsOf: trace, encoding: .utf8).split(separator: "\n").first)
        let positions = ["accuracy", "epoch", "global_step", "indices", "labels", "loss", "lr", "step", "terms", "views"]
            .compactMap { line.range(of: "\"\($0)\":")?.lowerBound }
        XCTAssertEqual(positions.count, 10, String(line))
        XCTAssertEqual(positions, positions.sorted(), String(line))

        // Replay from initial.safetensors with the traced batches, views and learning rates.
        let final = try PromptCheckpoint.read(path: out + "/prompt.ptprompt")
        let initial = try ParameterCheckpoint.readParameters(path: out + "/initial.safetensors")
        let trainer = try PromptTrainer(model: try CLIPModel.load(path: CLITests.tiny), tokenizer: try CLIPTokenizer(), features: set.labeled,
                                        config: final.header.config, initialContext: initial[ParameterName.textContext])
        for s in steps {
            XCTAssertEqual(try trainer.step(s.indices, views: s.views, lr: s.lr).total, s.loss)
        }
        XCTAssertEqual(trainer.context, final.context)

        // --resume appends to the trace (nothing left to train: nothing appended) and keeps initial.safetensors.
        let initialBytes = try Data(contentsOf: URL(fileURLWithPath: out + "/initial.safetensors"))
        try run(args + ["--resume"])
        XCTAssertEqual(try TraceWriter.read(url: trace).count, steps.count)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/initial.safetensors")), initialBytes)
    }
}
