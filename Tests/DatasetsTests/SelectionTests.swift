import Foundation
import XCTest
@testable import Datasets

/// `select`: base/novel on the ImageNet variants and CoOp's cached few-shot draws (issue 12).
final class SelectionTests: XCTestCase {

    // MARK: Base/novel on the ImageNet variants

    /// Five wnids; ImageNet's base half (ceil(5/2) = 3 sorted wnids) is n01, n02, n03.
    let table = [("n03000000", "tench"), ("n01000000", "goldfish"), ("n05000000", "pug dog"),
                 ("n02000000", "great white shark"), ("n04000000", "tiger shark")]
    var classnames: String { table.map { "\($0.0) \($0.1)" }.joined(separator: "\n") + "\n" }

    func makeImageNetAndVariants(_ t: ReadersTempTree) throws {
        for folder in ["imagenet", "imagenetv2", "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition"] {
            try t.write("\(folder)/classnames.txt", text: classnames)
        }
        for (k, (w, _)) in table.enumerated() {
            try t.touch(["imagenet/images/train/\(w)/t.JPEG", "imagenet/images/val/\(w)/v.JPEG",
                         "imagenet-sketch/images/\(w)/s.jpg",
                         "imagenetv2/imagenetv2-matched-frequency-format-val/\(k)/v2.jpeg"])
        }
        // A: n02 (base), n04 and n05 (novel); R: n01, n03 (base), n04 (novel).
        for w in ["n02000000", "n04000000", "n05000000"] { try t.touch(["imagenet-adversarial/imagenet-a/\(w)/a1.jpg", "imagenet-adversarial/imagenet-a/\(w)/a2.jpg"]) }
        for w in ["n01000000", "n03000000", "n04000000"] { try t.touch(["imagenet-rendition/imagenet-r/\(w)/r.jpg"]) }
    }

    func testBaseNovelOnV2AndSketchEqualsImageNetsSplit() throws {
        let t = try ReadersTempTree()
        try makeImageNetAndVariants(t)
        let imagenet = try loadDataset(.imageNet, root: t.root)
        for subset in [ClassSubset.base, .novel] {
            let source = try select(imagenet, dataset: .imageNet, options: SelectionOptions(subset: subset))
            XCTAssertEqual(source.classNames, subset == .base ? ["goldfish", "great white shark", "tench"] : ["tiger shark", "pug dog"])
            for name in [DatasetName.imageNetV2, .imageNetSketch] {
                let v = try loadDataset(name, root: t.root)
                let s = try select(v, dataset: name, options: SelectionOptions(subset: subset))
                let what = "\(name.rawValue) \(subset)"
                // The same classes, names and labels as ImageNet's base (novel) set.
                XCTAssertEqual(s.classNames, source.classNames, what)
                func pairs(_ l: [Datum]) -> [String] { l.map { "\($0.label) \($0.className)" }.sorted() }
                XCTAssertEqual(pairs(s.test), pairs(source.test), what)
                XCTAssertEqual(s.train, [], what)
                XCTAssertEqual(s.imageNetClasses?.labels, subset == .base ? [0, 1, 2] : [3, 4], what)
                for d in s.test { XCTAssertEqual(s.classNames[d.label], d.className, what) }
            }
        }
        // V2 is labelled by classnames.txt line order (tench = 0), the others by sorted wnid.
        let v2 = try select(try loadDataset(.imageNetV2, root: t.root), dataset: .imageNetV2, options: SelectionOptions(subset: .base))
        XCTAssertEqual(v2.test, [Datum(path: "0/v2.jpeg", label: 2, className: "tench"),
                                 Datum(path: "1/v2.jpeg", label: 0, className: "goldfish"),
                                 Datum(path: "3/v2.jpeg", label: 1, className: "great white shark")])
        // Few-shot options change nothing on a test-only set.
        let shots = try select(try loadDataset(.imageNetSketch, root: t.root), dataset: .imageNetSketch,
                               options: SelectionOptions(shots: 1, seed: 3, subset: .novel))
        XCTAssertEqual(shots.test.map(\.path), ["n04000000/s.jpg", "n05000000/s.jpg"])
    }

