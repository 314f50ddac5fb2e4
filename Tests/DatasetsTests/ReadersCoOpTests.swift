import Foundation
import TestSupport
import XCTest
@testable import Datasets

/// The CoOp layouts, on tiny fake datasets built in a temporary folder.
final class ReadersCoOpTests: XCTestCase {
    // MARK: Names

    func testNamesParseCLIAndCoOpSpellings() {
        let cases: [(String, DatasetName)] = [
            ("imagenet", .imageNet), ("ImageNet", .imageNet), ("caltech101", .caltech101), ("caltech-101", .caltech101),
            ("oxford_pets", .oxfordPets), ("OxfordPets", .oxfordPets), ("oxford-pets", .oxfordPets),
            ("stanford_cars", .stanfordCars), ("StanfordCars", .stanfordCars),
            ("oxford_flowers", .flowers102), ("OxfordFlowers", .flowers102), ("Flowers102", .flowers102),
            ("food101", .food101), ("food-101", .food101), ("Food101", .food101),
            ("fgvc_aircraft", .fgvcAircraft), ("FGVCAircraft", .fgvcAircraft), ("sun397", .sun397), ("SUN397", .sun397),
            ("dtd", .dtd), ("DescribableTextures", .dtd), ("eurosat", .euroSAT), ("EuroSAT", .euroSAT),
            ("ucf101", .ucf101), ("UCF101", .ucf101), ("imagenetv2", .imageNetV2), ("ImageNetV2", .imageNetV2),
            ("imagenet_sketch", .imageNetSketch), ("ImageNet-Sketch", .imageNetSketch), ("imagenet-sketch", .imageNetSketch),
            ("imagenet_a", .imageNetA), ("ImageNetA", .imageNetA), ("imagenet-adversarial", .imageNetA),
            ("imagenet_r", .imageNetR), ("ImageNet-R", .imageNetR), ("imagenet-rendition", .imageNetR),
            ("imagefolder", .imageFolder), ("fashion_mnist", .fashionMNIST), ("fashion-mnist", .fashionMNIST),
            ("FashionMNIST", .fashionMNIST),
        ]
        for (text, expected) in cases { XCTAssertEqual(DatasetName(parsing: text), expected, text) }
        XCTAssertNil(DatasetName(parsing: "cifar10"))
        XCTAssertNil(DatasetName(parsing: ""))
        // Every spelling of a dataset resolves to it and to no other.
        for name in DatasetName.allCases {
            for alias in [name.rawValue] + name.aliases { XCTAssertEqual(DatasetName(parsing: alias), name, alias) }
        }
    }

    func testCatalogueMatchesMethodsTableAndCoOp() {
        let table: [(DatasetName, Int, String)] = [
            (.imageNet, 1000, "a photo of a {}."), (.caltech101, 100, "a photo of a {}."),
            (.oxfordPets, 37, "a photo of a {}, a type of pet."), (.stanfordCars, 196, "a photo of a {}."),
            (.flowers102, 102, "a photo of a {}, a type of flower."), (.food101, 101, "a photo of {}, a type of food."),
            (.fgvcAircraft, 100, "a photo of a {}, a type of aircraft."), (.sun397, 397, "a photo of a {}."),
            (.dtd, 47, "{} texture."), (.euroSAT, 10, "a centered satellite photo of {}."),
            (.ucf101, 101, "a photo of a person doing {}."),
            (.imageNetV2, 1000, "a photo of a {}."), (.imageNetSketch, 1000, "a photo of a {}."),
            (.imageNetA, 200, "a photo of a {}."), (.imageNetR, 200, "a photo of a {}."),
            (.fashionMNIST, 10, "a photo of a {}."),
        ]
        for (name, count, template) in table {
            XCTAssertEqual(name.classCount, count, name.rawValue)
            XCTAssertEqual(name.template, template, name.rawValue)
        }
        XCTAssertEqual(DatasetName.coopEleven.count, 11)
        let folders: [DatasetName: (String, String, String?)] = [
            .imageNet: ("imagenet", "images", nil), .caltech101: ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
            .oxfordPets: ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
            .stanfordCars: ("stanford_cars", "", "split_zhou_StanfordCars.json"),
            .flowers102: ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
            .food101: ("food-101", "images", "split_zhou_Food101.json"), .fgvcAircraft: ("fgvc_aircraft", "images", nil),
            .sun397: ("sun397", "SUN397", "split_zhou_SUN397.json"), .dtd: ("dtd", "images", "split_zhou_DescribableTextures.json"),
            .euroSAT: ("eurosat", "2750", "split_zhou_EuroSAT.json"), .ucf101: ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
            .imageNetV2: ("imagenetv2", "imagenetv2-matched-frequency-format-val", nil),
            .imageNetSketch: ("imagenet-sketch", "images", nil), .imageNetA: ("imagenet-adversarial", "imagenet-a", nil),
            .imageNetR: ("imagenet-rendition", "imagenet-r", nil),
        ]
        for (name, (folder, images, split)) in folders {
            XCTAssertEqual(name.folder, folder, name.rawValue)
            XCTAssertEqual(name.imageSubfolder, images, name.rawValue)
            XCTAssertEqual(name.splitFile, split, name.rawValue)
        }
    }

