import Foundation
import TensorCore
import TestSupport
import XCTest
@testable import TensorIO

/// TensorIO's readers, as the mutation tests drive them: every outcome is a typed error or a
/// plausible value; anything else (a trap) ends the test process.
enum FuzzReader: String, CaseIterable {
    /// A whole torch.save / TorchScript zip archive: central directory, local headers, ZIP64,
    /// CRCs, data.pkl, every tensor converted.
    case zip
    /// data.pkl alone, then wrapped into a valid archive (fresh CRCs) with the seed's storages, so
    /// that mutated tensor views reach the conversion.
    case pickle
    /// A safetensors file: header length, JSON, offsets, dtypes, every tensor converted.
    case safetensors

    enum Outcome { case typedError, value }

    /// Reads `bytes` as this reader's format. Returns `.value` for a plausible result and
    /// `.typedError` for a `FileError` that names `path`; records anything else as a failure.
    func exercise(_ bytes: [UInt8], path: String, storages: [(name: String, data: [UInt8])] = []) -> Outcome {
        do {
            switch self {
            case .zip:
                try FuzzReader.readArchive(MappedFile(bytes: bytes, path: path))
            case .pickle:
                let value = try Unpickler(source: path).load(bytes)
                _ = try value.checkedTensorReferences(source: path, budget: PickleValue.tensorWalkBudget(forPickleOf: bytes.count))
                let archive = buildZip([("fuzz/data.pkl", bytes)] + storages.map { ("fuzz/data/\($0.name)", $0.data) })
                try FuzzReader.readArchive(MappedFile(bytes: archive, path: path))
            case .safetensors:
                let file = try SafetensorsFile(file: MappedFile(bytes: bytes, path: path))
                for entry in file.entries where entry.dtype != nil {
                    let t = try file.tensor(entry)
                    XCTAssertEqual(t.shape, entry.shape, "\(path): tensor '\(entry.name)'")
                    XCTAssertEqual(t.count * (entry.dtype?.byteSize ?? 0), entry.byteRange.count, "\(path): tensor '\(entry.name)'")
                }
            }
            return .value
        } catch let e as FileError {
            XCTAssertTrue(e.message.hasPrefix(path), "error does not name the file: \(e.message)")
            return .typedError
        } catch {
            XCTFail("\(path): untyped error \(error)")
            return .typedError
        }
    }

    static func readArchive(_ file: MappedFile) throws {
        let archive = try TorchArchive(zip: ZipArchive(file: file))
        for entry in archive.zip.entries { _ = try archive.zip.slice(of: entry) }
        for (name, ref) in archive.tensorReferences() where ref.storage.dtype != nil {
            let t = try archive.tensor(ref, name: name)
            XCTAssertEqual(t.shape, ref.shape, "\(file.path): tensor '\(name)'")
        }
    }
}

/// Seeded mutation tests of TensorIO's readers: 2,000 inputs per reader by default (a few seconds
/// in a debug build); `PROMPTTUNE_FUZZ_ITERATIONS=200000` runs the longer campaign of
/// docs/HARDENING.md. `PROMPTTUNE_FUZZ_CURRENT=<folder>` writes each input there before reading it,
/// so that after a crash `<folder>/current-<reader>.bin` is the input that crashed.
final class FuzzTests: XCTestCase {
    static let iterations = ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 2_000
    static let currentFolder = ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_CURRENT"]

    struct Figures: CustomStringConvertible {
        var reader: FuzzReader
        var inputs = 0, typedErrors = 0, values = 0, slow = 0
        var slowest = 0.0
        var description: String {
            "fuzz \(reader.rawValue): \(inputs) inputs, \(typedErrors) typed errors, \(values) values, "
                + "\(slow) slower than 1 s, slowest \(String(format: "%.1f", slowest * 1000)) ms"
        }
    }

    func run(_ reader: FuzzReader, seeds: [[UInt8]], seed: UInt64,
             storages: [(name: String, data: [UInt8])] = []) -> Figures {
        var mutator = Mutator(seed: seed)
        var figures = Figures(reader: reader)
        // The seeds themselves read cleanly.
        for (i, s) in seeds.enumerated() {
            XCTAssertEqual(reader.exercise(s, path: "seed-\(i)", storages: storages).isValue, true, "seed \(i) of \(reader)")
        }
        for i in 0..<FuzzTests.iterations {
            let input = mutator.mutate(seeds[i % seeds.count])
            if let folder = FuzzTests.currentFolder {
                try? Data(input).write(to: URL(fileURLWithPath: folder).appendingPathComponent("current-\(reader.rawValue).bin"))
            }
            let start = Date()
            switch reader.exercise(input, path: "mutated-\(i)", storages: storages) {
            case .typedError: figures.typedErrors += 1
            case .value: figures.values += 1
            }
            let elapsed = Date().timeIntervalSince(start)
            figures.inputs += 1
            figures.slowest = max(figures.slowest, elapsed)
            if elapsed > 1 { figures.slow += 1 }
        }
        print(figures)
        XCTAssertEqual(figures.slow, 0, "\(figures)")
        return figures
    }

    // MARK: Seeds: small files made here (a few KB), so that 2,000 inputs take seconds