    func testBaseNovelOnAAndRKeepsTheirClassesInEachHalf() throws {
        let t = try ReadersTempTree()
        try makeImageNetAndVariants(t)
        let a = try loadDataset(.imageNetA, root: t.root)
        XCTAssertEqual(a.imageNetClasses, ImageNetClassMap(count: 5, labels: [1, 3, 4]))
        var s = try select(a, dataset: .imageNetA, options: SelectionOptions(subset: .base))
        XCTAssertEqual(s.classNames, ["great white shark"])
        XCTAssertEqual(s.test, [Datum(path: "n02000000/a1.jpg", label: 0, className: "great white shark"),
                                Datum(path: "n02000000/a2.jpg", label: 0, className: "great white shark")])
        s = try select(a, dataset: .imageNetA, options: SelectionOptions(subset: .novel))
        XCTAssertEqual(s.classNames, ["tiger shark", "pug dog"])
        XCTAssertEqual(s.test.map(\.label), [0, 0, 1, 1])
        XCTAssertEqual(s.test.map(\.path), ["n04000000/a1.jpg", "n04000000/a2.jpg", "n05000000/a1.jpg", "n05000000/a2.jpg"])
        XCTAssertEqual(s.imageNetClasses?.labels, [3, 4])
        // Whole: unchanged.
        s = try select(a, dataset: .imageNetA, options: SelectionOptions())
        XCTAssertEqual(s.test, a.test)
        XCTAssertEqual(s.classNames, ["great white shark", "tiger shark", "pug dog"])

        let r = try loadDataset(.imageNetR, root: t.root)
        s = try select(r, dataset: .imageNetR, options: SelectionOptions(subset: .base))
        XCTAssertEqual(s.classNames, ["goldfish", "tench"])
        XCTAssertEqual(s.test, [Datum(path: "n01000000/r.jpg", label: 0, className: "goldfish"),
                                Datum(path: "n03000000/r.jpg", label: 1, className: "tench")])
        s = try select(r, dataset: .imageNetR, options: SelectionOptions(subset: .novel))
        XCTAssertEqual(s.test, [Datum(path: "n04000000/r.jpg", label: 0, className: "tiger shark")])

        // A variant with none of the half's classes: said so, rather than an empty set.
        try FileManager.default.removeItem(at: t.url("imagenet-rendition/imagenet-r/n04000000"))
        let rBase = try loadDataset(.imageNetR, root: t.root)
        let e = readersError { try select(rBase, dataset: .imageNetR, options: SelectionOptions(subset: .novel)) }
        assertReadersMessage(e?.message, ["ImageNetR has none of ImageNet's novel classes", "3..<5"])
    }

    // MARK: Options

    func testSelectionOptionsDecodeWithoutTheCacheKey() throws {
        let old = #"{"shots": 4, "seed": 2, "subset": "new"}"#
        let o = try JSONDecoder().decode(SelectionOptions.self, from: Data(old.utf8))
        XCTAssertEqual(o, SelectionOptions(shots: 4, seed: 2, subset: .novel, useCoOpCache: true))
        let off = SelectionOptions(shots: 1, seed: 3, imbalance: 0.5, subset: .base, useCoOpCache: false)
        XCTAssertEqual(try JSONDecoder().decode(SelectionOptions.self, from: JSONEncoder().encode(off)), off)
        let json = String(decoding: try JSONEncoder().encode(off), as: UTF8.self)
        XCTAssertTrue(json.contains("\"useCoOpCache\":false"), json)
    }

    // MARK: CoOp's cached draws: ImageNet

    struct ImageNetLayout: Decodable {
        let image_root: String
        let classnames: [[String]]
        let train: [String: [String]]
        let val: [String: [String]]
        let shots: Int
        let seed: Int
        let file: String
        let coop_train: [CacheGolden.Item]
        let sorted_train: [CacheGolden.Item]
    }

