import Foundation
import PromptLearning
import TestSupport
import XCTest
@testable import prompttune

/// `prompttune train --tensorboard DIR`: the event files, read back with tensorboard's own reader,
/// hold every traced step and every epoch of history.json; a resume after a killed write appends.
final class TensorBoardCLITests: XCTestCase {
    func testTrainTensorBoardEqualsTraceAndHistory() throws {
        let dir = try makeTempDir(self)
        let features = repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path
        let out = dir.appendingPathComponent("run").path, board = dir.appendingPathComponent("board")
        let trace = dir.appendingPathComponent("trace.jsonl")
        func run(_ args: [String]) throws { var c = try PromptTune.parseAsRoot(args); try c.run() }
        let args = ["train", "--model", CLITests.tiny, "--features", features, "--method", "kgcoop", "--n-ctx", "4", "--epochs", "2",
                    "--batch-size", "8", "--out", out, "--trace", trace.path, "--tensorboard", board.path]
        try run(args)
        let steps = try TraceWriter.read(url: trace)
        let history = try ParameterCheckpoint.read(path: out + "/prompt.safetensors").header.history
        func f(_ x: Double) -> Float { Float(x) }
        func check() throws {
            let runs = try tensorBoardScalars(board)
            XCTAssertEqual(Array(runs.keys), ["."])
            let s = try XCTUnwrap(runs["."])
            XCTAssertEqual(Set(s.keys), ["train/loss", "train/lr", "train/accuracy", "train/loss/ce", "train/loss/kg",
                                         "epoch/loss", "epoch/lr", "epoch/accuracy", "epoch/loss/ce", "epoch/loss/kg"])
            XCTAssertEqual(s["train/loss"]?.map(\.step), steps.map(\.globalStep))
            XCTAssertEqual(s["train/loss"]?.map(\.value), steps.map { f($0.loss) })
            XCTAssertEqual(s["train/lr"]?.map(\.value), steps.map { f($0.lr) })
            XCTAssertEqual(s["train/accuracy"]?.map(\.value), steps.map { f($0.accuracy) })
            XCTAssertEqual(s["train/loss/kg"]?.map(\.value), steps.map { f($0.terms["kg"]!) })
            let perEpoch = steps.count / 2
            XCTAssertEqual(s["epoch/loss"]?.map(\.step), [perEpoch, 2 * perEpoch])
            XCTAssertEqual(s["epoch/loss"]?.map(\.value), history.map { f($0.loss) })
            XCTAssertEqual(s["epoch/loss/ce"]?.map(\.value), history.map { f($0.terms["ce"]!) })
            XCTAssertEqual(s["epoch/accuracy"]?.map(\.value), history.map { f($0.accuracy) })
            XCTAssertEqual(s["epoch/lr"]?.map(\.value), history.map { f($0.learningRate) })
        }
        try check()
        // A write cut short by a kill, then --resume: the cut record is removed, the same file continues.
        let files = try FileManager.default.contentsOfDirectory(atPath: board.path)
        XCTAssertEqual(files.count, 1)
        XCTAssertTrue(files[0].hasPrefix("events.out.tfevents."), files[0])
        let file = board.appendingPathComponent(files[0])
        let handle = try FileHandle(forWritingTo: file)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]))
        try handle.close()
        try run(args + ["--resume"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: board.path), files)
        let bytes = [UInt8](try Data(contentsOf: file))
        XCTAssertEqual(TFRecord.records(bytes).validLength, bytes.count)
        try check()
    }
}
