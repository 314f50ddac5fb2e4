import Experiments
import Foundation
import TestSupport
import XCTest

/// `withFileLock`: callers exclude each other, and no lock file is left behind, including when
/// waiters find the file they opened removed by the holder before them.
final class FileLockTests: XCTestCase {
    func testCallersExcludeEachOtherAndLeaveNoLockFile() throws {
        let dir = try makeTempDir(self)
        let target = dir.appendingPathComponent("features.safetensors")
        let counter = dir.appendingPathComponent("counter.txt")
        try "0".write(to: counter, atomically: false, encoding: .utf8)
        let (threads, rounds) = (6, 40)
        let failures = NSLock()
        var errors: [String] = []
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            for _ in 0..<rounds {
                do {
                    try withFileLock(target) {
                        // A read-modify-write that loses updates unless the callers exclude each other.
                        let n = Int(try String(contentsOf: counter, encoding: .utf8)) ?? -1_000_000
                        usleep(50)
                        try String(n + 1).write(to: counter, atomically: false, encoding: .utf8)
                    }
                } catch {
                    failures.lock(); errors.append("\(error)"); failures.unlock()
                }
            }
        }
        XCTAssertEqual(errors, [])
        XCTAssertEqual(try String(contentsOf: counter, encoding: .utf8), String(threads * rounds))
        XCTAssertFalse(FileManager.default.fileExists(atPath: target.path + ".lock"), "the lock file is removed")
    }

    func testTheLockIsReleasedWhenTheBodyThrows() throws {
        let dir = try makeTempDir(self)
        let target = dir.appendingPathComponent("x")
        struct Boom: Error {}
        XCTAssertThrowsError(try withFileLock(target) { throw Boom() })
        XCTAssertEqual(try withFileLock(target) { 7 }, 7)
        XCTAssertFalse(FileManager.default.fileExists(atPath: target.path + ".lock"))
    }
}
