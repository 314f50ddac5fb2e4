import Experiments
import Foundation
import PromptLearning
import TestSupport
import XCTest

/// A cell whose image-prompt checkpoint fails the resume checks starts over with a warning naming
/// the problem, and the checkpoint is set aside (issue 17, item 2). A checkpoint claiming more
/// epochs than its history used to record the cell `ok` after 2 of 4 epochs.
final class CheckpointSetAsideTests: XCTestCase {
    func testADamagedImagePromptCheckpointIsSetAsideAndTheCellStartsOver() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data)
        let plan = GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["vpt"], shots: [2], seeds: [1],
                            all: RecipeOverride(epochs: 4, batchSize: 2))
        let cells = try plan.cells()
        let out = dir.appendingPathComponent("out")
        let first = try ExperimentRunner(modelPath: RunnerTests.tiny, root: data, out: out)
        var epochs = 0
        first.shouldStop = { epochs += 1; return epochs == 2 }
        XCTAssertThrowsError(try first.run(cells)) { XCTAssertTrue($0 is RunInterrupted, "\($0)") }

        let folder = first.folder(for: cells[0])
        var c = try ParameterCheckpoint.read(path: folder.checkpoint.path)
        XCTAssertEqual(c.header.epochsDone, 2)
        c.header.epochsDone = 4  // "finished", with a history of 2
        try c.write(to: folder.checkpoint)

        let record = try ExperimentRunner(modelPath: RunnerTests.tiny, root: data, out: out).run(cells)[0]
        XCTAssertEqual(record.status, .ok, record.error ?? "")
        XCTAssertEqual(record.history.count, 4, "the cell trained all its epochs again")
        XCTAssertTrue(record.warnings.contains { $0.contains("4 finished epochs but a history of 2") && $0.contains("set aside as prompt.safetensors.rejected") },
                      "\(record.warnings)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.checkpoint.path + ".rejected"))
    }
}
