import Experiments
import Foundation
@testable import PromptLearning
import TestSupport
import XCTest

/// Results folders of earlier versions, whose text-prompt cells checkpointed `prompt.ptprompt`,
/// resume: an interrupted cell continues from that file to exactly the prompt an uninterrupted
/// cell ends with, and its first new checkpoint (`prompt.safetensors`) replaces the old file.
final class LegacyCheckpointResumeTests: XCTestCase {
    func testACellResumesFromAnEarlierVersionsPTPrompt() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data)
        let cells = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["kgcoop"], shots: [2], seeds: [1],
                                 all: RecipeOverride(epochs: 3, batchSize: 2, views: 2)).cells()
        let straight = try ExperimentRunner(modelPath: RunnerTests.tiny, root: data, out: dir.appendingPathComponent("straight")).run(cells)[0]
        XCTAssertEqual(straight.status, .ok, straight.error ?? "")

        let out = dir.appendingPathComponent("out")
        let first = try ExperimentRunner(modelPath: RunnerTests.tiny, root: data, out: out)
        var epochs = 0
        first.shouldStop = { epochs += 1; return epochs == 1 }
        XCTAssertThrowsError(try first.run(cells)) { XCTAssertTrue($0 is RunInterrupted, "\($0)") }
        // What an earlier version left after its first epoch: the same state in its format.
        let folder = first.folder(for: cells[0])
        let c = try ParameterCheckpoint.read(path: folder.checkpoint.path)
        let h = c.header
        try PromptCheckpoint(header: .init(config: h.config, classNames: h.classNames, contextShape: h.shapes[ParameterName.textContext]!,
                                           hasMomentum: true, epochsDone: h.epochsDone, steps: h.steps, rngState: h.rngState,
                                           history: h.history, modelDigest: h.modelDigest, featuresDigest: h.dataDigest),
                             context: c.parameters[ParameterName.textContext]!, momentum: c.momentum[ParameterName.textContext]!)
            .write(to: folder.legacyCheckpoint)
        try FileManager.default.removeItem(at: folder.checkpoint)

        let second = try ExperimentRunner(modelPath: RunnerTests.tiny, root: data, out: out)
        var trained = 0
        second.shouldStop = { trained += 1; return false }
        let record = try second.run(cells)[0]
        XCTAssertEqual(trained, 2, "only the two epochs after the checkpoint's ran")
        XCTAssertEqual(record.status, .ok, record.error ?? "")
        XCTAssertEqual(record.history, straight.history, "resumed from the .ptprompt, bit for bit")
        XCTAssertEqual(record.accuracy, straight.accuracy)
        XCTAssertFalse(record.warnings.contains { $0.contains("could not be resumed") }, "\(record.warnings)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.legacyCheckpoint.path), "replaced by prompt.safetensors")
        let final = try ParameterCheckpoint.read(path: folder.checkpoint.path)
        let straightFinal = try ParameterCheckpoint.read(path: try ExperimentRunner(modelPath: RunnerTests.tiny, root: data,
                                                                                   out: dir.appendingPathComponent("straight"))
                                                            .folder(for: cells[0]).checkpoint.path)
        XCTAssertEqual(final.parameters, straightFinal.parameters)
    }
}
