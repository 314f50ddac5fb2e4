import Foundation
import TestSupport
import XCTest
@testable import PromptLearning

/// CRC-32C, TFRecord framing and the Event encoding against known vectors (RFC 3720's CRC-32C
/// vectors; frames and events as tensorboard's Python writer and protobuf encode them), and the
/// writer's append after a killed run.
final class TensorBoardWriterTests: XCTestCase {
    func testCRC32CKnownVectors() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum((0..<32).map(UInt8.init)), 0x46DD_794E)
        XCTAssertEqual(CRC32C.checksum([]), 0)
    }

    func testFramingAndEventsMatchTensorBoardsEncoding() {
        // tensorboard's record writer: struct.pack("<Q", 5) + masked_crc32c + b"hello" + masked_crc32c.
        XCTAssertEqual(TFRecord.frame(Array("hello".utf8)),
                       [5, 0, 0, 0, 0, 0, 0, 0, 234, 178, 4, 62, 104, 101, 108, 108, 111, 187, 31, 28, 25])
        // event_pb2.Event(...).SerializeToString()
        XCTAssertEqual(TensorBoardEvent.encode(wallTime: 1.5, step: 3, fileVersion: "brain.Event:2"),
                       [9, 0, 0, 0, 0, 0, 0, 248, 63, 16, 3, 26, 13] + Array("brain.Event:2".utf8))
        XCTAssertEqual(TensorBoardEvent.encode(wallTime: 2, step: 300, scalars: [("train/loss", 0.25)]),
                       [9, 0, 0, 0, 0, 0, 0, 0, 64, 16, 172, 2, 42, 19, 10, 17, 10, 10] + Array("train/loss".utf8) + [21, 0, 0, 128, 62])
        XCTAssertEqual(TensorBoardEvent.encode(wallTime: 2, step: 7, sessionStart: true), [9, 0, 0, 0, 0, 0, 0, 0, 64, 16, 7, 58, 2, 8, 1])

        let a = TFRecord.frame([1, 2, 3]), b = TFRecord.frame(Array(repeating: 7, count: 300))
        XCTAssertEqual(TFRecord.records(a + b).records, [[1, 2, 3], Array(repeating: 7, count: 300)])
        XCTAssertEqual(TFRecord.records(a + b + Array(b.prefix(20))).validLength, a.count + b.count)   // a record cut short
        var damaged = a + b
        damaged[a.count + 40] ^= 1                                                                      // a flipped bit in b's data
        XCTAssertEqual(TFRecord.records(damaged).records, [[1, 2, 3]])
        XCTAssertEqual(TFRecord.records(damaged).validLength, a.count)
    }

    /// A run killed mid-write leaves a cut record; the resumed writer cuts it off, appends to the
    /// same file, and its SessionLog.START drops the steps the killed run logged after its checkpoint.
    func testResumedWriterAppendsAndTensorBoardDropsOrphanedSteps() throws {
        let dir = try makeTempDir(self)
        let first = try TensorBoardWriter(directory: dir)
        for step in 1...6 { try first.add([("train/loss", Double(step))], step: step) }
        let file = first.file
        let handle = try FileHandle(forWritingTo: file)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(TFRecord.frame(TensorBoardEvent.encode(wallTime: 0, step: 7, scalars: [("train/loss", 7)])).prefix(19)))
        try handle.close()
        let killedSize = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int)

        let resumed = try TensorBoardWriter(directory: dir, resumeStep: 4)   // the checkpoint was after step 4
        XCTAssertEqual(resumed.file, file)
        for step in 5...8 { try resumed.add([("train/loss", Double(10 * step))], step: step) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("tfevents") }.count, 1)
        let records = TFRecord.records([UInt8](try Data(contentsOf: file)))
        XCTAssertEqual(records.validLength, try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int))
        XCTAssertEqual(records.records.count, 1 + 6 + 1 + 4)
        XCTAssertGreaterThan(killedSize, records.records.prefix(7).reduce(0) { $0 + $1.count + 16 })

        let runs = try tensorBoardScalars(dir)
        let loss = try XCTUnwrap(runs["."]?["train/loss"])
        XCTAssertEqual(loss.map(\.step), [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertEqual(loss.map(\.value), [1, 2, 3, 4, 50, 60, 70, 80] as [Float])
    }
}
