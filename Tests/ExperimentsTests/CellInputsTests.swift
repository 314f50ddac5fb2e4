import Datasets
import Experiments
import Foundation
import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// A cell is keyed on everything that changes its numbers (issue 16, item 1): the model, the
/// precision and the data; two models run into one folder side by side; changed data runs a cell
/// again and keeps the record it replaces; DAPT's prototype pickle is used only where it belongs.
final class CellInputsTests: XCTestCase {
    static let tiny = RunnerTests.tiny
    static let demo = repoRoot.appendingPathComponent("models/fashion-clip/model.pt").path

    func recordFiles(_ out: URL) -> [URL] {
        let walker = FileManager.default.enumerator(at: ResultsFolder(out).runs, includingPropertiesForKeys: nil)
        return (walker?.allObjects as? [URL] ?? []).filter { $0.lastPathComponent == "record.json" }
    }

    /// Today's bug: the same grid with `--model B` into a folder of `--model A` skipped every cell.
    /// Both now run, into folders of their own; both records stay; features are never shared.
    func testTwoModelsIntoOneFolderBothRunAndBothRecordsAreKept() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        let cells = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["zeroshot", "coop"], shots: [1], seeds: [1],
                                 all: RecipeOverride(epochs: 1, batchSize: 2, views: 1)).cells()
        func run(_ model: String) throws -> (ExperimentRunner, [RunRecord], started: [Int], skipped: [Int]) {
            var started: [Int] = [], skipped: [Int] = []
            let runner = try ExperimentRunner(modelPath: model, root: data, out: out) {
                if case .cellStarted(let i, _, _, _) = $0 { started.append(i) }
                if case .cellSkipped(let i, _, _, _) = $0 { skipped.append(i) }
            }
            return (runner, try runner.run(cells), started, skipped)
        }
        let a = try run(Self.tiny)
        let b = try run(Self.demo)
        XCTAssertEqual(a.started, [0, 1])
        XCTAssertEqual(b.started, [0, 1], "another model runs every cell again")
        XCTAssertEqual(b.skipped, [])
        for r in a.1 + b.1 { XCTAssertEqual(r.status, .ok, r.error ?? "") }
        XCTAssertEqual(a.1.map(\.model), ["openai.pt", "openai.pt"])
        XCTAssertEqual(b.1.map(\.model), ["model.pt", "model.pt"])
        XCTAssertEqual(a.1[0].digests["model"], try modelDigest(Self.tiny))
        XCTAssertEqual(b.1[0].digests["model"], try modelDigest(Self.demo))
        // Side by side: one folder per model, both records on disk, each its own model's.
        XCTAssertNotEqual(a.0.modelFolder, b.0.modelFolder)
        XCTAssertTrue(a.0.modelFolder.hasPrefix("openai-"), a.0.modelFolder)
        let files = recordFiles(out)
        XCTAssertEqual(files.count, 4, "\(files.map(\.path))")
        for spec in cells {
            let ra = try readJSON(RunRecord.self, from: a.0.folder(for: spec).record)
            let rb = try readJSON(RunRecord.self, from: b.0.folder(for: spec).record)
            XCTAssertEqual(ra.digests["model"], try modelDigest(Self.tiny))
            XCTAssertEqual(rb.digests["model"], try modelDigest(Self.demo))
        }
        // Features are the model's own: no file of one model's folder is read for the other.
        XCTAssertNotEqual(a.1[1].digests["train_features"], b.1[1].digests["train_features"])
        XCTAssertNotEqual(a.0.store.directory, b.0.store.directory)
        // Running A again finds its records (nothing was overwritten by B).
        XCTAssertEqual(try run(Self.tiny).skipped, [0, 1])
    }

    /// A changed split file (one test image fewer) runs the cell again on the new data; the record
    /// it replaces is kept beside it, and `--cell`/`--list` numbering is unchanged.
    func testChangedSplitFileRunsTheCellAgain() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticDTD(in: data)
        let cells = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["zeroshot"], shots: [1], seeds: [1]).cells()
        let first = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out).run(cells)
        XCTAssertEqual(first[0].evaluations.first?.count, 12)
        let dataDigest = try XCTUnwrap(first[0].digests["data"])

        // The same data: skipped.
        var started: [Int] = []
        _ = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out) {
            if case .cellStarted(let i, _, _, _) = $0 { started.append(i) }
        }.run(cells)
        XCTAssertEqual(started, [])

        // The split file loses one test image.
        let splitURL = data.appendingPathComponent("dtd/split_zhou_DescribableTextures.json")
        var split = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: splitURL)) as? [String: [[Any]]])
        split["test"]!.removeLast()
        try JSONSerialization.data(withJSONObject: split).write(to: splitURL)
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out) {
            if case .cellStarted(let i, _, _, _) = $0 { started.append(i) }
        }
        let second = try runner.run(cells)
        XCTAssertEqual(started, [0], "the cell's data changed: it ran again")
        XCTAssertEqual(second[0].status, .ok, second[0].error ?? "")
        XCTAssertEqual(second[0].evaluations.first?.count, 11, "evaluated on the new split (the test features were made anew)")
        XCTAssertNotEqual(second[0].digests["data"], dataDigest)
        // The replaced record is kept beside the new one (and is not a record.json the report reads).
        let folder = runner.folder(for: cells[0])
        let kept = try FileManager.default.contentsOfDirectory(atPath: folder.url.path).filter { $0.hasPrefix("record.superseded-") }
        XCTAssertEqual(kept.count, 1, "\(kept)")
        let old = try readJSON(RunRecord.self, from: folder.url.appendingPathComponent(kept[0]))
        XCTAssertEqual(old.digests["data"], dataDigest)
        XCTAssertEqual(old.evaluations.first?.count, 12)
        XCTAssertEqual(recordFiles(out).count, 1)
    }

    // MARK: DAPT's prototype pickle

    /// Writes `t` (K x D) as the storage of a pickled tensor, as DAPT's `_prototype.pkl` holds it
    /// (the part `DAPTPrototypeFile.read` reads: the `_load_from_bytes` storage, float32 here).
    func writePrototypePickle(_ t: Tensor, to url: URL) throws {
        func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
        var storage = Array("ctorch\nFloatStorage\n".utf8) + le(UInt64(t.data.count), 8)
        for x in t.data { storage += le(UInt64(x.bitPattern), 4) }
        let bytes = Array("\u{80}\u{02}ctorch._utils\n_rebuild_tensor_v2\nctorch.storage\n_load_from_bytes\n".utf8) + [0x42]
            + le(UInt64(storage.count), 4) + storage + Array(".".utf8)
        try Data(bytes).write(to: url)
    }

    /// The pickle beside CoOp's cached draw is used only when the cell's draw is that draw (balanced)
    /// and it matches the prototypes of the cell's model; which prototypes were used is recorded.
    func testDAPTPrototypePickleIsUsedOnlyWhereItBelongs() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        try makeSyntheticImageNet(in: data)
        func cells(_ tau: Double, epochs: Int) throws -> [RunSpec] {
            try GridPlan(protocolKind: .fewShot, datasets: ["imagenet"], methods: ["dapt"], shots: [2], seeds: [1], imbalance: [tau],
                         all: RecipeOverride(epochs: epochs, lr: 0.01, batchSize: 2)).cells()
        }
        let runner = try ExperimentRunner(modelPath: Self.tiny, root: data, out: out)
        // No pickle: computed from the draw (CoOp's cached one) with this model.
        let computed = try runner.run(try cells(1, epochs: 1))[0]
        XCTAssertEqual(computed.status, .ok, computed.error ?? "")
        XCTAssertEqual(computed.fewShotSource?.hasSuffix("split_fewshot/shot_2-seed_1.pkl"), true, computed.fewShotSource ?? "")
        XCTAssertEqual(computed.prototypesSource, "computed")
        let ours = try XCTUnwrap(try FileManager.default.contentsOfDirectory(at: runner.store.directory, includingPropertiesForKeys: nil)
            .first { $0.lastPathComponent.hasPrefix("prototypes-") })
        XCTAssertEqual(computed.digests["prototypes"], try contentDigest(path: ours.path))
        let prototypes = try XCTUnwrap(try Safetensors.read(path: ours.path).tensors["prototypes"])

        // DAPT's pickle of this model's prototypes of the draw: used (and the cell, whose inputs changed, runs again).
        let pkl = data.appendingPathComponent("imagenet/split_fewshot/shot_2-seed_1_prototype.pkl")
        try writePrototypePickle(prototypes, to: pkl)
        let used = try runner.run(try cells(1, epochs: 1))[0]
        XCTAssertEqual(used.status, .ok, used.error ?? "")
        XCTAssertEqual(used.prototypesSource, pkl.path)
        XCTAssertEqual(used.digests["prototypes"], try contentDigest(path: pkl.path))
        XCTAssertFalse(used.warnings.contains { $0.contains("_prototype.pkl") }, "\(used.warnings)")

        // An imbalanced cell: the pickle was made from the balanced draw, so it is not used.
        let imbalanced = try runner.run(try cells(0.5, epochs: 1))[0]
        XCTAssertEqual(imbalanced.status, .ok, imbalanced.error ?? "")
        XCTAssertEqual(imbalanced.prototypesSource, "computed")
        XCTAssertTrue(imbalanced.warnings.contains { $0.contains("_prototype.pkl") && $0.contains("imbalanced") }, "\(imbalanced.warnings)")

        // Another backbone of the same width: the right shape, unrelated values; refused.
        var rng = SplitMix(seed: 7)
        let other = Tensor(shape: prototypes.shape, data: prototypes.data.map { _ in Float(rng.next() % 2001) / 1000 - 1 })
        try writePrototypePickle(other, to: pkl)
        let refused = try runner.run(try cells(1, epochs: 1))[0]
        XCTAssertEqual(refused.status, .ok, refused.error ?? "")
        XCTAssertEqual(refused.prototypesSource, "computed")
        XCTAssertTrue(refused.warnings.contains { $0.contains("another backbone") }, "\(refused.warnings)")
        XCTAssertEqual(refused.digests["prototypes"], computed.digests["prototypes"])
    }
}

