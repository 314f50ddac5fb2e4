import Foundation
import TestSupport
import XCTest
import TensorCore
@testable import TensorIO

final class TorchArchiveTests: XCTestCase {
    /// `tensor_views.pt` holds views of one storage, written by torch.save: permuted, sliced (with a
    /// storage offset), strided, fp16 and bf16 transposes, int64 and a scalar.
    func testStridedViewsWrittenByTorch() throws {
        let archive = try TorchArchive(path: goldenCheckpoints.appendingPathComponent("tensor_views.pt").path)
        XCTAssertFalse(archive.isTorchScript)
        XCTAssertEqual(archive.prefix, "tensor_views/")
        let t = try archive.loadAll()
        // base[i][j][k] = (12i + 4j + k) / 4 - 3
        func base(_ i: Int, _ j: Int, _ k: Int) -> Float { Float(12 * i + 4 * j + k) / 4 - 3 }
        XCTAssertEqual(t["base"]?.shape, [2, 3, 4])
        XCTAssertEqual(t["base"]?.data, (0..<24).map { Float($0) / 4 - 3 })
        var permuted: [Float] = []
        for k in 0..<4 { for i in 0..<2 { for j in 0..<3 { permuted.append(base(i, j, k)) } } }
        XCTAssertEqual(t["permuted"], Tensor(shape: [4, 2, 3], data: permuted))
        var slice: [Float] = []
        for j in 0..<3 { for k in 1..<3 { slice.append(base(1, j, k)) } }
        XCTAssertEqual(t["slice"], Tensor(shape: [3, 2], data: slice))
        var halfT: [Float] = [], bf16T: [Float] = []
        for k in 0..<4 { for j in 0..<3 { halfT.append(base(0, j, k)); bf16T.append(base(1, j, k)) } }
        XCTAssertEqual(t["half_t"], Tensor(shape: [4, 3], data: halfT))
        XCTAssertEqual(t["bf16_t"], Tensor(shape: [4, 3], data: bf16T))
        XCTAssertEqual(t["int64"], Tensor(shape: [5], data: [-2, -1, 0, 1, 2]))
        XCTAssertEqual(t["scalar"], Tensor(shape: [], data: [3.5]))
        XCTAssertEqual(t["step"], Tensor(shape: [5], data: stride(from: 1, to: 24, by: 5).map { Float($0) / 4 - 3 }))
        let refs = Dictionary(archive.tensorReferences().map { ($0.name, $0.tensor) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(refs["slice"]?.storageOffset, 13)
        XCTAssertEqual(refs["permuted"]?.stride, [1, 12, 4])
        XCTAssertEqual(refs["bf16_t"]?.storage.dtype, .bfloat16)
    }

    func testTorchScriptModuleTree() throws {
        let archive = try TorchArchive(path: goldenCheckpoints.appendingPathComponent("openai.pt").path)
        XCTAssertTrue(archive.isTorchScript)
        guard case .object(let clip) = archive.root else { return XCTFail("root is \(archive.root.typeDescription)") }
        XCTAssertTrue(clip.module.hasPrefix("__torch__."), clip.qualifiedName)
        XCTAssertEqual(clip.name, "CLIP")
        let conv = archive.root["visual"]?["conv1"]?["weight"]?.tensor
        XCTAssertEqual(conv?.shape, [128, 3, 8, 8])
        XCTAssertEqual(conv?.storage.dtype, .float16)
        let names = Set(archive.tensorReferences().map(\.name))
        XCTAssertTrue(names.contains("visual.transformer.resblocks.1.attn.in_proj_weight"))
        XCTAssertTrue(names.contains("input_resolution"))
        XCTAssertEqual(try archive.tensor(XCTUnwrap(archive.root["input_resolution"]?.tensor), name: "input_resolution").data, [32])
    }

    /// A hand-made archive whose storage is shorter than its tensor claims.
    func testStorageTooShortAndMissing() throws {
        let dir = try makeTempDir(self)
        let pickle = pickleTensorBytes(storage: "FloatStorage")  // storage '3', 12 elements, [2,3] stride [1,2] offset 2
        let url = dir.appendingPathComponent("short.pt")
        try write(buildZip([("short/data.pkl", pickle), ("short/data/3", [UInt8](repeating: 0, count: 20))]), to: url)
        let archive = try TorchArchive(path: url.path)
        let ref = try XCTUnwrap(archive.root.tensor)
        assertThrows(try archive.tensor(ref, name: "w"), contains: [url.path, "tensor 'w'", "short/data/3", "20 bytes"])
        let url2 = dir.appendingPathComponent("nostorage.pt")
        try write(buildZip([("nostorage/data.pkl", pickle)]), to: url2)
        assertThrows(try TorchArchive(path: url2.path).tensor(ref, name: "w"), contains: [url2.path, "tensor 'w'", "nostorage/data/3"])
        // A good one: 12 floats 0..11, view offset 2, shape [2,3], stride [1,2] -> [[2,4,6],[3,5,7]]
        let floats = (0..<12).flatMap { i -> [UInt8] in withUnsafeBytes(of: Float(i).bitPattern.littleEndian) { Array($0) } }
        let url3 = dir.appendingPathComponent("good.pt")
        try write(buildZip([("good/data.pkl", pickle), ("good/data/3", floats)]), to: url3)
        XCTAssertEqual(try TorchArchive(path: url3.path).loadAll()[""], Tensor(shape: [2, 3], data: [2, 4, 6, 3, 5, 7]))
    }

    /// Mutated and truncated copies of a real data.pkl: every outcome is a value or a thrown error.
    func testMutatedPicklesNeverCrash() throws {
        let archive = try TorchArchive(path: goldenCheckpoints.appendingPathComponent("tensor_views.pt").path)
        let pickle = try archive.zip.contents(of: archive.prefix + "data.pkl")
        var state: UInt64 = 42
        func random(_ n: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(max(n, 1)))
        }
        var thrown = 0
        for _ in 0..<500 {
            var bytes = pickle
            if random(3) == 0 {
                bytes = Array(bytes.prefix(random(bytes.count)))
            } else {
                for _ in 0...random(4) { bytes[random(bytes.count)] = UInt8(random(256)) }
            }
            do {
                let value = try Unpickler(source: "mutated.pkl").load(bytes)
                for (name, ref) in value.tensorReferences() { _ = try? archive.tensor(ref, name: name) }
            } catch let e as FileError {
                XCTAssertTrue(e.message.hasPrefix("mutated.pkl: "), e.message)
                thrown += 1
            }
        }
        XCTAssertGreaterThan(thrown, 100)
    }

    func testNotATorchArchive() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("other.zip")
        try write(buildZip([("readme.txt", Array("hi".utf8))]), to: url)
        assertThrows(try TorchArchive(path: url.path), contains: [url.path, "no '<name>/data.pkl' entry"])
        let legacy = dir.appendingPathComponent("legacy.pt")
        try write([0x80, 0x02, 0x8a, 0x0a], to: legacy)
        assertThrows(try TorchArchive(path: legacy.path), contains: [legacy.path, "legacy"])
        let bad = dir.appendingPathComponent("badpickle.pt")
        try write(buildZip([("x/data.pkl", [0x80, 0x02, 0xfe, 0x2e])]), to: bad)
        assertThrows(try TorchArchive(path: bad.path), contains: [bad.path, "x/data.pkl", "unknown opcode 0xfe at offset 2"])
    }
}