    /// The tiny ImageNet of `coop_cache/imagenet/layout.json`, with CoOp's cache file in `split_fewshot/`.
    func makeCachedImageNet(_ t: ReadersTempTree) throws -> ImageNetLayout {
        let layout = try SamplingGoldens.load(ImageNetLayout.self, "coop_cache/imagenet/layout.json")
        try t.write("imagenet/classnames.txt", text: layout.classnames.map { "\($0[0]) \($0[1])" }.joined(separator: "\n") + "\n")
        for (w, files) in layout.train { try t.touch(files.map { "imagenet/images/train/\(w)/\($0)" }) }
        for (w, files) in layout.val { try t.touch(files.map { "imagenet/images/val/\(w)/\($0)" }) }
        let pkl = try Data(contentsOf: SamplingGoldens.cacheDirectory.appendingPathComponent("imagenet/\(layout.file)"))
        try t.write("imagenet/split_fewshot/\(layout.file)", [UInt8](pkl))
        return layout
    }

    func datums(_ items: [CacheGolden.Item]) -> [Datum] {
        items.map { Datum(path: $0.path, label: $0.label, className: $0.className) }
    }

    func testImageNetDrawIsReadFromCoOpsCache() throws {
        let t = try ReadersTempTree()
        let layout = try makeCachedImageNet(t)
        let imagenet = try loadDataset(.imageNet, root: t.root)
        let o = SelectionOptions(shots: layout.shots, seed: layout.seed)
        let s = try select(imagenet, dataset: .imageNet, options: o)
        // CoOp's draw (on its os.listdir order), written under /data/coop/imagenet/images, read here.
        XCTAssertEqual(s.train, datums(layout.coop_train))
        XCTAssertEqual(s.coopCache, t.url("imagenet/split_fewshot/shot_2-seed_1.pkl").standardizedFileURL.path)
        XCTAssertEqual(s.val, imagenet.val, "ImageNet's val stays whole")
        XCTAssertEqual(s.test, imagenet.test)
        print("ImageNet draw from \(s.coopCache!):")
        for d in s.train.prefix(6) { print("  \(d.path)  label \(d.label)  \(d.className)") }

        // Without the cache: our draw on sorted listings, which differs.
        var off = o
        off.useCoOpCache = false
        let ours = try select(imagenet, dataset: .imageNet, options: off)
        XCTAssertEqual(ours.train, datums(layout.sorted_train))
        XCTAssertNotEqual(ours.train, s.train)
        XCTAssertNil(ours.coopCache)
        // Another seed has no file: drawn here.
        XCTAssertNil(try select(imagenet, dataset: .imageNet, options: SelectionOptions(shots: 2, seed: 2)).coopCache)
        XCTAssertNil(try select(imagenet, dataset: .imageNet, options: SelectionOptions()).coopCache)

        // Base/novel after the cached draw, split by its labels as CoOp does.
        let base = try select(imagenet, dataset: .imageNet, options: SelectionOptions(shots: 2, seed: 1, subset: .base))
        XCTAssertEqual(base.train, subsampleClasses([s.train], subset: .base)[0])
        XCTAssertEqual(base.coopCache, s.coopCache)
        XCTAssertEqual(base.classNames, ["tench", "goldfish", "great white shark"])
        // Imbalance after the cached draw.
        let tail = try select(imagenet, dataset: .imageNet, options: SelectionOptions(shots: 2, seed: 1, imbalance: 0.5))
        XCTAssertEqual(tail.train, try imbalancedFewShot(s.train, tau: 0.5, headShots: 2))
    }

    func testCacheOnTheMachineThatWroteItIsReadAsIs() throws {
        // When the paths are under the image folder already (the same machine), no re-rooting is needed.
        let t = try ReadersTempTree()
        let layout = try makeCachedImageNet(t)
        let imagenet = try loadDataset(.imageNet, root: t.root)
        let direct = try FewShotCache(contentsOf: t.url("imagenet/split_fewshot/\(layout.file)"),
                                      imageRoot: URL(fileURLWithPath: layout.image_root))
        XCTAssertEqual(direct.train, datums(layout.coop_train))
        XCTAssertNil(direct.val)
        let (train, val) = try readCoOpCache(t.url("imagenet/split_fewshot/\(layout.file)"), splits: imagenet, dataset: .imageNet)
        XCTAssertEqual(train, direct.train)
        XCTAssertEqual(val, imagenet.val)
    }