    // MARK: Split json

    /// `oxford_pets/` with 3 classes: 2 train, 1 val and 2 test images.
    func makePets(_ t: ReadersTempTree, labelField: String = "1") throws {
        try t.write("oxford_pets/split_zhou_OxfordPets.json", text: """
        {"train": [["Abyssinian_1.jpg", 0, "abyssinian"], ["beagle_2.jpg", \(labelField), "beagle"]],
         "val": [["boxer_3.jpg", 2, "boxer"]],
         "test": [["boxer_4.jpg", 2, "boxer"], ["./Abyssinian_5.jpg", 0, "abyssinian"]]}
        """)
        try t.touch(["Abyssinian_1.jpg", "beagle_2.jpg", "boxer_3.jpg", "boxer_4.jpg", "Abyssinian_5.jpg"].map { "oxford_pets/images/" + $0 })
    }

    func testSplitJSONIsReadAsCoOpReadSplit() throws {
        let t = try ReadersTempTree()
        try makePets(t)
        let s = try loadDataset(.oxfordPets, root: t.root, verifyImages: true)
        XCTAssertEqual(s.name, "OxfordPets")
        XCTAssertEqual(s.imageRoot.path, t.url("oxford_pets/images").path)
        XCTAssertEqual(s.train, [Datum(path: "Abyssinian_1.jpg", label: 0, className: "abyssinian"),
                                 Datum(path: "beagle_2.jpg", label: 1, className: "beagle")])
        XCTAssertEqual(s.val, [Datum(path: "boxer_3.jpg", label: 2, className: "boxer")])
        XCTAssertEqual(s.test.map(\.path), ["boxer_4.jpg", "Abyssinian_5.jpg"])
        XCTAssertEqual(s.classNames, ["abyssinian", "beagle", "boxer"])
        XCTAssertEqual(s.template, "a photo of a {}, a type of pet.")
    }

    func testLabelsMayBeIntegralNumbersOrStrings() throws {
        for field in ["1.0", "\"1\""] {
            let t = try ReadersTempTree()
            try makePets(t, labelField: field)
            XCTAssertEqual(try loadDataset(.oxfordPets, root: t.root).train[1].label, 1, field)
        }
    }

    func testStanfordCarsPathsAreRelativeToTheDatasetFolder() throws {
        let t = try ReadersTempTree()
        try t.write("stanford_cars/split_zhou_StanfordCars.json", text: """
        {"train": [["cars_train/00001.jpg", 0, "2012 Audi TTS Coupe"], ["cars_train/00003.jpg", 1, "2012 BMW M3 coupe"]],
         "val": [], "test": [["cars_test/00002.jpg", 1, "2012 BMW M3 coupe"]]}
        """)
        try t.touch(["stanford_cars/cars_train/00001.jpg", "stanford_cars/cars_train/00003.jpg", "stanford_cars/cars_test/00002.jpg"])
        let s = try loadDataset(.stanfordCars, root: t.root, verifyImages: true)
        XCTAssertEqual(s.imageRoot.path, t.url("stanford_cars").path)
        XCTAssertEqual(s.classNames, ["2012 Audi TTS Coupe", "2012 BMW M3 coupe"])
        XCTAssertEqual(s.val, [])
    }

