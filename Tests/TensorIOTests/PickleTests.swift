import Foundation
import TestSupport
import XCTest
@testable import TensorIO

// Byte builders shared with TorchArchiveTests.
let proto2: [UInt8] = [0x80, 0x02]
let stop: [UInt8] = [0x2e]
func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
func binunicode(_ s: String) -> [UInt8] { [0x58] + u32(UInt32(s.utf8.count)) + Array(s.utf8) }
func shortUnicode(_ s: String) -> [UInt8] { [0x8c, UInt8(s.utf8.count)] + Array(s.utf8) }
func global(_ module: String, _ name: String) -> [UInt8] { [0x63] + Array("\(module)\n\(name)\n".utf8) }


/// `_rebuild_tensor_v2(('storage', torch.HalfStorage, '3', 'cpu', 12), 2, (2, 3), (1, 2), False, OrderedDict())`
func pickleTensorBytes(storage: String) -> [UInt8] {
    proto2 + global("torch._utils", "_rebuild_tensor_v2")
        + [0x28] + [0x28] + binunicode("storage") + global("torch", storage) + binunicode("3") + binunicode("cpu") + [0x4b, 12, 0x74, 0x51]
        + [0x4b, 2] + [0x4b, 2, 0x4b, 3, 0x86] + [0x4b, 1, 0x4b, 2, 0x86] + [0x89]
        + global("collections", "OrderedDict") + [0x29, 0x52] + [0x74, 0x52] + stop
}


/// Pickles built byte by byte, one opcode family at a time.
final class PickleTests: XCTestCase {
    func load(_ parts: [UInt8]...) throws -> PickleValue {
        try Unpickler(source: "test.pkl").load(Array(parts.joined()))
    }

    func testIntegers() throws {
        XCTAssertEqual(try load(proto2, [0x4b, 200], stop).int, 200)                         // BININT1
        XCTAssertEqual(try load(proto2, [0x4d, 0x34, 0x12], stop).int, 0x1234)              // BININT2
        XCTAssertEqual(try load(proto2, [0x4a, 0xff, 0xff, 0xff, 0xff], stop).int, -1)      // BININT
        XCTAssertEqual(try load(proto2, [0x4a, 0x00, 0x00, 0x00, 0x80], stop).int, Int(Int32.min))
        XCTAssertEqual(try load(proto2, [0x8a, 0x00], stop).int, 0)                         // LONG1, 0 bytes
        XCTAssertEqual(try load(proto2, [0x8a, 0x02, 0x00, 0x80], stop).int, -32768)        // LONG1 negative
        XCTAssertEqual(try load(proto2, [0x8a, 0x05, 0x00, 0x00, 0x00, 0x00, 0x01], stop).int, 1 << 32)
        XCTAssertEqual(try load(proto2, [0x8a, 0x08] + u64(UInt64(1) << 62), stop).int, 1 << 62)
        XCTAssertEqual(try load(proto2, [0x8b] + u32(2) + [0xff, 0x7f], stop).int, 32767)  // LONG4
        XCTAssertEqual(try load([0x49] + Array("-42\n".utf8), stop).int, -42)               // INT (text)
        assertThrows(try load(proto2, [0x8a, 0x09] + [UInt8](repeating: 0x11, count: 9), stop),
                     contains: ["test.pkl", "does not fit in 64 bits"])
    }

    func testFloatsBoolsNone() throws {
        guard case .float(let f) = try load(proto2, [0x47, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0], stop) else { return XCTFail() }
        XCTAssertEqual(f, 1.5)                                                              // BINFLOAT (big-endian)
        guard case .bool(true) = try load(proto2, [0x88], stop) else { return XCTFail() }    // NEWTRUE
        guard case .bool(false) = try load(proto2, [0x89], stop) else { return XCTFail() }   // NEWFALSE
        XCTAssertTrue(try load(proto2, [0x4e], stop).isNone)                                // NONE
    }

    func testStringsAndBytes() throws {
        XCTAssertEqual(try load(proto2, binunicode("héllo"), stop).string, "héllo")         // BINUNICODE
        XCTAssertEqual(try load(proto2, shortUnicode("abc"), stop).string, "abc")           // SHORT_BINUNICODE
        XCTAssertEqual(try load(proto2, [0x8d] + u64(2) + Array("xy".utf8), stop).string, "xy")  // BINUNICODE8
        XCTAssertEqual(try load(proto2, [0x55, 2, 0x41, 0xe9], stop).string, "Aé")          // SHORT_BINSTRING (latin-1)
        guard case .bytes(let b) = try load(proto2, [0x43, 3, 1, 2, 3], stop) else { return XCTFail() }  // SHORT_BINBYTES
        XCTAssertEqual(b, [1, 2, 3])
        guard case .bytes(let b2) = try load(proto2, [0x42] + u32(2) + [9, 8], stop) else { return XCTFail() }  // BINBYTES
        XCTAssertEqual(b2, [9, 8])
        guard case .bytes(let b3) = try load(proto2, [0x8e] + u64(1) + [7], stop) else { return XCTFail() }  // BINBYTES8
        XCTAssertEqual(b3, [7])
        // Protocol-2 bytes: _codecs.encode('\xff\x01', 'latin1')
        guard case .bytes(let b4) = try load(proto2, global("_codecs", "encode"), binunicode("\u{ff}\u{01}"), binunicode("latin1"),
                                             [0x86, 0x52], stop) else { return XCTFail() }
        XCTAssertEqual(b4, [0xff, 0x01])
    }