    func testImageNetCacheThatDoesNotFitIsRefused() throws {
        let t = try ReadersTempTree()
        let layout = try makeCachedImageNet(t)
        let file = t.url("imagenet/split_fewshot/\(layout.file)").standardizedFileURL.path
        let o = SelectionOptions(shots: 2, seed: 1)

        // A drawn image no longer in the train folder.
        let gone = layout.coop_train[3].path
        try FileManager.default.removeItem(at: t.url("imagenet/images/" + gone))
        var e = readersError { try select(try loadDataset(.imageNet, root: t.root), dataset: .imageNet, options: o) }
        XCTAssertEqual(e?.kind, .inconsistent)
        assertReadersMessage(e?.message, [file, "train[3] (\(gone)) is not an image of ImageNet's train split", "--no-coop-cache"])
        var off = o
        off.useCoOpCache = false
        XCTAssertEqual(try select(try loadDataset(.imageNet, root: t.root), dataset: .imageNet, options: off).train.count, 10)
        try t.touch(["imagenet/images/" + gone])

        // Class names that differ from the dataset's.
        var lines = layout.classnames.map { "\($0[0]) \($0[1])" }
        lines[1] = "n02000000 carp"
        try t.write("imagenet/classnames.txt", text: lines.joined(separator: "\n") + "\n")
        e = readersError { try select(try loadDataset(.imageNet, root: t.root), dataset: .imageNet, options: o) }
        assertReadersMessage(e?.message, [file, "train[2]", "names label 1 'goldfish', but ImageNet calls it 'carp'", "--no-coop-cache"])

        // Fewer classes than the file's labels.
        try t.write("imagenet/classnames.txt", text: layout.classnames.map { "\($0[0]) \($0[1])" }.joined(separator: "\n") + "\n")
        try FileManager.default.removeItem(at: t.url("imagenet/images/train/n05000000"))
        try FileManager.default.removeItem(at: t.url("imagenet/images/val/n05000000"))
        e = readersError { try select(try loadDataset(.imageNet, root: t.root), dataset: .imageNet, options: o) }
        assertReadersMessage(e?.message, [file, "train[8]", "has label 4, but ImageNet has 4 classes (labels 0..<4)"])

        // Data that is not the file's at all.
        try FileManager.default.removeItem(at: t.url("imagenet/images/train"))
        for w in ["n01000000", "n02000000", "n03000000", "n04000000"] { try t.touch(["imagenet/images/train/\(w)/other.JPEG"]) }
        e = readersError { try select(try loadDataset(.imageNet, root: t.root), dataset: .imageNet, options: o) }
        assertReadersMessage(e?.message, [file, "train[0] is /data/coop/imagenet/images/train/n01000000/", "no tail of it is an image of ImageNet's train split"])

        // A damaged file.
        try t.write("imagenet/split_fewshot/\(layout.file)", Array("not a pickle".utf8))
        e = readersError { try select(try loadDataset(.imageNet, root: t.root), dataset: .imageNet, options: o) }
        XCTAssertEqual(e?.kind, .malformedFile)
        assertReadersMessage(e?.message, [file, "--no-coop-cache"])
    }

    // MARK: CoOp's cached draws: a split-file dataset (train and val)