    func testEuroSATAndCaltechClassNamesAreRenamedAsCoOpDoes() throws {
        let t = try ReadersTempTree()
        try t.write("eurosat/split_zhou_EuroSAT.json", text: """
        {"train": [["AnnualCrop/a.jpg", 0, "AnnualCrop"], ["SeaLake/b.jpg", 1, "Sea or Lake"]], "val": [], "test": []}
        """)
        try t.touch(["eurosat/2750/AnnualCrop/a.jpg", "eurosat/2750/SeaLake/b.jpg"])
        let e = try loadDataset(.euroSAT, root: t.root)
        XCTAssertEqual(e.classNames, ["Annual Crop Land", "Sea or Lake"])
        XCTAssertEqual(e.train[0].className, "Annual Crop Land")
        XCTAssertEqual(e.template, "a centered satellite photo of {}.")

        try t.write("caltech-101/split_zhou_Caltech101.json", text: """
        {"train": [["airplanes/image_0001.jpg", 0, "airplanes"], ["Faces/image_0001.jpg", 1, "face"]], "val": [], "test": []}
        """)
        try t.touch(["caltech-101/101_ObjectCategories/airplanes/image_0001.jpg", "caltech-101/101_ObjectCategories/Faces/image_0001.jpg"])
        XCTAssertEqual(try loadDataset(.caltech101, root: t.root).classNames, ["airplane", "face"])
    }

    // MARK: Errors of the split datasets

