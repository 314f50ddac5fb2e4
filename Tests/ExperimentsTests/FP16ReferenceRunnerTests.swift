import CLIP
import Experiments
import Foundation
import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// `run --precision fp16-reference`: the precision keys features, cell folders and records as bf16
/// does, so fp16-reference and fp32 cells never stand for each other; its cells train with the
/// rounded model and fp16 prompts.
final class FP16ReferenceRunnerTests: XCTestCase {
    static let tiny = RunnerTests.tiny

    func testCellsAreKeyedAndTrainedByThePrecision() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        let cells = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["coop"], shots: [1], seeds: [1],
                                 all: RecipeOverride(epochs: 2, batchSize: 2, augment: .perIteration)).cells()
        let single = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out)
        let half = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out, trainingPrecision: .fp16Reference)
        XCTAssertNil(single.precision)
        XCTAssertEqual(half.precision, "fp16-reference")
        XCTAssertEqual(half.modelFolder, single.modelFolder + "-fp16-reference")
        XCTAssertEqual(half.model.activationRounding, .half)
        XCTAssertEqual(single.model.activationRounding, .none)
        XCTAssertEqual(half.store.directory.lastPathComponent, single.store.directory.lastPathComponent + "-fp16-reference")

        let r32 = try XCTUnwrap(single.run(cells).first)
        XCTAssertEqual(r32.status, .ok, r32.error ?? "")
        // The fp32 record does not stand for the fp16-reference cell: it runs beside it.
        let r16 = try XCTUnwrap(half.run(cells).first)
        XCTAssertEqual(r16.status, .ok, r16.error ?? "")
        XCTAssertEqual(r16.precision, "fp16-reference")
        XCTAssertNil(r32.precision)
        XCTAssertFalse(try half.inputs(cells[0]).match(r32))
        let p16 = try ParameterCheckpoint.read(path: half.folder(for: cells[0]).checkpoint.path)
        let p32 = try ParameterCheckpoint.read(path: single.folder(for: cells[0]).checkpoint.path)
        XCTAssertEqual(p16.header.config.precision, .fp16Reference)
        XCTAssertEqual(p32.header.config.precision, .fp32)
        let ctx16 = try XCTUnwrap(p16.parameters[ParameterName.textContext])
        XCTAssertEqual(ctx16, ctx16.roundedToHalf(), "fp16 prompts")
        XCTAssertNotEqual(ctx16, p32.parameters[ParameterName.textContext])
        // Run again: each finds its own finished cell.
        XCTAssertEqual(try half.run(cells).first?.finishedAt, r16.finishedAt)
        XCTAssertEqual(try single.run(cells).first?.finishedAt, r32.finishedAt)
    }
}
