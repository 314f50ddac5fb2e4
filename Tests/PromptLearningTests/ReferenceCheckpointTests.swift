import CLIP
import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest
@testable import PromptLearning

/// The prompt checkpoints CoOp, KgCoOp and DAPT write (Dassl's save_checkpoint), made with torch by
/// reference/interop_checkpoints.py into Goldens/interop: read, validated against the model, and
/// evaluated to the reference's own text features.
final class ReferenceCheckpointTests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path
    static let demo = repoRoot.appendingPathComponent("models/fashion-clip/model.pt").path
    static func file(_ c: String) -> String { repoRoot.appendingPathComponent("Goldens/interop/\(c)/prompt_learner/model.pth.tar-2").path }

    struct Expected: Decodable {
        struct Case: Decodable { var keys: [String: [Value]]; var text_features: [[Double]]; var accuracy: Double }
        enum Value: Decodable {
            case shape([Int]), dtype(String)
            init(from d: Decoder) throws {
                let c = try d.singleValueContainer()
                if let s = try? c.decode([Int].self) { self = .shape(s) } else { self = .dtype(try c.decode(String.self)) }
            }
            var shape: [Int]? { if case .shape(let s) = self { return s }; return nil }
        }
        var classnames: [String]
        var cases: [String: Case]
    }

    static let expected: Expected = try! JSONDecoder().decode(Expected.self, from: Data(contentsOf: repoRoot.appendingPathComponent("Goldens/interop/expected.json")))

    func normalised(_ t: Tensor) -> [[Double]] {
        let n = L2Normalize.forward(t).0
        return (0..<n.rows).map { r in (0..<n.lastDim).map { Double(n[r * n.lastDim + $0]) } }
    }

    func testReadsEveryLayoutWithTheReferenceShapes() throws {
        let layouts: [String: ReferencePrompt.Layout] = ["coop": .coop, "coop_csc": .coop, "kgcoop": .kgcoop, "dapt": .dapt]
        for (c, layout) in layouts {
            let r = try ReferencePrompt.read(path: Self.file(c))
            let keys = try XCTUnwrap(Self.expected.cases[c]).keys
            XCTAssertEqual(r.layout, layout, c)
            XCTAssertEqual(r.epoch, 2, c)
            let contextKey = layout == .dapt ? "txt_ctx" : "ctx"
            XCTAssertEqual(r.context?.shape, keys[contextKey]?[0].shape, c)
            XCTAssertEqual(r.tokenPrefix?.shape, keys["token_prefix"]?[0].shape, c)
            XCTAssertEqual(r.tokenSuffix?.shape, keys["token_suffix"]?[0].shape, c)
            XCTAssertEqual(r.visualPrompt.map { [1] + $0.shape }, keys["vis_ctx"]?[0].shape, c)
            XCTAssertEqual(r.unused, layout == .kgcoop ? ["bias_vectors", "meta_net.linear1.bias", "meta_net.linear1.weight"] : [], c)
            XCTAssertEqual(r.classSpecific, c == "coop_csc", c)
            XCTAssertEqual(r.method.prompt.contextLength, 4, c)
            XCTAssertEqual(r.method.prompt.classSpecific, c == "coop_csc", c)
            XCTAssertEqual(r.method.visualPrompt?.tokens, layout == .dapt ? 4 : nil, c)
        }
    }

    /// Our text features of each reference prompt equal the reference's TextEncoder on the file's
    /// own prefix, context and suffix (fp16 files widened to fp32 on both sides).
    func testTextFeaturesEqualTheReferences() throws {
        let model = try CLIPModel.load(path: Self.tiny)
        let tokenizer = try CLIPTokenizer()
        let names = Self.expected.classnames
        for c in ["coop", "coop_csc", "kgcoop", "dapt"] {
            let p = try TrainedPrompt.read(path: Self.file(c))
            let text = try p.textFeatures(model: model, modelPath: Self.tiny, modelDigest: "d", classNames: names, tokenizer: tokenizer,
                                          textOnly: c == "dapt")
            let ours = normalised(text), theirs = try XCTUnwrap(Self.expected.cases[c]).text_features
            XCTAssertEqual(ours.count, theirs.count)
            let worst = zip(ours.joined(), theirs.joined()).map { abs($0 - $1) }.max() ?? 1
            XCTAssertLessThan(worst, 2e-5, "\(c): max |ours - torch's| = \(worst)")
        }
    }

    func testValidationNamesTheFileAndTensor() throws {
        let tiny = try CLIPModel.load(path: Self.tiny)
        let names = Self.expected.classnames
        let csc = try ReferencePrompt.read(path: Self.file("coop_csc"))
        XCTAssertThrowsError(try csc.validate(model: tiny, classNames: Array(names.prefix(4)), path: "f.pth")) {
            XCTAssertTrue("\($0)".contains("f.pth: tensor 'ctx' [5, 4, 64] holds class-specific contexts for 5 classes but 4 class names"), "\($0)")
        }
        // Another CLIP of the same text width (the demonstration model): its SOS embedding differs.
        let demo = try CLIPModel.load(path: Self.demo)
        let coop = try ReferencePrompt.read(path: Self.file("coop"))
        XCTAssertThrowsError(try coop.validate(model: demo, classNames: names, path: "f.pth")) {
            XCTAssertTrue("\($0)".contains("f.pth: tensor 'token_prefix' (the SOS token's embedding) differs from this model's"), "\($0)")
            XCTAssertTrue("\($0)".contains("--model"), "\($0)")
        }
        // A context of another width.
        var narrow = coop
        narrow.context = Tensor(zeros: [4, 32])
        XCTAssertThrowsError(try narrow.validate(model: tiny, classNames: names, path: "f.pth")) {
            XCTAssertTrue("\($0)".contains("f.pth: tensor 'ctx' [4, 32] has width 32 but the model's text width is 64"), "\($0)")
        }
        let dapt = try ReferencePrompt.read(path: Self.file("dapt"))
        var wide = dapt
        wide.visualPrompt = Tensor(zeros: [4, 96])
        XCTAssertThrowsError(try wide.validate(model: tiny, classNames: names, path: "f.pth")) {
            XCTAssertTrue("\($0)".contains("tensor 'vis_ctx' [1, 4, 96] has width 96 but the model's image tower is 128 wide"), "\($0)")
        }
        // The same widths but another model's token embeddings: token_prefix is not this model's SOS.
        var other = coop
        other.tokenPrefix = other.tokenPrefix.map { Tensor(shape: $0.shape, data: $0.data.map { $0 * 1.01 + 1e-3 }) }
        XCTAssertThrowsError(try other.validate(model: tiny, classNames: names, path: "f.pth")) {
            XCTAssertTrue("\($0)".contains("tensor 'token_prefix' (the SOS token's embedding) differs from this model's"), "\($0)")
        }
        // A suffix that does not fit M.
        var cut = coop
        cut.context = Tensor(zeros: [5, 64])
        XCTAssertThrowsError(try cut.validate(model: tiny, classNames: names, path: "f.pth")) {
            XCTAssertTrue("\($0)".contains("tensor 'token_suffix' [5, 72, 64] does not fit a 77-token prompt with 5 context vectors"), "\($0)")
        }
        XCTAssertNoThrow(try coop.validate(model: tiny, classNames: names, path: "f.pth"))
    }

    func testRefusesNonFiniteUnknownAndCoCoOpFiles() throws {
        let dir = try makeTempDir(self)
        func write(_ tensors: [(String, Tensor)], epoch: Int = 3) throws -> String {
            let url = dir.appendingPathComponent("model.pth.tar-\(UUID().uuidString.prefix(6))")
            var w = TorchSaveWriter()
            let sd = PickleDict(ordered: true)
            for (k, t) in tensors { sd.set(.string(k), try w.add(t)) }
            let root = PickleDict()
            root.set(.string("state_dict"), .dict(sd))
            root.set(.string("epoch"), .int(epoch))
            try w.write(root: .dict(root), to: url)
            return url.path
        }
        var nan = Tensor(zeros: [4, 64]); nan[70] = .nan
        let bad = try write([("ctx", nan)])
        XCTAssertThrowsError(try ReferencePrompt.read(path: bad)) {
            XCTAssertTrue("\($0)".contains("\(bad): tensor 'ctx' [4, 64] holds a non-finite value (nan at element 70)"), "\($0)")
        }
        let cocoop = try write([("ctx", Tensor(zeros: [4, 64])), ("meta_net.linear1.weight", Tensor(zeros: [2, 64])),
                                ("meta_net.linear2.weight", Tensor(zeros: [64, 2]))])
        XCTAssertThrowsError(try ReferencePrompt.read(path: cocoop)) { XCTAssertTrue("\($0)".contains("CoCoOp's meta-net"), "\($0)") }
        let unknown = try write([("ctx", Tensor(zeros: [4, 64])), ("adapter.weight", Tensor(zeros: [2, 2]))])
        XCTAssertThrowsError(try ReferencePrompt.read(path: unknown)) { XCTAssertTrue("\($0)".contains("(adapter.weight)"), "\($0)") }
        let none = try write([("visual.proj", Tensor(zeros: [2, 2]))])
        XCTAssertThrowsError(try ReferencePrompt.read(path: none)) { XCTAssertTrue("\($0)".contains("no prompt context (ctx"), "\($0)") }
        // Dassl strips "module." when it saves; a file saved without that step reads the same.
        let module = try write([("module.ctx", Tensor(zeros: [4, 64]))])
        XCTAssertEqual(try ReferencePrompt.read(path: module).context?.shape, [4, 64])
    }

    /// write then read gives back every tensor bit for bit; the state dict is an OrderedDict and the
    /// pickle names only globals torch.load(weights_only=True) allows.
    func testWriteReadRoundTrip() throws {
        let dir = try makeTempDir(self)
        var rng = SeededGenerator(seed: 3)
        for visual in [false, true] {
            let r = ReferencePrompt(layout: visual ? .dapt : .coop, epoch: 7, context: .randomNormal([3, 4, 64], std: 0.02, using: &rng),
                                    visualPrompt: visual ? .randomNormal([4, 128], std: 0.1, using: &rng) : nil,
                                    tokenPrefix: .randomNormal([3, 1, 64], std: 1, using: &rng), tokenSuffix: .randomNormal([3, 72, 64], std: 1, using: &rng))
            var fixed = r
            if visual { fixed.context = .randomNormal([4, 64], std: 0.02, using: &rng) }   // DAPT has no CSC
            let url = dir.appendingPathComponent("prompt_learner/model.pth.tar-7")
            try fixed.write(to: url)
            XCTAssertEqual(try ReferencePrompt.read(path: url.path), fixed)
            let archive = try TorchArchive(path: url.path)
            XCTAssertEqual(archive.root["state_dict"]?.dict?.isOrderedDict, true)
            XCTAssertEqual(Set(archive.root.dict?.stringKeyedEntries.map(\.key) ?? []), ["state_dict", "epoch", "optimizer", "scheduler", "val_result"])
            let pickle = try archive.zip.contents(of: archive.prefix + "data.pkl", verifyCRC: true)
            XCTAssertEqual(Array(pickle.prefix(2)), [0x80, 0x02])
            XCTAssertEqual(globals(in: pickle), ["collections.OrderedDict", "torch.FloatStorage", "torch._utils._rebuild_tensor_v2"])
        }
    }

    /// The GLOBALs of a protocol-2 pickle written by `Pickler`, found by walking its opcodes.
    func globals(in p: [UInt8]) -> Set<String> {
        var out = Set<String>(), i = 0
        func line() -> String {
            let nl = p[i...].firstIndex(of: 0x0a)!
            defer { i = nl + 1 }
            return String(decoding: p[i..<nl], as: UTF8.self)
        }
        while i < p.count {
            let op = p[i]; i += 1
            switch op {
            case 0x63: let m = line(); out.insert("\(m).\(line())")
            case 0x58: let n = p[i..<(i + 4)].reversed().reduce(0) { $0 << 8 | Int($1) }; i += 4 + n
            case 0x80, 0x4b: i += 1
            case 0x4d: i += 2
            case 0x4a: i += 4
            case 0x47: i += 8
            case 0x8a: i += 1 + Int(p[i])
            case 0x2e: return out
            default: continue   // ( ) t R u } N ] e TUPLE1-3 True False NEWOBJ BUILD BINPERSID
            }
        }
        return out
    }
}