    func testTuples() throws {
        XCTAssertEqual(try load(proto2, [0x29], stop).tuple?.count, 0)                       // EMPTY_TUPLE
        XCTAssertEqual(try load(proto2, [0x4b, 1, 0x85], stop).tuple?.compactMap(\.int), [1])                    // TUPLE1
        XCTAssertEqual(try load(proto2, [0x4b, 1, 0x4b, 2, 0x86], stop).tuple?.compactMap(\.int), [1, 2])       // TUPLE2
        XCTAssertEqual(try load(proto2, [0x4b, 1, 0x4b, 2, 0x4b, 3, 0x87], stop).tuple?.compactMap(\.int), [1, 2, 3])  // TUPLE3
        XCTAssertEqual(try load(proto2, [0x28, 0x4b, 1, 0x4b, 2, 0x4b, 3, 0x4b, 4, 0x74], stop).tuple?.compactMap(\.int), [1, 2, 3, 4])  // MARK TUPLE
    }

    func testListsAndDicts() throws {
        // EMPTY_LIST, APPEND, MARK ... APPENDS
        let list = try load(proto2, [0x5d, 0x4b, 1, 0x61, 0x28, 0x4b, 2, 0x4b, 3, 0x65], stop)
        XCTAssertEqual(list.tuple?.compactMap(\.int), [1, 2, 3])
        // MARK ... LIST
        XCTAssertEqual(try load(proto2, [0x28, 0x4b, 5, 0x4b, 6, 0x6c], stop).tuple?.compactMap(\.int), [5, 6])
        // EMPTY_DICT, SETITEM, MARK ... SETITEMS
        let dict = try load(proto2, [0x7d], shortUnicode("a"), [0x4b, 1, 0x73],
                            [0x28], shortUnicode("b"), [0x4b, 2], shortUnicode("c"), [0x4b, 3], [0x75], stop)
        XCTAssertEqual(dict.dict?.stringKeyedEntries.map(\.key), ["a", "b", "c"])
        XCTAssertEqual(dict["c"]?.int, 3)
        // MARK ... DICT
        XCTAssertEqual(try load(proto2, [0x28], shortUnicode("k"), [0x4e, 0x64], stop).dict?.count, 1)
        // collections.OrderedDict() via REDUCE, then SETITEMS; BUILD with its `_metadata` state is accepted.
        let od = try load(proto2, global("collections", "OrderedDict"), [0x29, 0x52], [0x28], shortUnicode("x"), [0x4b, 7, 0x75],
                          [0x7d], shortUnicode("_metadata"), [0x4e, 0x73, 0x62], stop)
        XCTAssertEqual(od["x"]?.int, 7)
    }

    func testMemo() throws {
        // BINPUT / BINGET: the memoized dict is the same object that SETITEMS fills later.
        let v = try load(proto2, [0x7d, 0x71, 0x00], shortUnicode("k"), [0x4b, 1, 0x73], [0x30],  // POP the dict
                         [0x68, 0x00], stop)
        XCTAssertEqual(v["k"]?.int, 1)
        // LONG_BINPUT / LONG_BINGET
        let w = try load(proto2, shortUnicode("s"), [0x72] + u32(300), [0x30, 0x6a] + u32(300), stop)
        XCTAssertEqual(w.string, "s")
        // MEMOIZE (protocol 4) with FRAME, STACK_GLOBAL
        let x = try load([0x80, 0x04, 0x95] + u64(20), shortUnicode("a"), [0x94], [0x4b, 9, 0x86, 0x94],
                         [0x68, 0x01], [0x30], [0x68, 0x00], [0x86], stop)  // (memo[1]=('a',9)), then ('a'... ) rebuilt
        XCTAssertEqual(x.tuple?.count, 2)
        XCTAssertEqual(x.tuple?.first?.tuple?.last?.int, 9)
        XCTAssertEqual(x.tuple?.last?.string, "a")
        assertThrows(try load(proto2, [0x68, 0x05], stop), contains: ["test.pkl", "memo key 5 not found"])
    }