    /// `oxford_pets/` holding the lists the `coop_cache/shot_*.pkl` files were drawn from, those files
    /// in `split_fewshot/`, and every image.
    func makeCachedPets(_ t: ReadersTempTree) throws -> CacheGolden {
        let golden = try SamplingGoldens.load(CacheGolden.self, "coop_cache/cache.json")
        let fewshot = try SamplingGoldens.load(FewShotGolden.self, "fewshot.json")
        let ds = try XCTUnwrap(fewshot.datasets.first { $0.name == golden.dataset })
        func rows(_ labels: [Int], _ split: String) -> [[Any]] {
            labels.enumerated().map { i, y in
                let name = golden.class_names[y]
                return ["\(name.replacingOccurrences(of: " ", with: "_"))/\(split)_\(String(format: "%04d", i)).jpg", y, name]
            }
        }
        let train = rows(ds.train_labels, "tr"), val = rows(ds.val_labels, "va")
        let test = Array(val.prefix(40))
        let json = try JSONSerialization.data(withJSONObject: ["train": train, "val": val, "test": test])
        try t.write("oxford_pets/split_zhou_OxfordPets.json", [UInt8](json))
        try t.touch((train + val).map { "oxford_pets/images/" + ($0[0] as! String) })
        for f in golden.files where f.val != nil {
            let pkl = try Data(contentsOf: SamplingGoldens.cacheDirectory.appendingPathComponent(f.file))
            try t.write("oxford_pets/split_fewshot/\(f.file)", [UInt8](pkl))
        }
        return golden
    }

    func testSplitDatasetDrawIsReadFromCoOpsCache() throws {
        let t = try ReadersTempTree()
        let golden = try makeCachedPets(t)
        let pets = try loadDataset(.oxfordPets, root: t.root)
        var checked = 0
        for f in golden.files where f.val != nil {
            let s = try select(pets, dataset: .oxfordPets, options: SelectionOptions(shots: f.shots, seed: f.seed))
            XCTAssertEqual(s.train, datums(f.train), f.file)
            XCTAssertEqual(s.val, datums(f.val!), f.file)
            XCTAssertEqual(s.coopCache, t.url("oxford_pets/split_fewshot/\(f.file)").standardizedFileURL.path)
            // These files were drawn from the same list order as ours: the draw here is the same.
            let ours = try select(pets, dataset: .oxfordPets, options: SelectionOptions(shots: f.shots, seed: f.seed, useCoOpCache: false))
            XCTAssertEqual(ours.train, s.train, f.file)
            XCTAssertEqual(ours.val, s.val, f.file)
            XCTAssertNil(ours.coopCache)
            checked += 1
        }
        XCTAssertEqual(checked, 2)
    }

    func testSplitDatasetCacheThatDoesNotFitIsRefused() throws {
        let t = try ReadersTempTree()
        let golden = try makeCachedPets(t)
        let f = golden.files[0]
        let file = t.url("oxford_pets/split_fewshot/\(f.file)").standardizedFileURL.path
        let o = SelectionOptions(shots: f.shots, seed: f.seed)
        // A drawn val image missing on disk (the split file still lists it).
        let val0 = f.val![0].path
        try FileManager.default.removeItem(at: t.url("oxford_pets/images/" + val0))
        var e = readersError { try select(try loadDataset(.oxfordPets, root: t.root), dataset: .oxfordPets, options: o) }
        XCTAssertEqual(e?.kind, .missingImages)
        assertReadersMessage(e?.message, [file, "val[0] (\(val0)) is missing under", "--no-coop-cache"])
        try t.touch(["oxford_pets/images/" + val0])
        // A file without "val" (ImageNet's kind) for a dataset whose CoOp class writes one.
        let imagenetStyle = try Data(contentsOf: SamplingGoldens.cacheDirectory.appendingPathComponent("imagenet_shot_1-seed_1.pkl"))
        try t.write("oxford_pets/split_fewshot/shot_1-seed_1.pkl", [UInt8](imagenetStyle))
        e = readersError { try select(try loadDataset(.oxfordPets, root: t.root), dataset: .oxfordPets, options: SelectionOptions(shots: 1, seed: 1)) }
        assertReadersMessage(e?.message, ["shot_1-seed_1.pkl holds no \"val\" list; CoOp's OxfordPets writes one"])
        XCTAssertEqual(try select(try loadDataset(.oxfordPets, root: t.root), dataset: .oxfordPets,
                                  options: SelectionOptions(shots: 1, seed: 1, useCoOpCache: false)).train.count, 37)
    }
}
