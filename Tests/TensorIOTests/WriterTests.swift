import Foundation
import TestSupport
import XCTest
import TensorCore
@testable import TensorIO

final class WriterTests: XCTestCase {
    let entries: [(name: String, data: Data)] = [
        ("a/data.pkl", Data("pickle".utf8)),
        ("a/data/0", Data((0..<100).map { UInt8($0) })),
        ("a/empty", Data()),
    ]

    func testZipWriterRoundTripAndAlignment() throws {
        let dir = try makeTempDir(self)
        for zip64 in [false, true] {
            let url = dir.appendingPathComponent("w\(zip64).zip")
            try ZipWriter.write(entries: entries, to: url, forceZip64: zip64)
            let zip = try ZipArchive(path: url.path)
            XCTAssertEqual(zip.entryNames, entries.map(\.name))
            for (name, data) in entries {
                let slice = try zip.slice(of: name)
                XCTAssertEqual(slice.data, data, name)
                XCTAssertEqual(slice.offset % 64, 0, name)
                XCTAssertEqual(try zip.contents(of: name, verifyCRC: true), [UInt8](data))
            }
        }
        assertThrows(try ZipWriter.write(entries: [("x", Data()), ("x", Data())], to: dir.appendingPathComponent("dup.zip")),
                     contains: ["duplicate zip entry 'x'"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("dup.zip").path))
    }

    func testPicklerRoundTrip() throws {
        let inner = PickleDict()
        inner.set(.string("k"), .list(PickleList([.int(1), .int(-70000), .int(1 << 40), .float(-2.5)])))
        let root = PickleDict()
        root.set(.string("none"), .none)
        root.set(.string("flags"), .tuple([.bool(true), .bool(false)]))
        root.set(.string("big"), .tuple((0..<5).map { .int($0 * 300) }))
        root.set(.string("text"), .string("héllo\nworld"))
        root.set(.string("bytes"), .bytes([0, 255, 10]))
        root.set(.string("inner"), .dict(inner))
        root.set(.int(7), .tuple([]))
        let back = try Unpickler().load(try Pickler.dumps(.dict(root)))
        XCTAssertTrue(back["none"]?.isNone ?? false)
        XCTAssertEqual(back["flags"]?.tuple?.compactMap(\.int), [1, 0])
        XCTAssertEqual(back["big"]?.tuple?.compactMap(\.int), [0, 300, 600, 900, 1200])
        XCTAssertEqual(back["text"]?.string, "héllo\nworld")
        guard case .bytes(let b)? = back["bytes"] else { return XCTFail() }
        XCTAssertEqual(b, [0, 255, 10])
        let list = back["inner"]?["k"]?.tuple
        XCTAssertEqual(list?.prefix(3).compactMap(\.int), [1, -70000, 1 << 40])
        guard case .float(let f)? = list?.last else { return XCTFail() }
        XCTAssertEqual(f, -2.5)
        XCTAssertEqual(back.dict?.count, 7)
    }

    func testTorchSaveRoundTrip() throws {
        let dir = try makeTempDir(self)
        let tensors = [
            "w": Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, -6.5]),
            "s": Tensor(shape: [], data: [0.25]),
        ]
        for dtype in [StorageDType.float32, .float16, .bfloat16] {
            let url = dir.appendingPathComponent("sd-\(dtype.rawValue).pt")
            try TorchArchive.writeStateDict(tensors, to: url, dtype: dtype)
            let archive = try TorchArchive(path: url.path)
            XCTAssertEqual(archive.prefix, "archive/")
            XCTAssertFalse(archive.isTorchScript)
            XCTAssertEqual(try archive.loadAll(), tensors)
            XCTAssertEqual(archive.tensorReferences().first?.tensor.storage.dtype, dtype)
        }
        // A nested checkpoint with non-tensor entries.
        var writer = TorchSaveWriter()
        let state = PickleDict()
        state.set(.string("module.w"), try writer.add(tensors["w"]!))
        let root = PickleDict()
        root.set(.string("epoch"), .int(3))
        root.set(.string("state_dict"), .dict(state))
        let url = dir.appendingPathComponent("nested.pt")
        try writer.write(root: .dict(root), to: url, archiveName: "nested")
        let archive = try TorchArchive(path: url.path)
        XCTAssertEqual(archive.root["epoch"]?.int, 3)
        XCTAssertEqual(try archive.loadAll(), ["state_dict.module.w": tensors["w"]!])
    }
}
