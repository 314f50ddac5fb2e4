import Experiments
import Foundation
import TestSupport
import XCTest

/// Two grids run into one --out at once (issue 17, item 7): a cell folder is run by one process at a
/// time, and a cell whose spec differs from the one running there is refused without touching it.
final class CellLockTests: XCTestCase {
    func testAnotherSpecRunningInTheFolderIsRefusedAndTheSameSpecWaits() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data)
        let out = dir.appendingPathComponent("out")
        let mine = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["coop"], shots: [2], seeds: [1],
                                all: RecipeOverride(epochs: 2, batchSize: 2, views: 1)).cells()
        let theirs = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["coop"], shots: [2], seeds: [1],
                                  all: RecipeOverride(epochs: 7, batchSize: 2, views: 1)).cells()
        let runner = try ExperimentRunner(modelPath: RunnerTests.tiny, root: data, out: out)
        let folder = runner.folder(for: mine[0])
        XCTAssertEqual(folder.url, runner.folder(for: theirs[0]).url, "one folder for both specs")

        // Another process runs `theirs` in the folder: ours is refused and nothing is written there.
        try folder.create()
        try writeJSON(theirs[0], to: folder.spec)
        let held = try XCTUnwrap(try FileLock.acquire(folder.url, wait: false))
        let refused = try runner.run(mine)[0]
        XCTAssertEqual(refused.status, .failed)
        XCTAssertTrue(refused.error?.contains("another process is running this cell's folder") == true
                      && refused.error?.contains("7 epochs") == true, refused.error ?? "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.record.path), "the running cell's folder is left alone")
        XCTAssertEqual(try readJSON(RunSpec.self, from: folder.spec), theirs[0])

        // The same spec running elsewhere is waited for, then run (or found done) here.
        try writeJSON(mine[0], to: folder.spec)
        let released = expectation(description: "released")
        DispatchQueue.global().asyncAfter(deadline: .now() + 1) { held.release(); released.fulfill() }
        let started = Date()
        let record = try runner.run(mine)[0]
        wait(for: [released], timeout: 10)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(started), 0.9, "it waited for the holder")
        XCTAssertEqual(record.status, .ok, record.error ?? "")
        XCTAssertEqual(record.history.count, 2)
    }
}