/// A tiny deterministic generator for test values.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A small coloured PNG (12 x 12, seeded noise around `colour`).
func writeColourPNG(_ url: URL, colour: [Double], seed: UInt64) throws {
    var rng = SplitMix(seed: seed)
    var pixels: [UInt8] = []
    for _ in 0..<(12 * 12) {
        for c in 0..<3 { pixels.append(UInt8(max(0, min(255, colour[c] + Double(rng.next() % 61) - 30)))) }
    }
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try Data(FileFixtures.makePNG(width: 12, height: 12, pixels: pixels)).write(to: url)
}

/// ImageNet in CoOp's layout with 5 classes and CoOp's cached draw `split_fewshot/shot_2-seed_1.pkl`
/// (`Goldens/sampling/coop_cache/imagenet`), each class a colour; with `variants`, ImageNet-V2 (all
/// 5 classes), -Sketch (all 5) and -A / -R (the classes of `subset`, as their 200 of ImageNet's
/// 1000), whose images are copies of ImageNet's val images of the class. Returns the wnids.
@discardableResult
func makeSyntheticImageNet(in root: URL, variants: [DatasetName] = [], subset: [Int] = [1, 3, 4]) throws -> [String] {
    let golden = repoRoot.appendingPathComponent("Goldens/sampling/coop_cache/imagenet")
    let layout = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: golden.appendingPathComponent("layout.json"))) as? [String: Any])
    let table = try XCTUnwrap(layout["classnames"] as? [[String]])
    let train = try XCTUnwrap(layout["train"] as? [String: [String]]), val = try XCTUnwrap(layout["val"] as? [String: [String]])
    let colours: [[Double]] = [[220, 40, 40], [40, 200, 60], [50, 60, 210], [200, 200, 40], [200, 40, 200]]
    let classnames = table.map { "\($0[0]) \($0[1])" }.joined(separator: "\n") + "\n"
    let imagenet = root.appendingPathComponent("imagenet")
    try FileManager.default.createDirectory(at: imagenet.appendingPathComponent("split_fewshot"), withIntermediateDirectories: true)
    try Data(classnames.utf8).write(to: imagenet.appendingPathComponent("classnames.txt"))
    try Data(contentsOf: golden.appendingPathComponent("shot_2-seed_1.pkl"))
        .write(to: imagenet.appendingPathComponent("split_fewshot/shot_2-seed_1.pkl"))
    var seed: UInt64 = 1
    for (k, row) in table.enumerated() {
        let wnid = row[0]
        for f in train[wnid] ?? [] {
            seed += 1
            try writeColourPNG(imagenet.appendingPathComponent("images/train/\(wnid)/\(f)"), colour: colours[k], seed: seed)
        }
        for f in val[wnid] ?? [] {
            seed += 1
            try writeColourPNG(imagenet.appendingPathComponent("images/val/\(wnid)/\(f)"), colour: colours[k], seed: seed)
        }
    }
    for v in variants {
        let dir = root.appendingPathComponent(v.folder!)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(classnames.utf8).write(to: dir.appendingPathComponent("classnames.txt"))
        let classes = (v == .imageNetA || v == .imageNetR) ? subset : Array(table.indices)
        for k in classes {
            let wnid = table[k][0]
            let folder = v == .imageNetV2 ? String(k) : wnid
            for f in val[wnid] ?? [] {
                let to = dir.appendingPathComponent(v.imageSubfolder).appendingPathComponent(folder).appendingPathComponent(f)
                try FileManager.default.createDirectory(at: to.deletingLastPathComponent(), withIntermediateDirectories: true)
                try FileManager.default.copyItem(at: imagenet.appendingPathComponent("images/val/\(wnid)/\(f)"), to: to)
            }
        }
    }
    return table.map { $0[0] }
}
