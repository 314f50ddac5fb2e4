import Foundation
import TestSupport
import XCTest
@testable import TensorIO

/// Outputs are written by atomic replace only over nothing or a regular file (issue 17, items 1 and 3).
final class OutputPathTests: XCTestCase {
    func testACharacterDeviceIsWrittenInPlaceNeverReplaced() throws {
        try writeAtomically(Data("discarded\n".utf8), to: URL(fileURLWithPath: "/dev/null"))
        var st = stat()
        XCTAssertEqual(lstat("/dev/null", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFCHR, "/dev/null must stay a character device")
    }

    func testFifoSymlinkAndFolderTargetsAreRefusedAndLeftAlone() throws {
        let dir = try makeTempDir(self, prefix: "ptio-targets")
        let fifo = dir.appendingPathComponent("pipe")
        XCTAssertEqual(mkfifo(fifo.path, 0o644), 0)
        let real = dir.appendingPathComponent("real.txt")
        try Data("keep".utf8).write(to: real)
        let link = dir.appendingPathComponent("link.txt")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: real)
        let folder = dir.appendingPathComponent("folder")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (url, what) in [(fifo, "a FIFO (named pipe)"), (link, "a symbolic link"), (folder, "a folder")] {
            XCTAssertThrowsError(try writeAtomically(Data("x".utf8), to: url)) {
                let e = $0 as? FileError
                XCTAssertEqual(e?.kind, .writeFailed)
                XCTAssertTrue(e?.message.hasPrefix(url.path) == true && e?.message.contains("is \(what), not a regular file") == true, "\($0)")
            }
        }
        var st = stat()
        XCTAssertEqual(lstat(fifo.path, &st), 0); XCTAssertEqual(st.st_mode & S_IFMT, S_IFIFO)
        XCTAssertEqual(lstat(link.path, &st), 0); XCTAssertEqual(st.st_mode & S_IFMT, S_IFLNK)
        XCTAssertEqual(try String(contentsOf: real, encoding: .utf8), "keep")
        // A regular file is still replaced.
        try writeAtomically(Data("new".utf8), to: real)
        XCTAssertEqual(try String(contentsOf: real, encoding: .utf8), "new")
    }

    /// A full disk is a thrown error naming the file (FileHandle.write(_:) cannot throw and trapped).
    /// /dev/full answers every write with ENOSPC.
    func testAFullDiskIsAnErrorNamingTheFile() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { throw XCTSkip("no /dev/full here") }
        XCTAssertThrowsError(try writeAtomically(Data(repeating: 1, count: 100), to: URL(fileURLWithPath: "/dev/full"))) {
            let e = $0 as? FileError
            XCTAssertEqual(e?.message, "/dev/full: the disk is full; free some space or write elsewhere, then run again (finished work is kept).")
        }
    }
}
