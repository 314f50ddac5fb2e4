import ArgumentParser
import Foundation
import TestSupport
import XCTest
@testable import prompttune

/// `prompttune run` with strict plans (issue 16): plan and option errors exit 64 naming the key and
/// line; a recipe-only plan takes its datasets and methods from the flags; missing datasets stop
/// the grid before anything is written.
final class RunPlanCLITests: XCTestCase {
    func write(_ text: String, _ name: String, in dir: URL) throws -> String {
        let url = dir.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url.path
    }

    func testPlanErrorsExitWithStatus64() throws {
        let dir = try makeTempDir(self, prefix: "ptcli-plan")
        let flags = ["--datasets", "dtd", "--methods", "coop,kgcoop", "--list"]
        let cases: [(String, [String])] = [
            ("epochz: 3\n", ["epochz", "line 1", "did you mean epochs?"]),
            ("epochs: 3\noverrides:\n  coop: {epoch: 3}\n", ["'epoch'", "line 3", "did you mean epochs?"]),
            ("overrides:\n  kgcoop:\n    term_weights: {kgg: 1}\n", ["'kgg'", "line 3", "did you mean kg?"]),
            ("shots: [0]\n", ["shots must be at least 1"]),
            ("protocol: sideways\n", ["protocol"]),
        ]
        for (i, (yaml, parts)) in cases.enumerated() {
            let plan = try write(yaml, "plan\(i).yaml", in: dir)
            let error = try XCTUnwrap(PromptTune.execute(["run", "--plan", plan] + flags), yaml)
            XCTAssertEqual(PromptTune.exitCode(for: error).rawValue, 64, yaml)
            let message = PromptTune.message(for: error)
            for p in parts + [plan] where !(p == plan && i >= 3) { XCTAssertTrue(message.contains(p), "\(p) in \(message)") }
        }
        // Option errors exit the same way.
        let error = try XCTUnwrap(PromptTune.execute(["run", "--datasets", "dtd", "--methods", "coop", "--epochs", "0", "--list"]))
        XCTAssertEqual(PromptTune.exitCode(for: error).rawValue, 64)
        let unknownPlan = try XCTUnwrap(PromptTune.execute(["run", "--plan", "nosuchplan", "--list"]))
        XCTAssertEqual(PromptTune.exitCode(for: unknownPlan).rawValue, 64)
    }

    func testRecipeOnlyPlanWithFlags() throws {
        let dir = try makeTempDir(self, prefix: "ptcli-plan")
        let plan = try write("epochs: 3\nlr: 0.01\noverrides:\n  kgcoop: {batch_size: 4, term_weights: {kg: 2}}\n", "recipe.yaml", in: dir)
        let command = try XCTUnwrap(try PromptTune.parseAsRoot(["run", "--plan", plan, "--datasets", "dtd", "--methods", "coop,kgcoop",
                                                                 "--shots", "2", "--seeds", "1"]) as? Run)
        let cells = try command.resolvedPlan().cells()
        XCTAssertEqual(cells.map(\.method), ["coop", "kgcoop"])
        XCTAssertEqual(cells.map(\.recipe.epochs), [3, 3])
        XCTAssertEqual(cells.map(\.recipe.learningRate), [0.01, 0.01])
        XCTAssertEqual(cells.map(\.recipe.batchSize), [32, 4])
        XCTAssertEqual(cells[1].recipe.termWeights, ["kg": 2])
        XCTAssertNil(PromptTune.execute(["run", "--plan", plan, "--datasets", "dtd", "--methods", "coop", "--list"]))
        // Without the flags the plan says what is missing.
        let error = try XCTUnwrap(PromptTune.execute(["run", "--plan", plan, "--list"]))
        XCTAssertEqual(PromptTune.exitCode(for: error).rawValue, 64)
        XCTAssertTrue(PromptTune.message(for: error).contains("--datasets"), PromptTune.message(for: error))
    }

    func testMissingDatasetsStopTheGridBeforeAnythingIsWritten() throws {
        let dir = try makeTempDir(self, prefix: "ptcli-plan")
        let root = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("results")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let error = try XCTUnwrap(PromptTune.execute(["run", "--protocol", "cross-dataset", "--datasets", "dtd", "--targets", "eurosat,ucf101",
                                                      "--methods", "zeroshot", "--shots", "1", "--seeds", "1", "--model", CLITests.tiny,
                                                      "--root", root.path, "--out", out.path]))
        XCTAssertEqual(PromptTune.exitCode(for: error).rawValue, 64)
        let message = PromptTune.message(for: error)
        for name in ["dtd", "eurosat", "ucf101", "nothing ran", "prompttune datasets"] { XCTAssertTrue(message.contains(name), message) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "nothing was written")
    }
}
