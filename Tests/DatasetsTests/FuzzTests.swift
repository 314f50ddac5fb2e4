import Foundation
import TestSupport
import XCTest
@testable import Datasets

/// Seeded mutation tests of the dataset readers (issue 8), and the regression inputs of
/// Goldens/fuzz/datasets. Every mutated input gives a ``DatasetError`` or lists that stay inside the
/// image folder, never a trap. `PROMPTTUNE_FUZZ_ITERATIONS` sets the inputs per reader (2,000 in CI).
final class DatasetsFuzzTests: XCTestCase {
    static let iterations = Int(ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"] ?? "") ?? 2000

    static let splitSeeds: [String] = [
        #"{"train": [["Abyssinian_1.jpg", 0, "abyssinian"], ["beagle_2.jpg", 1, "beagle"]], "val": [["boxer_3.jpg", 2, "boxer"]], "test": [["boxer_4.jpg", 2, "boxer"], ["./Abyssinian_5.jpg", 0, "abyssinian"]]}"#,
        #"{"train": [["cars_train/00001.jpg", "0", "2012 Audi TTS Coupe"], ["cars_train/00002.jpg", 1.0, "2012 BMW M3 coupe"]], "val": [], "test": [["cars_test/00003.jpg", 1, "2012 BMW M3 coupe"]]}"#,
        "{\"train\": [[\"a/\\u00e9t\\u00e9.jpg\", 0, \"\\u00e9t\\u00e9\"], [\"b/x.jpg\", 1, \"b\"]],\r\n \"val\": [[\"b/y.jpg\", 1, \"b\"]],\r\n \"test\": [[\"a/z.jpg\", 0, \"\\u00e9t\\u00e9\"]], \"extra\": {\"n\": [1, 2.5e3, true, null]}}",
    ]

    /// The split-file parser and the class-name checks on mutated split files.
    func testSplitJSONMutations() throws {
        let seeds = Self.splitSeeds.map { Array($0.utf8) }
        var mutator = Mutator(seed: 0x5350_4C49)
        var errors = 0, read = 0, slowest = 0.0
        let start = Date()
        let file = URL(fileURLWithPath: "/fuzz/split_zhou_Fuzz.json")
        for i in 0..<Self.iterations {
            let input = mutator.mutate(seeds[i % seeds.count])
            let t0 = Date()
            do {
                let (train, val, test) = try parseSplitFile(Data(input), file: file)
                let names = try classNamesByLabel([("train", train), ("val", val), ("test", test)], source: file.path)
                for d in train + val + test {
                    XCTAssertNil(pathEscape(d.path), "input \(i): \(d.path) accepted")
                    XCTAssertTrue(d.label >= 0 && d.label < names.count && names[d.label] == d.className, "input \(i): \(d)")
                }
                read += 1
            } catch is DatasetError {
                errors += 1
            } catch {
                XCTFail("split input \(i): untyped error \(type(of: error)): \(error)")
            }
            slowest = max(slowest, Date().timeIntervalSince(t0))
        }
        report("split-json", errors: errors, successes: read, slowest: slowest, start: start)
    }

    /// ImageNet's classnames.txt and FGVCAircraft's variants.txt and image lists, as bytes split into
    /// lines the way the loaders read them (no disk: writing 2,000 files took 18 s on a busy machine).
    func testTextListMutations() throws {
        let seeds: [[UInt8]] = [
            "707-320\n727-200\nA300B4\n",                               // variants.txt
            "1000001 707-320\n1000002 727-200\r\n1000003 A300B4\n",       // images_variant_*.txt
            "n01440764 tench\nn01443537 goldfish\r\nn01484850 great white shark\n",  // classnames.txt
        ].map { Array($0.utf8) }
        let file = URL(fileURLWithPath: "/fuzz/list.txt"), root = URL(fileURLWithPath: "/fuzz/images")
        let labelOf = ["707-320": 0, "727-200": 1, "A300B4": 2]
        var mutator = Mutator(seed: 0x4647_5643)
        var errors = 0, read = 0, slowest = 0.0
        let start = Date()
        for i in 0..<Self.iterations {
            let lines = DatasetFiles.splitLines(mutator.mutate(seeds[i % 3]))
            let t0 = Date()
            do {
                switch i % 3 {
                case 0:
                    let names = try parseFGVCVariants(lines, file: file)
                    XCTAssertEqual(Set(names).count, names.count, "input \(i)")
                case 1:
                    for d in try parseFGVCList(lines, file: file, labelOf: labelOf, variantsFile: file, imageRoot: root) {
                        XCTAssertNil(pathEscape(d.path), "input \(i): \(d.path) accepted")
                        XCTAssertEqual(labelOf[d.className], d.label)
                    }
                default:
                    let table = try parseImageNetClassNames(lines, file: file)
                    XCTAssertEqual(Set(table.map(\.wnid)).count, table.count, "input \(i)")
                }
                read += 1
            } catch is DatasetError {
                errors += 1
            } catch {
                XCTFail("text-list input \(i): untyped error \(type(of: error)): \(error)")
            }
            slowest = max(slowest, Date().timeIntervalSince(t0))
        }
        report("text-lists", errors: errors, successes: read, slowest: slowest, start: start)
    }

    func report(_ name: String, errors: Int, successes: Int, slowest: Double, start: Date) {
        print(String(format: "fuzz %@: %d inputs, %d typed errors, %d read, 0 crashes, slowest %.1f ms, total %.2f s",
                     name, Self.iterations, errors, successes, slowest * 1000, Date().timeIntervalSince(start)))
        XCTAssertLessThan(slowest, 2, "\(name): an input took \(slowest) s (a hang?)")
    }

    // MARK: - Regression inputs

    /// Every file of Goldens/fuzz/datasets gives the error kind its index names.
    func testRegressionFixtures() throws {
        struct Index: Decodable {
            struct Fixture: Decodable { let file: String; let expect: String }
            let fixtures: [Fixture]
        }
        let dir = repoRoot.appendingPathComponent("Goldens/fuzz/datasets")
        let index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: dir.appendingPathComponent("index.json")))
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)).subtracting(["index.json"])
        XCTAssertEqual(files, Set(index.fixtures.map(\.file)), "every fixture needs an index entry")
        for f in index.fixtures {
            let t = try ReadersTempTree()
            let bytes = [UInt8](try Data(contentsOf: dir.appendingPathComponent(f.file)))
            let name: DatasetName
            if f.file.hasPrefix("fgvc_") {
                name = .fgvcAircraft
                try t.write("fgvc_aircraft/variants.txt", text: "707-320\n")
                try t.write("fgvc_aircraft/images_variant_train.txt", bytes)
                for s in ["val", "test"] { try t.write("fgvc_aircraft/images_variant_\(s).txt", text: "1000001 707-320\n") }
                try t.touch(["fgvc_aircraft/images/1000001.jpg"])
            } else {
                name = .oxfordPets
                try t.write("oxford_pets/split_zhou_OxfordPets.json", bytes)
                try t.touch(["Abyssinian_1.jpg", "beagle_2.jpg", "boxer_3.jpg", "boxer_4.jpg"].map { "oxford_pets/images/" + $0 })
            }
            let e = readersError { try loadDataset(name, root: t.root) }
            XCTAssertEqual(e?.kind.rawValue, f.expect, "\(f.file): \(e?.message ?? "")")
        }
    }

    /// The issue's input: the split entry is refused by name, before any file is opened.
    func testSplitPathOutsideTheImageFolderIsRefused() throws {
        let t = try ReadersTempTree()
        try t.write("oxford_pets/split_zhou_OxfordPets.json", text: #"{"train": [["a.jpg", 0, "cat"], ["x/../../../etc/hostname", 0, "cat"]], "val": [], "test": []}"#)
        try t.touch(["oxford_pets/images/a.jpg"])
        let e = readersError { try loadDataset(.oxfordPets, root: t.root) }
        XCTAssertEqual(e?.kind, .pathOutsideRoot)
        assertReadersMessage(e?.message, [t.url("oxford_pets/split_zhou_OxfordPets.json").path, "\"train\"[1]",
                                          "'x/../../../etc/hostname'", "it has a '..' component", "fix that entry"])
        for ok in ["a..b.jpg", "..a/b.jpg", "a/.../b.jpg"] { XCTAssertNil(pathEscape(ok), ok) }
        for bad in ["..", "../a.jpg", "a/../../b.jpg", "/etc/hostname", "a/..", "a\u{0}.jpg", ""] { XCTAssertNotNil(pathEscape(bad), bad) }
    }

    /// A `Datum` built by other code cannot open a file outside the source's root either.
    func testFileImageSourceRefusesPathsOutsideItsRoot() throws {
        let t = try ReadersTempTree()
        let source = FileImageSource(root: t.url("images"))
        for path in ["../secret.jpg", "/etc/hostname"] {
            let e = readersError { try source.image(for: Datum(path: path, label: 0, className: "cat")) }
            XCTAssertEqual(e?.kind, .pathOutsideRoot, path)
        }
    }

    /// CoOp's cache files: a relative path with `..`, or an absolute one that climbs out of the root.
    func testFewShotCachePathsMayNotClimbOutOfTheRoot() {
        for impath in ["../../etc/hostname", "/data/images/../../etc/hostname"] {
            XCTAssertThrowsError(try FewShotCache.relativePath(impath, root: "/data/images", item: "train[0]", source: "c.pkl")) { error in
                guard case SamplingError.cachePathOutsideRoot(_, let item, let p, _) = error else { return XCTFail("\(error)") }
                XCTAssertEqual([item, p], ["train[0]", impath])
            }
        }
        XCTAssertEqual(try FewShotCache.relativePath("/data/images/a/b.jpg", root: "/data/images", item: "", source: ""), "a/b.jpg")
    }

    /// The issue's input: a label only `test` uses, named like another class, is refused by name.
    func testLabelOnlyInTestIsRefused() throws {
        let t = try ReadersTempTree()
        try t.write("oxford_pets/split_zhou_OxfordPets.json", text: #"{"train": [["a.jpg", 0, "cat"], ["b.jpg", 1, "dog"]], "val": [], "test": [["c.jpg", 0, "cat"], ["d.jpg", 2, "dog"]]}"#)
        try t.touch(["oxford_pets/images/a.jpg", "oxford_pets/images/c.jpg"])
        var e = readersError { try loadDataset(.oxfordPets, root: t.root) }
        XCTAssertEqual(e?.kind, .inconsistent)
        assertReadersMessage(e?.message, [t.url("oxford_pets/split_zhou_OxfordPets.json").path,
                                          "label 2 ('dog', the name of label 1) occurs only in test (first at test[1]), never in train or val"])
        // Two labels with one name are refused even when train has both.
        try t.write("oxford_pets/split_zhou_OxfordPets.json", text: #"{"train": [["a.jpg", 0, "cat"], ["b.jpg", 1, "cat"]], "val": [], "test": []}"#)
        e = readersError { try loadDataset(.oxfordPets, root: t.root) }
        assertReadersMessage(e?.message, ["labels 0 and 1 are both named 'cat' (at train[0] and train[1])"])
        // A split file with no train (a test set) keeps its labels.
        try t.write("oxford_pets/split_zhou_OxfordPets.json", text: #"{"train": [], "val": [], "test": [["c.jpg", 0, "cat"], ["a.jpg", 1, "dog"]]}"#)
        XCTAssertEqual(try loadDataset(.oxfordPets, root: t.root).classNames, ["cat", "dog"])
    }

    /// JSON nested far deeper than any split file is a typed error, not a stack overflow.
    func testDeeplyNestedSplitJSONIsATypedError() {
        for depth in [600, 100_000] {
            let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            XCTAssertThrowsError(try parseSplitFile(Data(text.utf8), file: URL(fileURLWithPath: "/deep.json"))) { error in
                XCTAssertEqual((error as? DatasetError)?.kind, .malformedFile, "\(depth)")
            }
        }
    }
}