    static func tensors() -> [String: Tensor] {
        [
            "visual.conv1.weight": Tensor(shape: [2, 3, 2, 2], data: (0..<24).map { Float($0) * 0.5 - 3 }),
            "ln.bias": Tensor(shape: [3], data: [1, -1, 0.25]),
            "logit_scale": Tensor(shape: [], data: [4.6]),
            "empty": Tensor(shape: [0, 4], data: []),
        ]
    }

    /// A torch.save state dict (f16), a nested checkpoint with a strided view sharing a storage, and
    /// a TorchScript-like module tree; plus the tiny torch-written tensor_views.pt.
    static func archiveSeeds(in dir: URL) throws -> [[UInt8]] {
        var seeds: [[UInt8]] = []
        let sd = dir.appendingPathComponent("sd.pt")
        try TorchArchive.writeStateDict(tensors(), to: sd, dtype: .float16)
        seeds.append([UInt8](try Data(contentsOf: sd)))

        var writer = TorchSaveWriter()
        let base = try writer.add(Tensor(shape: [3, 4], data: (0..<12).map(Float.init)))
        guard case .tensor(var view) = base else { return seeds }
        view.storageOffset = 1; view.shape = [2, 3]; view.stride = [1, 4]
        let state = PickleDict()
        state.set(.string("w"), base)
        state.set(.string("w_t"), .tensor(view))
        state.set(.string("b"), try writer.add(Tensor(shape: [2], data: [1, 2]), dtype: .bfloat16))
        let root = PickleDict()
        root.set(.string("epoch"), .int(3))
        root.set(.string("state_dict"), .dict(state))
        root.set(.string("names"), .list(PickleList([.string("a"), .tuple([.int(1), .float(2.5), .bool(true), .none])])))
        let nested = dir.appendingPathComponent("nested.pt")
        try writer.write(root: .dict(root), to: nested, archiveName: "nested")
        seeds.append([UInt8](try Data(contentsOf: nested)))

        var jit = TorchSaveWriter()
        let attention = PickleDict()
        attention.set(.string("training"), .bool(false))
        attention.set(.string("in_proj_weight"), try jit.add(Tensor(shape: [6, 2], data: (0..<12).map { Float($0) })))
        let block = PickleDict()
        block.set(.string("attn"), .object(PickleObject(module: "__torch__.torch.nn.modules.activation", name: "MultiheadAttention",
                                                          state: .dict(attention))))
        block.set(.string("scale"), try jit.add(Tensor(shape: [1], data: [0.5])))
        let model = PickleObject(module: "__torch__.clip.model", name: "CLIP", state: .dict(block))
        let script = dir.appendingPathComponent("script.pt")
        try jit.write(root: .object(model), to: script, archiveName: "script")
        seeds.append([UInt8](try Data(contentsOf: script)))

        seeds.append([UInt8](try Data(contentsOf: goldenCheckpoints.appendingPathComponent("tensor_views.pt"))))
        return seeds
    }

    func testMutatedArchives() throws {
        let seeds = try Self.archiveSeeds(in: try makeTempDir(self))
        let f = run(.zip, seeds: seeds, seed: 0x5A1)
        XCTAssertGreaterThan(f.values, 0)
        XCTAssertGreaterThan(f.typedErrors, 0)
    }

    func testMutatedPickles() throws {
        // The data.pkl of the nested seed, with its storages re-zipped around every mutation.
        let archive = try TorchArchive(zip: ZipArchive(file: MappedFile(bytes: try Self.archiveSeeds(in: try makeTempDir(self))[1], path: "seed")))
        let pickle = try archive.zip.contents(of: "nested/data.pkl")
        let storages = try archive.zip.entries.filter { $0.name.hasPrefix("nested/data/") }.map {
            (name: String($0.name.dropFirst("nested/data/".count)), data: try archive.zip.contents(of: $0.name))
        }
        // pickleTensorBytes views storage '3' (12 elements).
        let three = (name: "3", data: [UInt8]((0..<48).map { UInt8($0) }))
        let f = run(.pickle, seeds: [pickle, pickleTensorBytes(storage: "FloatStorage")], seed: 0x91C, storages: storages + [three])
        XCTAssertGreaterThan(f.values, 0)
        XCTAssertGreaterThan(f.typedErrors, 0)
    }

    func testMutatedSafetensors() throws {
        let dir = try makeTempDir(self)
        let url = dir.appendingPathComponent("s.safetensors")
        try Safetensors.write(tensors: Self.tensors(), metadata: ["format": "pt", "note": "seed"], to: url)
        let f16 = dir.appendingPathComponent("h.safetensors")
        try Safetensors.write(tensors: Self.tensors(), to: f16, dtype: .float16)
        let seeds = [[UInt8](try Data(contentsOf: url)), [UInt8](try Data(contentsOf: f16)),
                     [UInt8](try Data(contentsOf: goldenCheckpoints.appendingPathComponent("dtypes.safetensors")))]
        let f = run(.safetensors, seeds: seeds, seed: 0x5AFE)
        XCTAssertGreaterThan(f.values, 0)
        XCTAssertGreaterThan(f.typedErrors, 0)
    }
}

extension FuzzReader.Outcome {
    var isValue: Bool { if case .value = self { return true }; return false }
}
