import Foundation
import TestSupport
import XCTest
@testable import PromptLearning

/// The trace file (issue 17, items 1, 7 and 11).
final class TraceWriterTests: XCTestCase {
    func step(_ i: Int, cell: String) -> StepTrace {
        StepTrace(cell: cell, epoch: 0, step: i, globalStep: i, lr: 0.002, indices: Array(0..<64), labels: Array(0..<64),
                  augmentations: nil, views: Array(repeating: 1, count: 64), loss: 1.5, terms: ["ce": 1.5], accuracy: 0.5)
    }

    /// `--trace /dev/null` used to replace the system's /dev/null with a regular file (as root).
    func testDevNullStaysADevice() throws {
        let w = try TraceWriter(url: URL(fileURLWithPath: "/dev/null"))
        try w.write(step(1, cell: "a"))
        var st = stat()
        XCTAssertEqual(lstat("/dev/null", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFCHR)
    }

    func testAFifoIsRefusedNamingTheTraceFile() throws {
        let fifo = try makeTempDir(self, prefix: "pttrace-fifo").appendingPathComponent("trace.jsonl")
        XCTAssertEqual(mkfifo(fifo.path, 0o644), 0)
        XCTAssertThrowsError(try TraceWriter(url: fifo)) {
            XCTAssertTrue("\($0)".contains("the trace file \(fifo.path): is a FIFO"), "\($0)")
        }
    }

    /// Two writers sharing a trace (two `run --cell` processes) lost and corrupted lines: each
    /// wrote at its own offset. With O_APPEND and one write per line every line survives whole.
    func testWritersSharingATraceKeepEveryLine() throws {
        let url = try makeTempDir(self, prefix: "pttrace-shared").appendingPathComponent("trace.jsonl")
        let a = try TraceWriter(url: url, append: true), b = try TraceWriter(url: url, append: true)
        DispatchQueue.concurrentPerform(iterations: 2) { k in
            for i in 1...300 { try! (k == 0 ? a : b).write(step(i, cell: k == 0 ? "a" : "b")) }
        }
        let steps = try TraceWriter.read(url: url)
        XCTAssertEqual(steps.count, 600)
        XCTAssertEqual(steps.filter { $0.cell == "a" }.map(\.step), Array(1...300))
        XCTAssertEqual(steps.filter { $0.cell == "b" }.map(\.step), Array(1...300))
    }

    func testAFullDiskNamesTheTraceFile() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { throw XCTSkip("no /dev/full here") }
        let w = try TraceWriter(url: URL(fileURLWithPath: "/dev/full"))
        XCTAssertThrowsError(try w.write(step(1, cell: "a"))) {
            XCTAssertTrue("\($0)".contains("while writing the trace file /dev/full: the disk is full"), "\($0)")
        }
    }
}