    func testWrongRootSaysWhatWasExpected() throws {
        let t = try ReadersTempTree()
        let e = readersError { try loadDataset(.oxfordPets, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFolder)
        assertReadersMessage(e?.message, [
            "no folder 'oxford_pets' under \(t.root.path)",
            "expected \(t.root.path)/oxford_pets/images/ and \(t.root.path)/oxford_pets/split_zhou_OxfordPets.json",
            "(the CoOp layout: see DATASETS.md of CoOp)",
        ])
        let missingRoot = t.url("nowhere")
        assertReadersMessage(readersError { try loadDataset(.dtd, root: missingRoot) }?.message,
                             ["the data root \(missingRoot.path) does not exist", "dtd/split_zhou_DescribableTextures.json"])
    }

    func testRootThatIsTheDatasetFolderGetsAHint() throws {
        let t = try ReadersTempTree()
        try makePets(t)
        let e = readersError { try loadDataset(.oxfordPets, root: t.url("oxford_pets")) }
        assertReadersMessage(e?.message, ["looks like the dataset folder itself", "pass its parent, \(t.root.path), as the root"])
    }

    func testNearMissFolderNameGetsAHint() throws {
        let t = try ReadersTempTree()
        try t.mkdir("Food101")
        let e = readersError { try loadDataset(.food101, root: t.root) }
        assertReadersMessage(e?.message, ["no folder 'food-101'", "There is 'Food101': rename it to 'food-101'", "ln -s Food101"])
    }

    func testMissingImageFolder() throws {
        let t = try ReadersTempTree()
        try t.write("ucf101/split_zhou_UCF101.json", text: #"{"train": [], "val": [], "test": []}"#)
        let e = readersError { try loadDataset(.ucf101, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFolder)
        assertReadersMessage(e?.message, ["no image folder 'UCF-101-midframes' in \(t.url("ucf101").path)"])
    }

    func testMissingSplitFileNamesItAndWhereToGetIt() throws {
        let t = try ReadersTempTree()
        try t.mkdir("dtd/images")
        let e = readersError { try loadDataset(.dtd, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFile)
        assertReadersMessage(e?.message, ["missing split file \(t.url("dtd/split_zhou_DescribableTextures.json").path)",
                                          "https://drive.google.com/file/d/1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"])
    }

    func testMalformedSplitFiles() throws {
        let t = try ReadersTempTree()
        try makePets(t)
        let file = t.url("oxford_pets/split_zhou_OxfordPets.json")
        func error(_ json: String) throws -> DatasetError? {
            try t.write("oxford_pets/split_zhou_OxfordPets.json", text: json)
            return readersError { try loadDataset(.oxfordPets, root: t.root) }
        }
        var e = try error("{\"train\": [")
        XCTAssertEqual(e?.kind, .malformedFile)
        assertReadersMessage(e?.message, ["split file \(file.path) is not valid JSON"])

        e = try error("[1, 2]")
        assertReadersMessage(e?.message, ["\(file.path) holds a list, not an object with keys \"train\", \"val\", \"test\""])

        e = try error(#"{"train": [], "val": []}"#)
        assertReadersMessage(e?.message, ["has no \"test\" list (keys: train, val)"])

        e = try error(#"{"train": [], "val": {"a": 1}, "test": []}"#)
        assertReadersMessage(e?.message, ["\"val\" is an object, not a list of [path, label, classname]"])

        e = try error(#"{"train": [["a.jpg", 0, "cat"]], "val": [["b.jpg", 1, "dog"], ["c/d.jpg", "x", "cat"]], "test": []}"#)
        assertReadersMessage(e?.message, ["split file \(file.path): first bad entry is \"val\"[1] = [\"c/d.jpg\", \"x\", \"cat\"]",
                                          "expected [relative image path, integer label >= 0, class name]"])
        for bad in [#"["a.jpg", 0]"#, #"["a.jpg", -1, "cat"]"#, #"["a.jpg", 1.5, "cat"]"#, #"["a.jpg", true, "cat"]"#, #"[3, 0, "cat"]"#] {
            e = try error("{\"train\": [\(bad)], \"val\": [], \"test\": []}")
            assertReadersMessage(e?.message, ["first bad entry is \"train\"[0] = "], line: #line)
        }
    }

    func testInconsistentLabels() throws {
        let t = try ReadersTempTree()
        try makePets(t)
        try t.write("oxford_pets/split_zhou_OxfordPets.json", text: #"{"train": [["a.jpg", 0, "cat"]], "val": [], "test": [["b.jpg", 0, "dog"]]}"#)
        var e = readersError { try loadDataset(.oxfordPets, root: t.root) }
        XCTAssertEqual(e?.kind, .inconsistent)
        assertReadersMessage(e?.message, ["label 0 is 'cat' at train[0] but 'dog' at test[0]"])
        try t.write("oxford_pets/split_zhou_OxfordPets.json", text: #"{"train": [["a.jpg", 0, "cat"], ["b.jpg", 2, "dog"]], "val": [], "test": []}"#)
        e = readersError { try loadDataset(.oxfordPets, root: t.root) }
        assertReadersMessage(e?.message, ["labels run to 2 but no item has label 1"])
    }

    func testMissingImagesAreReported() throws {
        let t = try ReadersTempTree()
        try makePets(t)
        try FileManager.default.removeItem(at: t.url("oxford_pets/images/boxer_4.jpg"))
        // The first test image is always checked.
        var e = readersError { try loadDataset(.oxfordPets, root: t.root) }
        XCTAssertEqual(e?.kind, .missingImages)
        XCTAssertEqual(e?.missingPaths, [t.url("oxford_pets/images/boxer_4.jpg").path])
        assertReadersMessage(e?.message, ["OxfordPets: the first image of a split is missing", "boxer_4.jpg"])

        // Others only with verifyImages, which counts them all.
        try t.touch(["oxford_pets/images/boxer_4.jpg"])
        for f in ["beagle_2.jpg", "Abyssinian_5.jpg"] { try FileManager.default.removeItem(at: t.url("oxford_pets/images/" + f)) }
        XCTAssertNoThrow(try loadDataset(.oxfordPets, root: t.root))
        e = readersError { try loadDataset(.oxfordPets, root: t.root, verifyImages: true) }
        XCTAssertEqual(e?.missingCount, 2)
        XCTAssertEqual(e?.missingPaths.map { URL(fileURLWithPath: $0).lastPathComponent }, ["beagle_2.jpg", "Abyssinian_5.jpg"])
        assertReadersMessage(e?.message, ["2 of the 5 images the splits list are missing under \(t.url("oxford_pets/images").path)"])
    }

    // MARK: ImageNet

    /// `imagenet/` with 3 classes; classnames.txt lists them out of order (labels follow the sorted folders).
    func makeImageNet(_ t: ReadersTempTree) throws {
        try t.write("imagenet/classnames.txt", text: "n03000000 tench fish\nn01000000 goldfish\nn02000000 great white shark\n")
        try t.touch(["train/n01000000/b.JPEG", "train/n01000000/a.JPEG", "train/n02000000/c.JPEG", "train/n03000000/d.JPEG",
                     "train/n03000000/.DS_Store", "val/n01000000/v1.JPEG", "val/n02000000/v2.JPEG", "val/n03000000/v3.JPEG"]
            .map { "imagenet/images/" + $0 })
    }

    func testImageNetFromClassnamesAndFolders() throws {
        let t = try ReadersTempTree()
        try makeImageNet(t)
        let s = try loadDataset(.imageNet, root: t.root, verifyImages: true)
        XCTAssertEqual(s.imageRoot.path, t.url("imagenet/images").path)
        XCTAssertEqual(s.classNames, ["goldfish", "great white shark", "tench fish"])
        XCTAssertEqual(s.train, [Datum(path: "train/n01000000/a.JPEG", label: 0, className: "goldfish"),
                                 Datum(path: "train/n01000000/b.JPEG", label: 0, className: "goldfish"),
                                 Datum(path: "train/n02000000/c.JPEG", label: 1, className: "great white shark"),
                                 Datum(path: "train/n03000000/d.JPEG", label: 2, className: "tench fish")])
        XCTAssertEqual(s.test.map(\.path), ["val/n01000000/v1.JPEG", "val/n02000000/v2.JPEG", "val/n03000000/v3.JPEG"])
        XCTAssertEqual(s.val, s.test, "CoOp uses ImageNet's val set as both val and test")
        XCTAssertEqual(s.template, "a photo of a {}.")
    }

    func testImageNetValOnly() throws {
        let t = try ReadersTempTree()
        try makeImageNet(t)
        try FileManager.default.removeItem(at: t.url("imagenet/images/train"))
        let s = try loadDataset(.imageNet, root: t.root)
        XCTAssertEqual(s.train, [])
        XCTAssertEqual(s.test.count, 3)
    }

    func testImageNetErrors() throws {
        let t = try ReadersTempTree()
        try makeImageNet(t)
        try FileManager.default.removeItem(at: t.url("imagenet/classnames.txt"))
        var e = readersError { try loadDataset(.imageNet, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFile)
        assertReadersMessage(e?.message, ["missing \(t.url("imagenet/classnames.txt").path)", "images/train/<wnid>/", "drive.google.com"])

        try t.write("imagenet/classnames.txt", text: "n01000000 goldfish\nn02000000 great white shark\n")
        e = readersError { try loadDataset(.imageNet, root: t.root) }
        XCTAssertEqual(e?.kind, .inconsistent)
        assertReadersMessage(e?.message, ["class folder 'n03000000'", "is not in \(t.url("imagenet/classnames.txt").path)"])

        try t.write("imagenet/classnames.txt", text: "n01000000 goldfish\nn02000000\n")
        e = readersError { try loadDataset(.imageNet, root: t.root) }
        XCTAssertEqual(e?.kind, .malformedFile)
        assertReadersMessage(e?.message, ["classnames.txt:2: 'n02000000' is not '<wnid> <class name>'"])

        try makeImageNet(t)
        try FileManager.default.removeItem(at: t.url("imagenet/images/val/n02000000"))
        e = readersError { try loadDataset(.imageNet, root: t.root) }
        assertReadersMessage(e?.message, ["has 3 class folders", "has 3 class folders and \(t.url("imagenet/images/val").path) 2",
                                          "Only in train: n02000000; only in val: none"])
    }

    // MARK: ImageNet variants

    func testImageNetAUsesTheSubsetOfFoldersPresent() throws {
        let t = try ReadersTempTree()
        try t.write("imagenet-adversarial/classnames.txt", text: "n01000000 goldfish\nn02000000 great white shark\nn03000000 tench\n")
        try t.touch(["imagenet-adversarial/imagenet-a/n03000000/x.jpg", "imagenet-adversarial/imagenet-a/n01000000/y.jpg",
                     "imagenet-adversarial/imagenet-a/README.txt"])
        let s = try loadDataset(.imageNetA, root: t.root)
        XCTAssertEqual(s.classNames, ["goldfish", "tench"])
        XCTAssertEqual(s.test, [Datum(path: "n01000000/y.jpg", label: 0, className: "goldfish"),
                                Datum(path: "n03000000/x.jpg", label: 1, className: "tench")])
        XCTAssertEqual(s.train, [])
        XCTAssertEqual(s.val, [])
        XCTAssertEqual(s.name, "ImageNetA")
    }

    func testImageNetRAndSketchLayouts() throws {
        let t = try ReadersTempTree()
        for (name, folder, images) in [(DatasetName.imageNetR, "imagenet-rendition", "imagenet-r"), (.imageNetSketch, "imagenet-sketch", "images")] {
            try t.write("\(folder)/classnames.txt", text: "n01000000 goldfish\nn02000000 shark\n")
            try t.touch(["\(folder)/\(images)/n02000000/s.jpg"])
            let s = try loadDataset(name, root: t.root)
            XCTAssertEqual(s.classNames, ["shark"], name.rawValue)
            XCTAssertEqual(s.test.map(\.path), ["n02000000/s.jpg"], name.rawValue)
            try t.touch(["\(folder)/\(images)/n09999999/z.jpg"])
            let e = readersError { try loadDataset(name, root: t.root) }
            assertReadersMessage(e?.message, ["class folder 'n09999999'", "it should be a copy of imagenet/classnames.txt"])
        }
        let e = readersError { try loadDataset(.imageNetA, root: t.root) }
        assertReadersMessage(e?.message, ["no folder 'imagenet-adversarial'", "imagenet-adversarial/imagenet-a/<wnid>/",
                                          "imagenet-adversarial/classnames.txt"])
    }

    func testImageNetV2FoldersAreNumbersInClassnamesOrder() throws {
        let t = try ReadersTempTree()
        try t.write("imagenetv2/classnames.txt", text: "n03000000 tench\nn01000000 goldfish\n")
        let base = "imagenetv2/imagenetv2-matched-frequency-format-val/"
        try t.touch([base + "0/a.jpeg", base + "1/b.jpeg", base + "1/c.jpeg"])
        let s = try loadDataset(.imageNetV2, root: t.root)
        XCTAssertEqual(s.classNames, ["tench", "goldfish"])
        XCTAssertEqual(s.test, [Datum(path: "0/a.jpeg", label: 0, className: "tench"), Datum(path: "1/b.jpeg", label: 1, className: "goldfish"),
                                Datum(path: "1/c.jpeg", label: 1, className: "goldfish")])
        try t.write("imagenetv2/classnames.txt", text: "n03000000 tench\nn01000000 goldfish\nn02000000 shark\n")
        let e = readersError { try loadDataset(.imageNetV2, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFolder)
        assertReadersMessage(e?.message, ["lacks 1 of the 3 class folders 0...2 (first: 2)"])
    }

    // MARK: FGVCAircraft

    func makeAircraft(_ t: ReadersTempTree) throws {
        try t.write("fgvc_aircraft/variants.txt", text: "707-320\nA300B4\nFalcon 2000\nF/A-18\n")
        try t.write("fgvc_aircraft/images_variant_train.txt", text: "1025794 707-320\n0034309 Falcon 2000\n")
        try t.write("fgvc_aircraft/images_variant_val.txt", text: "0056978 F/A-18\n")
        try t.write("fgvc_aircraft/images_variant_test.txt", text: "1514522 A300B4\n0062765 707-320\n")
        try t.touch(["1025794", "0034309", "0056978", "1514522", "0062765"].map { "fgvc_aircraft/images/\($0).jpg" })
    }

    func testFGVCAircraftFromVariantFiles() throws {
        let t = try ReadersTempTree()
        try makeAircraft(t)
        let s = try loadDataset(.fgvcAircraft, root: t.root, verifyImages: true)
        XCTAssertEqual(s.classNames, ["707-320", "A300B4", "Falcon 2000", "F/A-18"])
        XCTAssertEqual(s.train, [Datum(path: "1025794.jpg", label: 0, className: "707-320"),
                                 Datum(path: "0034309.jpg", label: 2, className: "Falcon 2000")])
        XCTAssertEqual(s.val, [Datum(path: "0056978.jpg", label: 3, className: "F/A-18")])
        XCTAssertEqual(s.test.map(\.label), [1, 0])
        XCTAssertEqual(s.template, "a photo of a {}, a type of aircraft.")
    }

    func testFGVCAircraftErrors() throws {
        let t = try ReadersTempTree()
        try makeAircraft(t)
        try t.write("fgvc_aircraft/images_variant_val.txt", text: "0056978 F/A-18\n0056979 Boeing 797\n")
        var e = readersError { try loadDataset(.fgvcAircraft, root: t.root) }
        XCTAssertEqual(e?.kind, .inconsistent)
        assertReadersMessage(e?.message, ["images_variant_val.txt:2: variant 'Boeing 797' is not in", "variants.txt"])
        try FileManager.default.removeItem(at: t.url("fgvc_aircraft/images_variant_test.txt"))
        try t.write("fgvc_aircraft/images_variant_val.txt", text: "0056978 F/A-18\n")
        e = readersError { try loadDataset(.fgvcAircraft, root: t.root) }
        XCTAssertEqual(e?.kind, .missingFile)
        assertReadersMessage(e?.message, ["missing \(t.url("fgvc_aircraft/images_variant_test.txt").path)", "fgvc-aircraft-2013b.tar.gz"])
    }

    // MARK: Image folder

    func testImageFolderWithoutSplitsIsAllTest() throws {
        let t = try ReadersTempTree()
        try t.touch(["pics/zebra/1.jpg", "pics/cat/b.PNG", "pics/cat/a.jpeg", "pics/cat/notes.txt", "pics/cat/more/c.jpg", "pics/.hidden/x.jpg"])
        let s = try loadDataset(.imageFolder, root: t.url("pics"))
        XCTAssertEqual(s.name, "pics")
        XCTAssertEqual(s.classNames, ["cat", "zebra"])
        XCTAssertEqual(s.test.map(\.path), ["cat/a.jpeg", "cat/b.PNG", "cat/more/c.jpg", "zebra/1.jpg"])
        XCTAssertEqual(s.test.map(\.label), [0, 0, 0, 1])
        XCTAssertEqual(s.train, [])
        XCTAssertEqual(s.template, "a photo of a {}.")
    }

    func testImageFolderWithSplitFoldersSharesLabels() throws {
        let t = try ReadersTempTree()
        try t.touch(["d/train/cat/1.jpg", "d/train/dog/2.jpg", "d/test/dog/3.jpg", "d/test/emu/4.png"])
        let s = try loadDataset(.imageFolder, root: t.url("d"))
        XCTAssertEqual(s.classNames, ["cat", "dog", "emu"])
        XCTAssertEqual(s.train, [Datum(path: "train/cat/1.jpg", label: 0, className: "cat"), Datum(path: "train/dog/2.jpg", label: 1, className: "dog")])
        XCTAssertEqual(s.val, [])
        XCTAssertEqual(s.test, [Datum(path: "test/dog/3.jpg", label: 1, className: "dog"), Datum(path: "test/emu/4.png", label: 2, className: "emu")])
    }

    func testImageFolderErrors() throws {
        let t = try ReadersTempTree()
        var e = readersError { try loadDataset(.imageFolder, root: t.url("absent")) }
        assertReadersMessage(e?.message, ["image folder \(t.url("absent").path) does not exist", "<class>/<image>"])
        try t.touch(["flat/a.jpg"])
        e = readersError { try loadDataset(.imageFolder, root: t.url("flat")) }
        assertReadersMessage(e?.message, ["no class folders in \(t.url("flat").path)"])
        try t.touch(["txt/a/readme.txt"])
        e = readersError { try loadDataset(.imageFolder, root: t.url("txt")) }
        XCTAssertEqual(e?.kind, .missingImages)
        assertReadersMessage(e?.message, ["hold no images"])
    }

    // MARK: Image sources

    func testFileImageSourceDecodesTheListedFile() throws {
        let t = try ReadersTempTree()
        let pixels: [UInt8] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
        try t.write("imgs/rgb/a.png", FileFixtures.makePNG(width: 2, height: 2, pixels: pixels))
        let d = try openDataset(.imageFolder, root: t.url("imgs"))
        XCTAssertTrue(d.images is FileImageSource)
        let image = try d.images.image(for: d.splits.test[0])
        XCTAssertEqual(image.width, 2)
        XCTAssertEqual(image.height, 2)
        XCTAssertEqual(image.pixels, pixels)
        let e = readersError { try d.images.image(for: Datum(path: "rgb/gone.png", label: 0, className: "rgb")) }
        XCTAssertEqual(e?.kind, .missingImages)
        assertReadersMessage(e?.message, ["missing image \(t.url("imgs/rgb/gone.png").path) (rgb, label 0)"])
    }
}
