import ArgumentParser
import CLIP
import Datasets
import Experiments
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
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/prompt.ptprompt"), "nothing writes the old format")
        let final = try ParameterCheckpoint.read(path: out + "/prompt.safetensors")
        let initial = try ParameterCheckpoint.readParameters(path: out + "/initial.safetensors")
        let trainer = try PromptTuner(model: try CLIPModel.load(path: CLITests.tiny), tokenizer: try CLIPTokenizer(), data: .features(set.labeled),
                                      config: final.header.config, initialParameters: initial)
        for s in steps {
            XCTAssertEqual(try trainer.step(try trainer.loadBatch(s.indices, epoch: s.epoch, views: s.views), lr: s.lr).total, s.loss)
        }
        XCTAssertEqual(trainer.parameters, final.parameters)

        // --resume appends to the trace (nothing left to train: nothing appended) and keeps initial.safetensors.
        let initialBytes = try Data(contentsOf: URL(fileURLWithPath: out + "/initial.safetensors"))
        try run(args + ["--resume"])
        XCTAssertEqual(try TraceWriter.read(url: trace).count, steps.count)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/initial.safetensors")), initialBytes)
    }

    /// `train --augment per-iteration`: the dataset's images decoded, cropped and flipped afresh at
    /// every step; the trace holds each image's crop and flip, and replays to the final prompt.
    func testTrainPerIterationTraceReplaysTheRun() throws {
        let dir = try makeTempDir(self)
        let out = dir.appendingPathComponent("run").path
        let trace = dir.appendingPathComponent("trace.jsonl")
        func run(_ args: [String]) throws { var c = try PromptTune.parseAsRoot(args); try c.run() }
        let args = ["train", "--model", CLITests.tiny, "--augment", "per-iteration", "--dataset", "fashion_mnist", "--shots", "2",
                    "--seed", "3", "--method", "kgcoop", "--epochs", "2", "--batch-size", "4", "--lr", "0.05", "--out", out,
                    "--trace", trace.path]
        try run(args)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/prompt.ptprompt"))
        let final = try ParameterCheckpoint.read(path: out + "/prompt.safetensors")
        let config = try JSONDecoder().decode(AugmentedTrainingJobConfig.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/config.json")))
        XCTAssertEqual(config.augment, .perIteration)
        XCTAssertEqual(config.images, 20)
        XCTAssertEqual(config.train, final.header.config)
        XCTAssertEqual(final.header.config.seed, 3)
        let steps = try TraceWriter.read(url: trace)
        XCTAssertEqual(steps.count, 2 * 5)
        for s in steps {
            XCTAssertNil(s.views)
            XCTAssertEqual(s.augmentations?.count, 4)
            XCTAssertEqual(Set(s.terms.keys), ["ce", "kg"])
        }

        // Replay: the same draw, the initial parameters, the traced batches, crops and learning rates.
        let loaded = try openDataset(.fashionMNIST, root: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        let selection = try select(loaded.splits, dataset: .fashionMNIST, options: SelectionOptions(shots: 2, seed: 3))
        let images = AugmentedImages(items: selection.train, classNames: selection.classNames, source: loaded.images)
        let tuner = try PromptTuner(model: try CLIPModel.load(path: CLITests.tiny), tokenizer: try CLIPTokenizer(), data: .images(images),
                                    config: final.header.config,
                                    initialParameters: try ParameterCheckpoint.readParameters(path: out + "/initial.safetensors"))
        for s in steps {
            let batch = try tuner.loadBatch(s.indices, epoch: s.epoch)
            XCTAssertEqual(batch.augmentations, s.augmentations)
            XCTAssertEqual(try tuner.step(batch, lr: s.lr).total, s.loss)
        }
        XCTAssertEqual(tuner.parameters, final.parameters)

        // --resume continues prompt.safetensors (finished: nothing appended); without it the folder is refused.
        try run(args + ["--resume"])
        XCTAssertEqual(try TraceWriter.read(url: trace).count, steps.count)
        XCTAssertThrowsError(try run(args)) { XCTAssertTrue("\($0)".contains("prompt.safetensors exists"), "\($0)") }

        // Methods with image prompts train from `train` too.
        try run(["train", "--model", CLITests.tiny, "--augment", "per-iteration", "--dataset", "fashion_mnist", "--shots", "1",
                 "--method", "dapt", "--epochs", "1", "--batch-size", "5", "--out", dir.appendingPathComponent("dapt").path])
        let dapt = try ParameterCheckpoint.read(path: dir.appendingPathComponent("dapt/prompt.safetensors").path)
        XCTAssertEqual(dapt.header.epochsDone, 1)
        XCTAssertEqual(Set(dapt.parameters.names), [ParameterName.textContext, ParameterName.visualPrompt])
    }

    func testAugmentOptionsAreChecked() throws {
        func message(_ args: [String]) -> String {
            do { _ = try PromptTune.parseAsRoot(args); return "" } catch { return PromptTune.message(for: error) }
        }
        let train = ["train", "--model", CLITests.tiny]
        XCTAssertTrue(message(train + ["--augment", "per-iteration"]).contains("give --dataset"))
        XCTAssertTrue(message(train + ["--augment", "per-iteration", "--dataset", "fashion_mnist", "--features", "f.safetensors"])
            .contains("exclude each other"))
        XCTAssertTrue(message(train + ["--features", "f.safetensors", "--dataset", "fashion_mnist"]).contains("--dataset goes with --augment per-iteration"))
        XCTAssertTrue(message(train + ["--features", "f.safetensors", "--shots", "2"]).contains("--shots goes with --augment per-iteration"))
        XCTAssertTrue(message(train).contains("give --features"))
        XCTAssertTrue(message(train + ["--augment", "sometimes", "--features", "f"]).contains("sometimes"))
        XCTAssertTrue(message(train + ["--augment", "per-iteration", "--dataset", "fashion_mnist", "--shots", "0"]).contains("--shots"))
        XCTAssertEqual(message(train + ["--augment", "per-iteration", "--dataset", "fashion_mnist", "--shots", "2"]), "")

        // run --augment sets the grid's recipe; dapt augments per iteration whatever it says.
        let cells = try Run.parse(["--datasets", "dtd", "--methods", "coop,dapt", "--shots", "2", "--seeds", "1",
                                   "--augment", "per-iteration"]).resolvedPlan().cells()
        XCTAssertEqual(cells.map(\.recipe.augment), [.perIteration, .views])
        XCTAssertEqual(cells.map(\.identifier), ["few-shot_dtd_coop_2shot_seed1_per-iteration", "few-shot_dtd_dapt_2shot_seed1"])
        XCTAssertEqual(try Run.parse(["--datasets", "dtd", "--methods", "coop"]).resolvedPlan().cells()[0].recipe.augment, .views)
        XCTAssertTrue(message(["run", "--datasets", "dtd", "--methods", "coop", "--augment", "fresh"]).contains("fresh"))
    }
}
