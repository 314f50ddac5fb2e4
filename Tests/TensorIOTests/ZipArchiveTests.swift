import Foundation
import TestSupport
import XCTest
@testable import TensorIO

final class ZipArchiveTests: XCTestCase {
    let entries: [(name: String, data: [UInt8])] = [
        ("archive/data.pkl", Array("hello pickle".utf8)),
        ("archive/data/0", (0..<200).map { UInt8($0) }),
        ("archive/empty", []),
    ]

    func testStoredEntries() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("plain.zip")
        try write(buildZip(entries, comment: "a comment"), to: url)
        let zip = try ZipArchive(path: url.path)
        XCTAssertEqual(zip.entryNames, entries.map(\.name))
        for (name, data) in entries {
            XCTAssertEqual(try zip.contents(of: name), data)
            XCTAssertEqual(try zip.slice(of: name).bytes, data)
        }
        XCTAssertEqual(zip.entry(named: "archive/data/0")?.uncompressedSize, 200)
        assertThrows(try zip.slice(of: "archive/nope"), contains: [url.path, "no entry 'archive/nope'"])
    }

    func testZip64() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("big.zip")
        try write(buildZip(entries, zip64: true), to: url)
        let zip = try ZipArchive(path: url.path)
        XCTAssertEqual(zip.entryNames, entries.map(\.name))
        for (name, data) in entries { XCTAssertEqual(try zip.contents(of: name), data) }
        XCTAssertEqual(zip.entry(named: "archive/data/0")?.compressedSize, 200)
        XCTAssertGreaterThan(zip.entry(named: "archive/empty")?.localHeaderOffset ?? 0, 0)
    }

    func testGoldenTorchArchiveIsAligned() throws {
        let zip = try ZipArchive(path: goldenCheckpoints.appendingPathComponent("state_dict.pt").path)
        XCTAssertTrue(zip.entryNames.contains("state_dict/data.pkl"))
        for e in zip.entries where e.name.contains("/data/") {
            XCTAssertTrue(e.isStored)
            XCTAssertEqual(try zip.slice(of: e).offset % 64, 0, e.name)
        }
    }

    func testCompressedEntryIsRejected() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("deflated.zip")
        try write(buildZip(entries, method: 8), to: url)
        let zip = try ZipArchive(path: url.path)
        assertThrows(try zip.slice(of: "archive/data/0"),
                     contains: [url.path, "archive/data/0", "compressed entries are not supported"])
    }

    func testTruncatedArchives() throws {
        let dir = try makeTempDir(self)
        let bytes = buildZip(entries)
        // Cut in the middle: no end record.
        let half = dir.appendingPathComponent("half.zip")
        try write(Array(bytes.prefix(bytes.count / 2)), to: half)
        assertThrows(try ZipArchive(path: half.path), contains: [half.path, "truncated zip archive"])
        // Central directory pointing past the end of the file.
        var movedCD = bytes
        let eocd = movedCD.count - 22
        movedCD[eocd + 16] = 0xff; movedCD[eocd + 17] = 0xff
        let cd = dir.appendingPathComponent("cd.zip")
        try write(movedCD, to: cd)
        assertThrows(try ZipArchive(path: cd.path), contains: [cd.path, "truncated zip archive", "central directory"])
        // An entry whose data runs past the end: keep the directory, lie about a size.
        var bigEntry = bytes
        let cdStart = Int(UInt32(bigEntry[eocd + 16]) | UInt32(bigEntry[eocd + 17]) << 8 | UInt32(bigEntry[eocd + 18]) << 16 | UInt32(bigEntry[eocd + 19]) << 24)
        let secondCentral = cdStart + 46 + entries[0].name.utf8.count
        bigEntry[secondCentral + 20] = 0; bigEntry[secondCentral + 21] = 0; bigEntry[secondCentral + 22] = 1  // 65536 bytes
        let past = dir.appendingPathComponent("past.zip")
        try write(bigEntry, to: past)
        let zip = try ZipArchive(path: past.path)
        assertThrows(try zip.slice(of: "archive/data/0"),
                     contains: [past.path, "archive/data/0", "extends past the end of the file"])
    }

    func testNotAZip() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("text.txt")
        try write(Array(String(repeating: "not a zip file ", count: 10).utf8), to: url)
        assertThrows(try ZipArchive(path: url.path), contains: [url.path, "not a zip archive"])
        assertThrows(try ZipArchive(path: dir.appendingPathComponent("missing.zip").path),
                     contains: ["missing.zip", "no such file"])
        let empty = dir.appendingPathComponent("empty.zip")
        try write([], to: empty)
        assertThrows(try ZipArchive(path: empty.path), contains: [empty.path, "not a zip archive"])
    }

    func testCRCMismatchIsReported() throws {
        let dir = try makeTempDir(self)
        var bytes = buildZip(entries)
        bytes[30 + entries[0].name.utf8.count] ^= 0xff  // flip the first data byte of data.pkl
        let url = dir.appendingPathComponent("crc.zip")
        try write(bytes, to: url)
        let zip = try ZipArchive(path: url.path)
        assertThrows(try zip.contents(of: "archive/data.pkl"), contains: [url.path, "archive/data.pkl", "CRC-32"])
    }

    func testCRC32KnownValue() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xcbf4_3926)
    }
}