    func testStackGlobalNewObjAndBuild() throws {
        // A TorchScript-like module: NEWOBJ of __torch__.m.Block, BUILD with a dict of attributes.
        let obj = try load(proto2, shortUnicode("__torch__.m"), shortUnicode("Block"), [0x93, 0x29, 0x81],
                           [0x7d, 0x28], shortUnicode("training"), [0x89], shortUnicode("width"), [0x4b, 64], [0x75, 0x62], stop)
        guard case .object(let o) = obj else { return XCTFail("\(obj.typeDescription)") }
        XCTAssertEqual(o.qualifiedName, "__torch__.m.Block")
        XCTAssertEqual(o[attribute: "width"]?.int, 64)
        XCTAssertEqual(o.attributes.map(\.name), ["training", "width"])
        // __setstate__-style BUILD with a tuple state.
        let s = try load(proto2, global("__torch__.m", "Packed"), [0x29, 0x81], [0x4b, 1, 0x4b, 2, 0x86, 0x62], stop)
        XCTAssertEqual(s.object?.state?.tuple?.compactMap(\.int), [1, 2])
        // REDUCE of an unknown callable stays an uninterpreted object.
        let r = try load(proto2, global("numpy", "dtype"), shortUnicode("f4"), [0x85, 0x52], stop)
        XCTAssertEqual(r.object?.qualifiedName, "numpy.dtype")
        XCTAssertEqual(r.object?.args.first?.string, "f4")
    }

    func testTorchTensorReference() throws {
        let t = try Unpickler(source: "t.pkl").load(pickleTensorBytes(storage: "HalfStorage"))
        guard let ref = t.tensor else { return XCTFail(t.typeDescription) }
        XCTAssertEqual(ref.storage.dtype, .float16)
        XCTAssertEqual(ref.storage.key, "3")
        XCTAssertEqual(ref.storage.numel, 12)
        XCTAssertEqual(ref.storage.location, "cpu")
        XCTAssertEqual(ref.storageOffset, 2)
        XCTAssertEqual(ref.shape, [2, 3])
        XCTAssertEqual(ref.stride, [1, 2])
        XCTAssertFalse(ref.isContiguous)
        XCTAssertEqual(try Unpickler().load(pickleTensorBytes(storage: "BFloat16Storage")).tensor?.storage.dtype, .bfloat16)
        XCTAssertEqual(try Unpickler().load(pickleTensorBytes(storage: "FloatStorage")).tensor?.storage.dtype, .float32)
        let q = try Unpickler().load(pickleTensorBytes(storage: "QInt8Storage")).tensor
        XCTAssertNotNil(q)
        XCTAssertNil(q?.storage.dtype)
        // _rebuild_parameter(tensor, requires_grad, hooks) is the tensor.
        var param = proto2 + global("torch._utils", "_rebuild_parameter")
        param += Array(pickleTensorBytes(storage: "FloatStorage").dropFirst(2).dropLast()) + [0x88] + global("collections", "OrderedDict") + [0x29, 0x52, 0x87, 0x52] + stop
        XCTAssertEqual(try Unpickler().load(param).tensor?.shape, [2, 3])
    }

    func testTensorReferencesWalk() throws {
        // {'a': {'b': tensor}, 'm': Block(w=tensor)}
        let tensor = Array(pickleTensorBytes(storage: "FloatStorage").dropFirst(2).dropLast())
        let bytes = proto2 + [0x7d, 0x28] + shortUnicode("a") + [0x7d] + shortUnicode("b") + tensor + [0x73]
            + shortUnicode("m") + global("__torch__", "Block") + [0x29, 0x81, 0x7d] + shortUnicode("w") + tensor + [0x73, 0x62]
            + [0x75] + stop
        let refs = try Unpickler().load(bytes).tensorReferences()
        XCTAssertEqual(refs.map(\.name), ["a.b", "m.w"])
    }

    func testCorruptPickles() throws {
        assertThrows(try load(proto2, [0xff], stop), contains: ["test.pkl", "unknown opcode 0xff at offset 2"])
        assertThrows(try load(proto2, [0x4b, 1]), contains: ["test.pkl", "without a STOP"])
        assertThrows(try load(proto2, [0x86], stop), contains: ["test.pkl", "stack underflow", "offset 2"])
        assertThrows(try load(proto2, [0x58] + u32(1000) + [0x41], stop), contains: ["test.pkl", "runs past the end"])
        assertThrows(try load(proto2, [0x4a, 0x01]), contains: ["test.pkl", "unexpected end of data"])
        assertThrows(try load(proto2, [0x75], stop), contains: ["no MARK"])
        assertThrows(try load(proto2, [0x4b, 1, 0x4b, 2], stop), contains: ["STOP with 2 values"])
        assertThrows(try load([]), contains: ["without a STOP"])
    }
}
