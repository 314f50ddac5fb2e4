import Foundation
import TensorCore
import TestSupport
import XCTest
@testable import TensorIO

/// Regression tests for issue 8: deep pickles, CRCs of every entry, untrusted sizes, byte-identical
/// output, stale temporaries. The inputs are built here; crashing inputs found by fuzzing are kept
/// under Goldens/fuzz/tensorio/ and replayed by `testFuzzRegressionFixtures`.
final class HardeningTests: XCTestCase {
    // MARK: K1: deep pickles

    /// MARK x n, LIST x n: lists nested n deep, 2 bytes a level (the 30,000-deep, 60 KB .pt of K1).
    static func nestedLists(_ n: Int) -> [UInt8] {
        proto2 + [UInt8](repeating: 0x28, count: n) + [UInt8](repeating: 0x6c, count: n) + stop
    }

    /// EMPTY_TUPLE, TUPLE1 x n: 1-tuples nested n deep.
    static func nestedTuples(_ n: Int) -> [UInt8] {
        proto2 + [0x29] + [UInt8](repeating: 0x85, count: n) + stop
    }

    /// n empty lists memoized first, then each appended to the one before: a chain n deep that no
    /// opcode builds in one step, so only destruction without recursion keeps it from overflowing.
    static func chainedLists(_ n: Int) -> [UInt8] {
        var b = proto2
        for i in 0..<n { b += [0x5d, 0x72] + u32(UInt32(i)) + [0x30] }                      // EMPTY_LIST, LONG_BINPUT i, POP
        for i in 0..<(n - 1) { b += [0x6a] + u32(UInt32(i)) + [0x6a] + u32(UInt32(i + 1)) + [0x61, 0x30] }  // GET i, GET i+1, APPEND, POP
        return b + [0x6a] + u32(0) + stop
    }

    func testDeepNestingIsATypedError() throws {
        for (bytes, what) in [(Self.nestedLists(30_000), "lists"), (Self.nestedTuples(50_000), "tuples")] {
            assertThrows(try Unpickler(source: "deep.pkl").load(bytes), contains: ["deep.pkl", "deeper than 1000 levels"])
            XCTAssertEqual(try? Unpickler(source: "deep.pkl").load(bytes).typeDescription, nil, what)
        }
        // At the limit it loads; one more level is refused.
        XCTAssertNotNil(try Unpickler().load(Self.nestedLists(1_000)).tuple)
        assertThrows(try Unpickler(source: "x").load(Self.nestedLists(1_001)), contains: ["deeper than 1000"])
        XCTAssertNotNil(try Unpickler(maxDepth: 5_000).load(Self.nestedTuples(2_000)).tuple)
    }

