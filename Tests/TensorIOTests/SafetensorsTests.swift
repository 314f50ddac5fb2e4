import Foundation
import TestSupport
import XCTest
import TensorCore
@testable import TensorIO

final class SafetensorsTests: XCTestCase {
    func sample() -> [String: Tensor] {
        [
            "a.weight": Tensor(shape: [2, 3], data: [0, 1, -2, 0.5, 65504, -0.000061035156]),
            "b": Tensor(shape: [4], data: [1.25, -3, 1024, 0.0078125]),
            "scalar": Tensor(shape: [], data: [2.5]),
            "empty": Tensor(shape: [0, 3], data: []),
        ]
    }

    func testRoundTripF32WithMetadata() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("sub/x.safetensors")
        let tensors = sample()
        try Safetensors.write(tensors: tensors, metadata: ["format": "pt", "quote\"d": "line\nbreak"], to: url)
        let file = try SafetensorsFile(path: url.path)
        XCTAssertEqual(file.metadata, ["format": "pt", "quote\"d": "line\nbreak"])
        XCTAssertEqual(Set(file.names), Set(tensors.keys))
        XCTAssertEqual(try file.loadAll(), tensors)
        XCTAssertEqual(file.entry(named: "a.weight")?.dtypeName, "F32")
        // The header is padded so the data starts 8-byte aligned.
        XCTAssertEqual((file.entries.first?.byteRange.lowerBound ?? 1) % 8, 0)
        // No temporary files are left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path), ["x.safetensors"])
        // Overwriting replaces the file.
        try Safetensors.write(tensors: ["only": Tensor(shape: [1], data: [7])], to: url)
        XCTAssertEqual(try Safetensors.read(path: url.path).tensors, ["only": Tensor(shape: [1], data: [7])])
    }

    func testRoundTripF16AndBF16() throws {
        let dir = try makeTempDir(self)
        let tensors = sample()  // every value is exact in fp16; bf16 loses 65504's low bits and 1024.0078 etc.
        let f16 = dir.appendingPathComponent("h.safetensors")
        try Safetensors.write(tensors: tensors, to: f16, dtype: .float16)
        XCTAssertEqual(try SafetensorsFile(path: f16.path).entry(named: "b")?.dtype, .float16)
        XCTAssertEqual(try Safetensors.read(path: f16.path).tensors, tensors)
        let bf16 = dir.appendingPathComponent("b.safetensors")
        try Safetensors.write(tensors: tensors, to: bf16, dtype: .bfloat16)
        let back = try Safetensors.read(path: bf16.path).tensors
        for (name, t) in tensors {
            XCTAssertEqual(back[name]?.shape, t.shape)
            XCTAssertEqual(back[name]?.data, t.data.map { floatFromBFloat16Bits(bfloat16BitsFromFloat($0)) }, name)
        }
        XCTAssertEqual(back["b"]?.data, [1.25, -3, 1024, 0.0078125])
    }

    /// A file written by Python's safetensors with every dtype.
    func testGoldenDtypes() throws {
        let file = try SafetensorsFile(path: goldenCheckpoints.appendingPathComponent("dtypes.safetensors").path)
        XCTAssertEqual(file.metadata["written_by"], "write_checkpoints.py")
        let flat: [Float] = (0..<6).map { Float($0) / 4 - 0.5 }
        for name in ["f32", "f16", "bf16", "f64"] {
            XCTAssertEqual(try file.tensor(named: name), Tensor(shape: [2, 3], data: flat), name)
        }
        XCTAssertEqual(try file.tensor(named: "i64").data, [-3, -2, -1, 0, 1, 2])
        XCTAssertEqual(try file.tensor(named: "i32").data, [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try file.tensor(named: "u8").data, [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try file.tensor(named: "bool").data, [1, 0, 1])
        XCTAssertEqual(try file.tensor(named: "scalar"), Tensor(shape: [], data: [2.25]))
    }

    func header(_ json: String, length: UInt64? = nil, data: [UInt8] = []) -> [UInt8] {
        var b = Bytes()
        b.u64(length ?? UInt64(json.utf8.count))
        b.str(json)
        b.raw(data)
        return b.b
    }

    func testTruncatedAndCorruptFiles() throws {
        let dir = try makeTempDir(self)
        func file(_ name: String, _ bytes: [UInt8]) throws -> String {
            let url = dir.appendingPathComponent(name)
            try write(bytes, to: url)
            return url.path
        }
        // Header length past the end of the file.
        let past = try file("past.safetensors", header("{\"a\":{}}", length: 5000))
        assertThrows(try SafetensorsFile(path: past), contains: [past, "header length 5000 extends past the end of the file"])
        // A header cut short (the file ends inside the JSON).
        let full = header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data: [UInt8](repeating: 0, count: 8))
        let cut = try file("cut.safetensors", Array(full.prefix(30)))
        assertThrows(try SafetensorsFile(path: cut), contains: [cut, "truncated safetensors", "header length"])
        // Too short for the length field.
        let tiny = try file("tiny.safetensors", [1, 2, 3])
        assertThrows(try SafetensorsFile(path: tiny), contains: [tiny, "too short"])
        // Tensor data past the end.
        let short = try file("short.safetensors", Array(full.dropLast(4)))
        assertThrows(try SafetensorsFile(path: short), contains: [short, "tensor 'a' extends past the end of the file"])
        // data_offsets that disagree with shape and dtype.
        let bad = try file("bad.safetensors", header("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data: [UInt8](repeating: 0, count: 8)))
        assertThrows(try SafetensorsFile(path: bad), contains: [bad, "tensor 'a'", "[3]", "data_offsets"])
        // Not JSON.
        let notJSON = try file("nojson.safetensors", header("{not json}"))
        assertThrows(try SafetensorsFile(path: notJSON), contains: [notJSON, "not valid JSON"])
        // Unsupported dtype: listed, rejected on load with the tensor's name.
        let f8 = try file("f8.safetensors", header("{\"e\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", data: [0, 0]))
        let f = try SafetensorsFile(path: f8)
        assertThrows(try f.tensor(named: "e"), contains: [f8, "tensor 'e'", "F8_E4M3", "not supported"])
        assertThrows(try f.tensor(named: "zzz"), contains: [f8, "no tensor named 'zzz'"])
        assertThrows(try SafetensorsFile(path: dir.appendingPathComponent("none.safetensors").path), contains: ["none.safetensors", "no such file"])
    }
}
