import Foundation
import TensorIO
import TestSupport
import XCTest
@testable import Datasets

/// ImageNet-LT, Places-LT and CIFAR-100-LT (issue 21): numpy's generator and LIFT's rule against
/// Goldens/longtailed (reference/make_lt_fixtures.py), the readers on synthetic layouts and on the
/// genuine-format CIFAR fixture, their errors, and mutated inputs.
final class ReadersLongTailedTests: XCTestCase {
    static let goldens = repoRoot.appendingPathComponent("Goldens/longtailed")

    func loadGolden(_ name: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: Self.goldens.appendingPathComponent(name)))
    }

    /// A list stored in full or as {"len", "head", "fnv"}.
    func matches(_ stored: Any, _ xs: [Int]) -> Bool {
        if let list = stored as? [Int] { return list == xs }
        guard let o = stored as? [String: Any], let len = o["len"] as? Int, let head = o["head"] as? [Int],
              let fnv = o["fnv"] as? String else { return false }
        return xs.count == len && Array(xs.prefix(head.count)) == head && SamplingGoldens.fnv(xs) == fnv
    }

    // MARK: - numpy's RandomState and LIFT's rule

    func testNumpyRandomStateMatchesNumpy() throws {
        let cases = try loadGolden("numpy_random.json") as! [[String: Any]]
        XCTAssertEqual(cases.count, 4)
        for c in cases {
            let seed = UInt32(c["seed"] as! Int)
            var rng = NumpyRandomState(seed: seed)
            XCTAssertEqual(rng.keyWords(8).map(Int.init), c["key"] as! [Int], "seed \(seed)")
            for s in c["shuffles"] as! [[String: Any]] {
                var a = Array(0..<(s["n"] as! Int))
                rng.shuffle(&a)
                XCTAssertTrue(matches(s["result"]!, a), "seed \(seed), shuffle of \(a.count): \(a.prefix(16))")
            }
        }
    }

    /// CIFAR-100-LT at ratios 100/50/10 on a CIFAR-100-sized label list (500 per class): LIFT's
    /// counts (e.g. 500 ... 5 at ratio 100, 10,847 images) and the very positions numpy keeps.
    func testLIFTRuleMatchesLIFTOnACIFAR100SizedList() throws {
        let golden = try loadGolden("cifar100_lt.json") as! [String: Any]
        let labels = (0..<50_000).map { (7 * $0) % 100 }
        for c in golden["cases"] as! [[String: Any]] {
            let factor = c["factor"] as! Double
            let counts = longTailedCounts(imageMax: 500, classCount: 100, factor: factor)
            XCTAssertEqual(counts, c["counts"] as! [Int], "IF \(factor)")
            let kept = try longTailedKeep(labels: labels, classCount: 100, factor: factor)
            XCTAssertTrue(matches(c["kept"]!, kept), "IF \(factor): \(kept.prefix(16))")
        }
        XCTAssertEqual(longTailedCounts(imageMax: 500, classCount: 100, factor: 0.01).reduce(0, +), 10_847)
        XCTAssertEqual(longTailedCounts(imageMax: 500, classCount: 100, factor: 0.01).last, 5)
    }

    func testLIFTRuleRefusesAMissingClassAndAnEmptyClass() {
        var e = readersError { try longTailedKeep(labels: [0, 0, 2, 2], classCount: 3, factor: 0.5) }
        assertReadersMessage(e?.message, ["class 1 has no image"])
        e = readersError { try longTailedKeep(labels: [0, 1, 0, 1], classCount: 2, factor: 0.1) }
        assertReadersMessage(e?.message, ["leaves class 1 no image"])
    }

    // MARK: - CIFAR-100-LT on the genuine-format fixture

    /// `root/cifar-100-python/{train,test,meta}` from the committed gzip fixtures (read as they are:
    /// the reader takes gzip by its magic bytes).
    func cifarRoot(_ t: ReadersTempTree) throws -> URL {
        for f in CIFAR100LT.fileNames {
            try t.write("cifar-100-python/\(f)", [UInt8](try Data(contentsOf: Self.goldens.appendingPathComponent("cifar-100-python/\(f).gz"))))
        }
        return t.root
    }

    func testCIFAR100LTFixtureGivesLIFTsSplitAndTheImages() throws {
        let t = try ReadersTempTree()
        let root = try cifarRoot(t)
        let fixture = try loadGolden("cifar_fixture.json") as! [String: Any]
        let classes = fixture["classes"] as! [String]
        let trainLabels = fixture["train_labels"] as! [Int], testLabels = fixture["test_labels"] as! [Int]
        let cases = fixture["cases"] as! [[String: Any]]
        for (name, factor) in [(DatasetName.cifar100LT, 0.01), (.cifar100LT50, 0.02), (.cifar100LT10, 0.1)] {
            let s = try loadDataset(name, root: root)
            let c = cases.first { $0["factor"] as! Double == factor }!
            let kept = c["kept"] as! [Int]
            XCTAssertEqual(s.classNames, classes)
            XCTAssertEqual(s.train.map(\.path), kept.map { String(format: "train/%05d", $0) }, "\(name)")
            XCTAssertEqual(s.train.map(\.label), kept.map { trainLabels[$0] })
            XCTAssertEqual(s.train.map(\.className), kept.map { classes[trainLabels[$0]] })
            var perClass = [Int](repeating: 0, count: classes.count)
            for d in s.train { perClass[d.label] += 1 }
            XCTAssertEqual(perClass, c["counts"] as! [Int], "\(name)")
            XCTAssertEqual(s.test.map(\.label), testLabels)
            XCTAssertTrue(s.val.isEmpty)
            XCTAssertEqual(s.name, name.displayName)
        }
        // Ratio 100 on 100 per class: 100 ... 1 (class 9 keeps int(100 * 0.01) = 1).
        XCTAssertEqual((cases[0]["counts"] as! [Int]).first, 100)
        XCTAssertEqual((cases[0]["counts"] as! [Int]).last, 1)
        // Pixels: channel c, position p of image i is (i * 31 + (c * 1024 + p) * 7 + offset) % 256.
        let loaded = try openDataset(.cifar100LT, root: root)
        for (d, offset) in [(loaded.splits.train[3], 0), (loaded.splits.test[7], 101)] {
            let i = Int(d.path.split(separator: "/")[1])!
            let image = try loaded.images.image(for: d)
            XCTAssertEqual([image.width, image.height], [32, 32])
            for (p, c) in [(0, 0), (1, 0), (0, 1), (1023, 2), (500, 1)] {
                XCTAssertEqual(Int(image.pixels[3 * p + c]), (i * 31 + (c * 1024 + p) * 7 + offset) % 256, "\(d.path) p \(p) c \(c)")
            }
        }
        let e = readersError { try loaded.images.image(for: Datum(path: "train/01000", label: 0, className: "apple")) }
        assertReadersMessage(e?.message, ["no image 'train/01000'", "train/<0..<1000>"])
    }

    func testCIFAR100LTSaysWhatIsMissing() throws {
        let t = try ReadersTempTree()
        var e = readersError { try loadDataset(.cifar100LT, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFolder)
        assertReadersMessage(e?.message, ["no folder 'cifar-100-python'", "cifar-100-python/meta", "docs/EXPERIMENTS.md"])
        let root = try cifarRoot(t)
        try FileManager.default.removeItem(at: t.url("cifar-100-python/meta"))
        e = readersError { try loadDataset(.cifar100LT10, root: root) }
        XCTAssertEqual(e?.kind, .missingFile)
        assertReadersMessage(e?.message, [t.url("cifar-100-python/meta").path, "lacks meta", "cifar-100-python.tar.gz"])
        // CIFAR-10's files have 'labels', not 'fine_labels'.
        try t.write("cifar-100-python/meta", [UInt8](try Data(contentsOf: Self.goldens.appendingPathComponent("cifar-100-python/meta.gz"))))
        try t.write("cifar-100-python/test", text: "not a pickle")
        e = readersError { try loadDataset(.cifar100LT, root: root) }
        XCTAssertEqual(e?.kind, .malformedFile)
        assertReadersMessage(e?.message, [t.url("cifar-100-python/test").path, "CIFAR-100 python pickle"])
    }

    /// The pickle reader's byte-string mode and numpy arrays, on the fixture's own test file.
    func testByteStringPicklesAndNumpyArrays() throws {
        let bytes = try readPossiblyGzipped(Self.goldens.appendingPathComponent("cifar-100-python/test.gz"))
        var u = Unpickler(source: "test")
        u.byteStrings = true
        let top = try u.load(bytes).dict!
        XCTAssertNil(top["data"], "Python 2 keys are bytes")
        let array = try NumpyArray(pickled: top[bytesKey: "data"]!, source: "test")
        XCTAssertEqual(array.shape, [30, 3072])
        XCTAssertEqual(array.dtype, "u1")
        XCTAssertEqual(array.byteOrder, "|")
        XCTAssertEqual(Array(array.bytes[3072..<3075]), [UInt8((31 + 101) % 256), UInt8((31 + 7 + 101) % 256), UInt8((31 + 14 + 101) % 256)])
        // Without byte strings the same file reads as Latin-1 text, keys included.
        let text = try Unpickler(source: "test").load(bytes).dict!
        XCTAssertNotNil(text["fine_labels"])
        XCTAssertEqual(try NumpyArray(pickled: text["data"]!, source: "test").bytes, array.bytes)
        // A truncated data string is named.
        XCTAssertThrowsError(try NumpyArray(pickled: .tuple([]), source: "x ['data']")) { error in
            XCTAssertTrue("\(error)".contains("x ['data'] is not a pickled numpy array"), "\(error)")
        }
    }

    /// Mutated CIFAR pickles (the small test file and meta) give a DatasetError or a consistent split.
    func testCIFARPickleMutations() throws {
        let test = try readPossiblyGzipped(Self.goldens.appendingPathComponent("cifar-100-python/test.gz"))
        let meta = try readPossiblyGzipped(Self.goldens.appendingPathComponent("cifar-100-python/meta.gz"))
        var mutator = Mutator(seed: 0x4349_4641)
        var errors = 0, read = 0
        let iterations = max(50, DatasetsFuzzTests.iterations / 4)
        for i in 0..<iterations {
            let isMeta = i % 2 == 0
            let input = mutator.mutate(isMeta ? meta : test)
            let file = URL(fileURLWithPath: isMeta ? "/fuzz/meta" : "/fuzz/test")
            do {
                let top = try CIFAR100LT.unpickle(bytes: input, file: file)
                if isMeta {
                    let names = try CIFAR100LT.classNames(in: top, file: file)
                    XCTAssertEqual(Set(names).count, names.count, "input \(i)")
                } else {
                    let s = try CIFAR100LT.split(in: top, file: file, classCount: 10)
                    XCTAssertEqual(s.images.count, s.labels.count * CIFAR100LT.rowSize, "input \(i)")
                    XCTAssertTrue(s.labels.allSatisfy { (0..<10).contains($0) }, "input \(i)")
                }
                read += 1
            } catch is DatasetError {
                errors += 1
            } catch {
                XCTFail("CIFAR input \(i): untyped error \(type(of: error)): \(error)")
            }
        }
        print("fuzz cifar-pickles: \(iterations) inputs, \(errors) typed errors, \(read) read, 0 crashes")
        XCTAssertGreaterThan(errors, 0)
    }

    // MARK: - ImageNet-LT

    /// `imagenet_lt/` with classnames.txt listing 3 wnids out of order, OLTR lists and the images.
    func makeImageNetLT(_ t: ReadersTempTree, train: String? = nil, test: String? = nil, val: String? = nil) throws {
        try t.write("imagenet_lt/classnames.txt", text: "n02000003 cat\nn01000001 tench\nn01500002 goldfish\n")
        let trainText = train ?? "train/n01000001/a.JPEG 0\ntrain/n01000001/b.JPEG 0\r\ntrain/n01500002/c.JPEG 1\n\ntrain/n02000003/d.JPEG\t2\n"
        let testText = test ?? "val/n01000001/v1.JPEG 0\nval/n01500002/v2.JPEG 1\nval/n02000003/v3.JPEG 2"
        try t.write("imagenet_lt/ImageNet_LT_train.txt", text: trainText)
        try t.write("imagenet_lt/ImageNet_LT_test.txt", text: testText)
        if let val { try t.write("imagenet_lt/ImageNet_LT_val.txt", text: val) }
        try t.touch(["train/n01000001/a.JPEG", "train/n01000001/b.JPEG", "train/n01500002/c.JPEG", "train/n02000003/d.JPEG",
                     "val/n01000001/v1.JPEG", "val/n01500002/v2.JPEG", "val/n02000003/v3.JPEG"].map { "imagenet_lt/images/" + $0 })
    }

    func testImageNetLTReadsOLTRListsWithSortedWnidLabels() throws {
        let t = try ReadersTempTree()
        try makeImageNetLT(t)
        let s = try loadDataset(.imageNetLT, root: t.root, verifyImages: true)
        XCTAssertEqual(s.classNames, ["tench", "goldfish", "cat"])
        XCTAssertEqual(s.train.map(\.label), [0, 0, 1, 2])
        XCTAssertEqual(s.train.map(\.className), ["tench", "tench", "goldfish", "cat"])
        XCTAssertEqual(s.train[3].path, "train/n02000003/d.JPEG")
        XCTAssertEqual(s.test.map(\.path), ["val/n01000001/v1.JPEG", "val/n01500002/v2.JPEG", "val/n02000003/v3.JPEG"])
        XCTAssertTrue(s.val.isEmpty, "no ImageNet_LT_val.txt: val is empty")
        XCTAssertEqual(s.imageRoot.lastPathComponent, "images")
        try makeImageNetLT(t, val: "train/n01500002/c.JPEG 1\n")
        XCTAssertEqual(try loadDataset(.imageNetLT, root: t.root).val.map(\.label), [1])
        // verifyImages finds a listed image that is absent.
        try FileManager.default.removeItem(at: t.url("imagenet_lt/images/train/n01500002/c.JPEG"))
        let e = readersError { try loadDataset(.imageNetLT, root: t.root, verifyImages: true) }
        XCTAssertEqual(e?.kind, .missingImages)
    }

    func testImageNetLTErrorsNameTheFileAndLine() throws {
        let t = try ReadersTempTree()
        let trainFile = t.url("imagenet_lt/ImageNet_LT_train.txt").path
        let cases: [(String, DatasetError.Kind, [String])] = [
            ("train/n01000001/a.JPEG 0\ntrain/n01000001/b.JPEG 3\n", .inconsistent, [trainFile + ":2", "label 3 is outside 0..<3", "classnames.txt"]),
            ("train/n01000001/a.JPEG zero\n", .malformedFile, [trainFile + ":1", "label 'zero' is not an integer"]),
            ("train/n01000001/a.JPEG 0 extra\n", .malformedFile, [trainFile + ":1", "(3 fields)"]),
            ("train/n01000001/a.JPEG 0\ntrain/n01000001/a.JPEG 0\n", .malformedFile, [trainFile + ":2", "listed again (first at line 1)"]),
            ("train/n01000001/a.JPEG 1\n", .inconsistent, [trainFile + ":1", "folder of wnid n01000001 (label 0 by sorted wnid), not of label 1's wnid n01500002"]),
            ("../../etc/passwd 0\n", .pathOutsideRoot, [trainFile, "line 1", "'..' component"]),
            ("/etc/passwd 0\n", .pathOutsideRoot, [trainFile, "line 1", "it is absolute"]),
            ("\n\n", .malformedFile, [trainFile, "lists no images"]),
        ]
        for (text, kind, parts) in cases {
            try makeImageNetLT(t, train: text)
            let e = readersError { try loadDataset(.imageNetLT, root: t.root) }
            XCTAssertEqual(e?.kind, kind, text)
            assertReadersMessage(e?.message, parts)
        }
        try makeImageNetLT(t)
        try FileManager.default.removeItem(at: t.url("imagenet_lt/ImageNet_LT_test.txt"))
        var e = readersError { try loadDataset(.imageNetLT, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFile)
        assertReadersMessage(e?.message, ["missing split file \(t.url("imagenet_lt/ImageNet_LT_test.txt").path)", "OpenLongTailRecognition-OLTR"])
        try FileManager.default.removeItem(at: t.url("imagenet_lt/classnames.txt"))
        e = readersError { try loadDataset(.imageNetLT, root: t.root) }
        assertReadersMessage(e?.message, ["missing \(t.url("imagenet_lt/classnames.txt").path)", "CoOp's imagenet/classnames.txt"])
        try FileManager.default.removeItem(at: t.url("imagenet_lt/images"))
        e = readersError { try loadDataset(.imageNetLT, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFolder)
        assertReadersMessage(e?.message, ["no image folder 'images'", "docs/EXPERIMENTS.md"])
    }

    // MARK: - Places-LT

    func makePlacesLT(_ t: ReadersTempTree, categories: String? = nil) throws {
        try t.write("places_lt/categories_places365.txt",
                    text: categories ?? "/a/airfield 0\n/a/apartment_building/outdoor 1\n/b/bakery/shop 2\n")
        try t.write("places_lt/Places_LT_train.txt", text: "data_256/a/airfield/00000001.jpg 0\ndata_256/b/bakery/shop/00000002.jpg 2\n")
        try t.write("places_lt/Places_LT_test.txt", text: "val_256/Places365_val_00000001.jpg 1\n")
        try t.touch(["places_lt/images/data_256/a/airfield/00000001.jpg", "places_lt/images/val_256/Places365_val_00000001.jpg"])
    }

    func testPlacesLTNamesClassesAsLIFTDoes() throws {
        let t = try ReadersTempTree()
        try makePlacesLT(t)
        let s = try loadDataset(.placesLT, root: t.root)
        XCTAssertEqual(s.classNames, ["airfield", "apartment_building-outdoor", "bakery-shop"])
        XCTAssertEqual(s.train.map(\.className), ["airfield", "bakery-shop"])
        XCTAssertEqual(s.test.map(\.label), [1])
        // Lines in any order; labels decide.
        try makePlacesLT(t, categories: "/b/bakery/shop 2\n/a/airfield 0\n/a/apartment_building/outdoor 1\n")
        XCTAssertEqual(try loadDataset(.placesLT, root: t.root).classNames, ["airfield", "apartment_building-outdoor", "bakery-shop"])
        // A train image in another category's folder is refused by line.
        try t.write("places_lt/Places_LT_train.txt", text: "data_256/a/airfield/00000001.jpg 0\ndata_256/b/bakery/shop/00000002.jpg 1\n")
        let e = readersError { try loadDataset(.placesLT, root: t.root) }
        XCTAssertEqual(e?.kind, .inconsistent)
        assertReadersMessage(e?.message, [t.url("places_lt/Places_LT_train.txt").path + ":2", "folder of category /b/bakery/shop (label 2",
                                          "not of label 1's /a/apartment_building/outdoor"])
    }

    func testPlacesLTCategoryErrors() throws {
        let t = try ReadersTempTree()
        let file = t.url("places_lt/categories_places365.txt").path
        let cases: [(String, [String])] = [
            ("/a/airfield 0\n/a/alley 2\n", [file, "labels run to 2 but none is 1"]),
            ("/a/airfield 0\n/a/alley 0\n", [file + ":2", "label 0 is given again (first at line 1)"]),
            ("airfield 0\n", [file + ":1", "is not '/<letter>/<category> <label>'"]),
            ("/a/airfield\n", [file + ":1"]),
            ("/a 0\n", [file + ":1", "no name after its letter folder"]),
            ("/a/x-y 0\n/a/x/y 1\n", [file + ":2", "'x-y' of label 1 is that of label 0"]),
        ]
        for (text, parts) in cases {
            try makePlacesLT(t, categories: text)
            let e = readersError { try loadDataset(.placesLT, root: t.root) }
            XCTAssertEqual(e?.kind, .malformedFile, text)
            assertReadersMessage(e?.message, parts)
        }
        try FileManager.default.removeItem(at: t.url("places_lt/categories_places365.txt"))
        let e = readersError { try loadDataset(.placesLT, root: t.root) }
        assertReadersMessage(e?.message, ["missing \(file)", "Places365's development kit"])
    }

    /// Mutated OLTR lists and Places categories: a DatasetError, or items in range and inside the folder.
    func testOLTRListAndCategoryMutations() throws {
        let seeds: [[UInt8]] = [
            "train/n01000001/a.JPEG 0\ntrain/n01500002/c.JPEG 1\r\n\ntrain/n02000003/d.JPEG\t2\n",
            "/a/airfield 0\n/a/apartment_building/outdoor 1\r\n/b/bakery/shop 2\n",
        ].map { Array($0.utf8) }
        let file = URL(fileURLWithPath: "/fuzz/list.txt"), root = URL(fileURLWithPath: "/fuzz/images")
        var mutator = Mutator(seed: 0x4F4C_5452)
        var errors = 0, read = 0
        for i in 0..<DatasetsFuzzTests.iterations {
            let lines = DatasetFiles.splitLines(mutator.mutate(seeds[i % 2]))
            do {
                if i % 2 == 0 {
                    for d in try parseOLTRList(lines, file: file, classNames: ["a", "b", "c"], classSource: "c.txt", imageRoot: root) {
                        XCTAssertNil(pathEscape(d.path), "input \(i): \(d.path) accepted")
                        XCTAssertEqual(["a", "b", "c"][d.label], d.className)
                    }
                } else {
                    let names = try parsePlacesCategories(lines, file: file)
                    XCTAssertEqual(Set(names).count, names.count, "input \(i)")
                    XCTAssertFalse(names.contains(""), "input \(i)")
                }
                read += 1
            } catch is DatasetError {
                errors += 1
            } catch {
                XCTFail("input \(i): untyped error \(type(of: error)): \(error)")
            }
        }
        print("fuzz oltr-lists: \(DatasetsFuzzTests.iterations) inputs, \(errors) typed errors, \(read) read, 0 crashes")
    }

    // MARK: - Names

    func testLongTailedNamesParse() {
        XCTAssertEqual(DatasetName(parsing: "imagenet_lt"), .imageNetLT)
        XCTAssertEqual(DatasetName(parsing: "ImageNet-LT"), .imageNetLT)
        XCTAssertEqual(DatasetName(parsing: "Places-LT"), .placesLT)
        XCTAssertEqual(DatasetName(parsing: "CIFAR-100-LT"), .cifar100LT)
        XCTAssertEqual(DatasetName(parsing: "cifar100_ir50"), .cifar100LT50)
        XCTAssertEqual(DatasetName(parsing: "cifar100_lt_r10"), .cifar100LT10)
        XCTAssertEqual(DatasetName.longTailed.compactMap(\.imbalanceRatio), [100, 50, 10])
        XCTAssertEqual(DatasetName.longTailed.map(\.classCount), [1000, 365, 100, 100, 100])
        XCTAssertTrue(DatasetName.allCases.filter(\.isLongTailed).allSatisfy { $0.coopName == nil })
    }
}