    func testDeepPickleInATorchArchiveIsATypedError() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("deep.pt")
        try write(buildZip([("deep/data.pkl", Self.nestedLists(30_000))]), to: url)
        XCTAssertLessThan(try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int ?? 0, 70_000)
        assertThrows(try TorchArchive(path: url.path), contains: [url.path, "deep/data.pkl", "deeper than 1000 levels"])
    }

    func testChainsBuiltByMutationAreFreedWithoutRecursion() throws {
        // 30,000 levels (K1's depth): freed recursively this needs about 20 MB of stack (the main
        // thread has 8).
        let value = try Unpickler().load(Self.chainedLists(30_000))
        XCTAssertEqual(value.tuple?.count, 1)
        XCTAssertEqual(value.tensorReferences().count, 0)  // the walk is iterative too
        // Dropping `value` here must not overflow the stack; the same chain inside a dict and an
        // object state, and the error path (no STOP: the machine's memo is freed), too.
        var bytes = Self.chainedLists(30_000)
        bytes.removeLast()  // no STOP
        assertThrows(try Unpickler(source: "nostop").load(bytes), contains: ["without a STOP"])
        let d = PickleDict()
        var v = PickleValue.list(PickleList())
        for i in 0..<30_000 {
            let o = PickleObject(module: "m", name: "C", state: .tuple([v]))
            v = i % 2 == 0 ? .object(o) : .list(PickleList([v]))
        }
        d.set(.string("chain"), v)
        v = .none
        _ = d  // released at the end of the scope, iteratively
    }

    func testExponentialSharingIsBoundedWhenWalking() throws {
        // (x, x) built 40 times over the same memoized value: 2^40 paths to walk.
        var bytes = proto2 + pickleTensorBytes(storage: "FloatStorage").dropFirst(2).dropLast()
        for _ in 0..<40 { bytes += [0x32, 0x86] }  // DUP, TUPLE2
        bytes += stop
        let value = try Unpickler().load(bytes)
        assertThrows(try value.checkedTensorReferences(source: "dag.pkl", budget: 100_000), contains: ["dag.pkl", "more than 100000 values"])
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("dag.pt")
        try write(buildZip([("dag/data.pkl", bytes)]), to: url)
        assertThrows(try TorchArchive(path: url.path), contains: [url.path, "dag/data.pkl", "values along its paths"])
    }

    func testRepeatedEncodingIsBounded() throws {
        // A 1,000-byte string memoized, then _codecs.encode(memo[0]) 10,000 times: 10 MB from 60 KB.
        var b = proto2 + binunicode(String(repeating: "a", count: 1_000)) + [0x71, 0] + [0x30] + [0x28]
        for _ in 0..<10_000 { b += global("_codecs", "encode") + [0x68, 0, 0x85, 0x52] }
        b += [0x6c] + stop
        assertThrows(try Unpickler(source: "enc.pkl").load(b), contains: ["enc.pkl", "more bytes"])
    }

    // MARK: CRCs

    func testEveryEntryIsCRCChecked() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("sd.pt")
        try TorchArchive.writeStateDict(["w": Tensor(shape: [4], data: [1, 2, 3, 4])], to: url)
        var bytes = [UInt8](try Data(contentsOf: url))
        let archive = try TorchArchive(path: url.path)
        let offset = try archive.zip.slice(of: "archive/data/0").offset
        bytes[offset + 5] ^= 0x10  // one bit of the tensor's data
        let flipped = dir.appendingPathComponent("flipped.pt")
        try write(bytes, to: flipped)
        let bad = try TorchArchive(path: flipped.path)  // data.pkl is intact
        assertThrows(try bad.loadAll(), contains: [flipped.path, "archive/data/0", "CRC-32"])
        XCTAssertNoThrow(try bad.zip.slice(of: "archive/data/0", verifyCRC: false))
        // A good archive verifies each entry once.
        XCTAssertEqual(try archive.loadAll()["w"], Tensor(shape: [4], data: [1, 2, 3, 4]))
        XCTAssertEqual(try archive.loadAll()["w"], Tensor(shape: [4], data: [1, 2, 3, 4]))
    }

    func testZlibCRCMatchesTheDefinition() {
        var rng = Mutator(seed: 7)
        for n in [0, 1, 7, 64, 1000, 70_000] {
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            XCTAssertEqual(CRC32.checksum(bytes), FileFixtures.crc32(bytes), "\(n) bytes")
        }
    }

    // MARK: Untrusted sizes

    func testHostileViewsAreTypedErrors() throws {
        let dir = try makeTempDir(self)
        let floats = (0..<12).flatMap { i -> [UInt8] in withUnsafeBytes(of: Float(i).bitPattern.littleEndian) { Array($0) } }
        func view(offset: Int, shape: [Int], stride: [Int], numel: Int = 12) -> [UInt8] {
            var b = proto2 + global("torch._utils", "_rebuild_tensor_v2") + [0x28, 0x28] + binunicode("storage")
                + global("torch", "FloatStorage") + binunicode("3") + binunicode("cpu") + [0x8a, 8] + u64(UInt64(numel)) + [0x74, 0x51]
            b += [0x8a, 8] + u64(UInt64(offset)) + [0x28] + shape.flatMap { [0x8a, 8] + u64(UInt64(bitPattern: Int64($0))) } + [0x74]
            b += [0x28] + stride.flatMap { [0x8a, 8] + u64(UInt64(bitPattern: Int64($0))) } + [0x74]
            return b + [0x89] + global("collections", "OrderedDict") + [0x29, 0x52, 0x74, 0x52] + stop
        }
        let cases: [(String, [UInt8], String)] = [
            ("huge-dims", view(offset: 0, shape: [1 << 40, 1 << 40, 0], stride: [1, 1, 1]), "invalid size"),
            ("overflow-span", view(offset: 0, shape: [3, 2], stride: [Int.max, 1]), "overflows"),
            ("reach-far", view(offset: 0, shape: [2, 2], stride: [Int.max / 2, 1]), "reaches element"),
            ("past-storage", view(offset: 11, shape: [2], stride: [1]), "reaches element 12"),
            ("size1-huge-stride", view(offset: 1, shape: [1, 2], stride: [Int.max, 2]), "-"),  // trapped before: src += Int.max
            ("huge-numel", view(offset: 0, shape: [2], stride: [1], numel: Int.max / 2), "elements need"),
            ("negative-dim", view(offset: 0, shape: [-1], stride: [1]), "do not match"),
        ]
        for (name, pickle, fragment) in cases {
            let url = dir.appendingPathComponent("\(name).pt")
            try write(buildZip([("\(name)/data.pkl", pickle), ("\(name)/data/3", floats)]), to: url)
            do {
                let archive = try TorchArchive(path: url.path)
                let tensors = try archive.loadAll()
                XCTAssertEqual(name, "size1-huge-stride", "\(name) loaded")
                XCTAssertEqual(tensors[""], Tensor(shape: [1, 2], data: [1, 3]))
            } catch let e as FileError {
                XCTAssertTrue(e.message.contains(url.path) && e.message.contains(fragment), "\(name): \(e.message)")
            }
        }
    }

    func testHostileSafetensorsHeaders() throws {
        let dir = try makeTempDir(self)
        func file(_ header: String, data: Int = 16) -> [UInt8] {
            var h = Array(header.utf8)
            while h.count % 8 != 0 { h.append(0x20) }
            return u64(UInt64(h.count)) + h + [UInt8](repeating: 0, count: data)
        }
        let cases: [(String, [UInt8], String)] = [
            ("overflow", file(#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#), "tensor 'a'"),
            ("huge-offsets", file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[9007199254740000,9007199254740008]}}"#), "tensor 'a'"),
            ("float-shape", file(#"{"a":{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}}"#), "valid shape"),
            ("deep-json", file(#"{"a":"# + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"), "nested"),
            ("huge-header", u64(200_000_000) + Array("{}".utf8) + [UInt8](repeating: 0x20, count: 6), "header length 200000000"),
        ]
        for (name, bytes, fragment) in cases {
            let path = dir.appendingPathComponent("\(name).safetensors").path
            try write(bytes, to: URL(fileURLWithPath: path))
            assertThrows(try SafetensorsFile(path: path).loadAll(), contains: [path, fragment])
        }
    }

    // MARK: Byte-identical output

    func testSafetensorsBytesDoNotDependOnInsertionOrder() throws {
        let dir = try makeTempDir(self)
        let tensors = ["b": Tensor(shape: [2], data: [1, 2]), "a": Tensor(shape: [1], data: [3])]
        var m1: [String: String] = [:], m2: [String: String] = [:]
        let pairs = (0..<50).map { ("key\($0)", "value \($0)") }
        for (k, v) in pairs { m1[k] = v }
        for (k, v) in pairs.reversed() { m2[k] = v }
        var t2: [String: Tensor] = [:]
        for k in tensors.keys.sorted().reversed() { t2[k] = tensors[k] }
        let u1 = dir.appendingPathComponent("1.safetensors"), u2 = dir.appendingPathComponent("2.safetensors")
        try Safetensors.write(tensors: tensors, metadata: m1, to: u1)
        try Safetensors.write(tensors: t2, metadata: m2, to: u2)
        XCTAssertEqual(try Data(contentsOf: u1), try Data(contentsOf: u2))
        // The header's keys are sorted, `__metadata__`'s too.
        let written = [UInt8](try Data(contentsOf: u1))
        let headerLength = Int(written[0]) | Int(written[1]) << 8
        let header = String(decoding: written[8 ..< 8 + headerLength], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix(#"{"__metadata__":{"key0":"value 0","key1":"value 1","key10":"value 10""#), header)
        // torch.save archives too.
        let p1 = dir.appendingPathComponent("1.pt"), p2 = dir.appendingPathComponent("2.pt")
        try TorchArchive.writeStateDict(tensors, to: p1)
        try TorchArchive.writeStateDict(t2, to: p2)
        XCTAssertEqual(try Data(contentsOf: p1), try Data(contentsOf: p2))
    }

    // MARK: Stale temporaries

    func testStaleTemporariesAreRemovedOnTheNextWrite() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("x.safetensors")
        // A pid that cannot be running (above pid_max), one of this process, one not ours to parse.
        let stale = ".x.safetensors.tmp-2147483646-12345"
        let live = ".x.safetensors.tmp-\(getpid())-777"
        let other = ".x.safetensors.tmp-notapid"
        let otherTarget = ".y.safetensors.tmp-2147483646-1"
        for name in [stale, live, other, otherTarget] {
            XCTAssertTrue(FileManager.default.createFile(atPath: dir.appendingPathComponent(name).path, contents: Data([1])))
        }
        try Safetensors.write(tensors: ["a": Tensor(shape: [1], data: [1])], to: url)
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
        XCTAssertEqual(left, ["x.safetensors", live, other, otherTarget])
    }

    // MARK: Fixtures

    /// Every input under Goldens/fuzz/tensorio/ (crashes found by fuzzing, and the K1 files) through
    /// every reader: each gives a typed error or a plausible value.
    func testFuzzRegressionFixtures() throws {
        let folder = repoRoot.appendingPathComponent("Goldens/fuzz/tensorio")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { !$0.hasPrefix(".") && $0 != "README.md" }.sorted()
        XCTAssertGreaterThan(names.count, 0)
        for name in names {
            let bytes = [UInt8](try Data(contentsOf: folder.appendingPathComponent(name)))
            for reader in FuzzReader.allCases {
                _ = reader.exercise(bytes, path: name)  // traps would end the test process
            }
        }
    }
}

/// The cost of CRC-checking every storage, on a ViT-B/16-sized checkpoint (600 MB of fp32) made
/// here: `PROMPTTUNE_CRC_BENCH=1` runs it (about a minute; needs 2 GB of memory and 600 MB in the
/// temporary folder). Figures in docs/HARDENING.md.
final class CRCCostBenchmark: XCTestCase {
    func testCRCCostOnAViTB16SizedCheckpoint() throws {
        guard ProcessInfo.processInfo.environment["PROMPTTUNE_CRC_BENCH"] == "1" else {
            throw XCTSkip("set PROMPTTUNE_CRC_BENCH=1 to measure")
        }
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("vit-b-16-sized.pt")
        var rng = Mutator(seed: 16)
        let block = Tensor(shape: [1024, 4096], data: (0..<(1024 * 4096)).map { _ in Float(Int(rng.next() >> 40)) / Float(1 << 24) - 0.5 })
        var tensors: [String: Tensor] = [:]
        for i in 0..<36 { tensors["layer\(i).weight"] = block }  // 36 x 16 MB = 604 MB, ~ViT-B/16's 150M parameters
        try TorchArchive.writeStateDict(tensors, to: url)
        tensors = [:]
        let bytes = try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int ?? 0
        // Thread CPU time: on a shared machine wall time mostly measures the other processes.
        func cpu() -> Double {
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
        }
        func time(_ body: () throws -> Void) rethrows -> Double {
            let start = cpu(); try body(); return cpu() - start
        }
        var with: [Double] = [], without: [Double] = [], crcOnly: [Double] = []
        for _ in 0..<3 {
            without.append(try time { _ = try TorchArchive(path: url.path, verifyCRC: false).loadAll() })
            with.append(try time { _ = try TorchArchive(path: url.path).loadAll() })
            let file = try MappedFile(path: url.path)
            crcOnly.append(time { _ = file.withBytes(offset: 0, length: file.count) { CRC32.checksum($0) } })
        }
        func f(_ xs: [Double]) -> String { xs.map { String(format: "%.3f", $0) }.joined(separator: ", ") }
        print("CRC cost (thread CPU s) on \(bytes / 1_000_000) MB fp32: read+convert without CRC [\(f(without))] s; with CRC [\(f(with))] s; "
              + "zlib crc32 of the whole file [\(f(crcOnly))] s (\(String(format: "%.2f", Double(bytes) / 1e9 / (crcOnly.min() ?? 1))) GB/s)")
    }
}
