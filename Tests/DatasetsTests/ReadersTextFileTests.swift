import Foundation
import XCTest
@testable import Datasets

/// The readers' text files with Windows / old-Mac line ends, byte-order marks and missing final
/// newlines (issue 12), the malformed lines they refuse, and a whole CoOp-layout root read through
/// `select` against its CRLF copy.
final class ReadersTextFileTests: XCTestCase {

    /// How a text file is written: its line end, whether the last line ends, whether a BOM leads.
    struct Style: CustomStringConvertible {
        var end: String
        var finalNewline = true
        var bom = false
        var description: String {
            "\(end.unicodeScalars.map { $0 == "\r" ? "CR" : "LF" }.joined())\(finalNewline ? "" : " no final newline")\(bom ? " BOM" : "")"
        }
        static let all: [Style] = [
            Style(end: "\n"), Style(end: "\r\n"), Style(end: "\r"), Style(end: "\n", finalNewline: false),
            Style(end: "\r\n", finalNewline: false), Style(end: "\r", finalNewline: false),
            Style(end: "\n", bom: true), Style(end: "\r\n", bom: true), Style(end: "\r\n", finalNewline: false, bom: true),
        ]

        /// `text` (LF lines, ending in "\n") in this style.
        func bytes(_ text: String) -> [UInt8] {
            var lines = text.components(separatedBy: "\n")
            if lines.last == "" { lines.removeLast() }
            var out = lines.joined(separator: end)
            if finalNewline { out += end }
            return (bom ? [0xEF, 0xBB, 0xBF] : []) + Array(out.utf8)
        }
    }

    // MARK: The shared line reader

    func testSplitLinesHandlesEveryLineEnd() {
        func lines(_ s: String, bom: Bool = false) -> [String] {
            DatasetFiles.splitLines((bom ? [0xEF, 0xBB, 0xBF] : []) + Array(s.utf8))
        }
        XCTAssertEqual(lines("a\nb\n"), ["a", "b"])
        XCTAssertEqual(lines("a\r\nb\r\n"), ["a", "b"])
        XCTAssertEqual(lines("a\rb\r"), ["a", "b"])
        XCTAssertEqual(lines("a\nb"), ["a", "b"])
        XCTAssertEqual(lines("a\r\nb"), ["a", "b"])
        XCTAssertEqual(lines("a\rb"), ["a", "b"])
        XCTAssertEqual(lines("a\r\nb\nc\rd"), ["a", "b", "c", "d"], "mixed line ends")
        XCTAssertEqual(lines("a\r\n\r\nb\r\n"), ["a", "", "b"], "a blank CRLF line is one blank line")
        XCTAssertEqual(lines("a\n\r\nb"), ["a", "", "b"])
        XCTAssertEqual(lines("a\r\rb"), ["a", "", "b"])
        XCTAssertEqual(lines("x y\r\n", bom: true), ["x y"])
        XCTAssertEqual(lines("", bom: true), [])
        XCTAssertEqual(lines(""), [])
        XCTAssertEqual(lines("\n"), [""])
        XCTAssertEqual(lines("\r\n"), [""])
        XCTAssertEqual(lines("caf\u{E9} au lait\r\nn01 \u{1F41F}\r\n"), ["caf\u{E9} au lait", "n01 \u{1F41F}"])
        XCTAssertEqual(lines("a\u{FEFF}b\n"), ["a\u{FEFF}b"], "only a leading BOM is dropped")
    }

    // MARK: Each reader in every style

    let classnames = "n03000000 tench fish\nn01000000 goldfish\nn02000000 great white shark\n"

    func testImageNetClassnamesInEveryStyle() throws {
        let t = try ReadersTempTree()
        try t.touch(["train/n01000000/a.JPEG", "train/n02000000/c.JPEG", "train/n03000000/d.JPEG",
                     "val/n01000000/v1.JPEG", "val/n02000000/v2.JPEG", "val/n03000000/v3.JPEG"].map { "imagenet/images/" + $0 })
        for style in Style.all {
            try t.write("imagenet/classnames.txt", style.bytes(classnames))
            let s = try loadDataset(.imageNet, root: t.root)
            XCTAssertEqual(s.classNames, ["goldfish", "great white shark", "tench fish"], "\(style)")
            XCTAssertEqual(s.train.map(\.className), ["goldfish", "great white shark", "tench fish"], "\(style)")
            XCTAssertEqual(try readImageNetClassNames(t.url("imagenet/classnames.txt")).map(\.wnid),
                           ["n03000000", "n01000000", "n02000000"], "\(style)")
        }
    }

    func testImageNetVariantClassnamesInEveryStyle() throws {
        let t = try ReadersTempTree()
        for k in 0..<3 { try t.touch(["imagenetv2/imagenetv2-matched-frequency-format-val/\(k)/x.jpeg"]) }
        try t.touch(["imagenet-sketch/images/n01000000/s.jpg", "imagenet-sketch/images/n02000000/s.jpg",
                     "imagenet-sketch/images/n03000000/s.jpg", "imagenet-adversarial/imagenet-a/n02000000/a.jpg",
                     "imagenet-rendition/imagenet-r/n03000000/r.jpg", "imagenet-rendition/imagenet-r/n01000000/r.jpg"])
        let expected: [(DatasetName, String, [String])] = [
            (.imageNetV2, "imagenetv2", ["tench fish", "goldfish", "great white shark"]),
            (.imageNetSketch, "imagenet-sketch", ["goldfish", "great white shark", "tench fish"]),
            (.imageNetA, "imagenet-adversarial", ["great white shark"]),
            (.imageNetR, "imagenet-rendition", ["goldfish", "tench fish"]),
        ]
        for style in Style.all {
            for (name, folder, names) in expected {
                try t.write("\(folder)/classnames.txt", style.bytes(classnames))
                let s = try loadDataset(name, root: t.root)
                XCTAssertEqual(s.classNames, names, "\(name.rawValue) \(style)")
                XCTAssertEqual(s.test.map(\.className), names, "\(name.rawValue) \(style)")
            }
        }
    }

    func makeAircraft(_ t: ReadersTempTree, _ style: Style) throws {
        try t.write("fgvc_aircraft/variants.txt", style.bytes("707-320\nA300B4\nFalcon 2000\nF/A-18\n"))
        try t.write("fgvc_aircraft/images_variant_train.txt", style.bytes("1025794 707-320\n0034309 Falcon 2000\n"))
        try t.write("fgvc_aircraft/images_variant_val.txt", style.bytes("0056978 F/A-18\n"))
        try t.write("fgvc_aircraft/images_variant_test.txt", style.bytes("1514522 A300B4\n0062765 707-320\n"))
        try t.touch(["1025794", "0034309", "0056978", "1514522", "0062765"].map { "fgvc_aircraft/images/\($0).jpg" })
    }

    func testFGVCAircraftFilesInEveryStyle() throws {
        for style in Style.all {
            let t = try ReadersTempTree()
            try makeAircraft(t, style)
            let s = try loadDataset(.fgvcAircraft, root: t.root, verifyImages: true)
            XCTAssertEqual(s.classNames, ["707-320", "A300B4", "Falcon 2000", "F/A-18"], "\(style)")
            XCTAssertEqual(s.train, [Datum(path: "1025794.jpg", label: 0, className: "707-320"),
                                     Datum(path: "0034309.jpg", label: 2, className: "Falcon 2000")], "\(style)")
            XCTAssertEqual(s.val, [Datum(path: "0056978.jpg", label: 3, className: "F/A-18")], "\(style)")
            XCTAssertEqual(s.test.map(\.label), [1, 0], "\(style)")
        }
    }

    func testSplitJSONInEveryStyle() throws {
        let json = """
        {"train": [["Abyssinian_1.jpg", 0, "abyssinian"], ["beagle_2.jpg", 1, "beagle"]],
         "val": [["boxer_3.jpg", 2, "boxer"]],
         "test": [["boxer_4.jpg", 2, "boxer"]]}

        """
        let t = try ReadersTempTree()
        try t.touch(["Abyssinian_1.jpg", "beagle_2.jpg", "boxer_3.jpg", "boxer_4.jpg"].map { "oxford_pets/images/" + $0 })
        for style in Style.all {
            try t.write("oxford_pets/split_zhou_OxfordPets.json", style.bytes(json))
            let s = try loadDataset(.oxfordPets, root: t.root)
            XCTAssertEqual(s.classNames, ["abyssinian", "beagle", "boxer"], "\(style)")
            XCTAssertEqual(s.train.map(\.path), ["Abyssinian_1.jpg", "beagle_2.jpg"], "\(style)")
        }
    }

    // MARK: Refused lines

    func testImageNetClassnamesWithAWnidTwiceIsRefused() throws {
        let t = try ReadersTempTree()
        try t.touch(["imagenet/images/train/n01000000/a.JPEG", "imagenet/images/train/n02000000/b.JPEG",
                     "imagenet-sketch/images/n01000000/s.jpg"])
        for style in [Style(end: "\n"), Style(end: "\r\n", bom: true)] {
            try t.write("imagenet/classnames.txt", style.bytes("n01000000 goldfish\nn02000000 shark\n\nn01000000 carp\n"))
            var e = readersError { try loadDataset(.imageNet, root: t.root) }
            XCTAssertEqual(e?.kind, .malformedFile)
            assertReadersMessage(e?.message, ["\(t.url("imagenet/classnames.txt").path):4: wnid n01000000 is listed again (first at line 1)"])
            try t.write("imagenet-sketch/classnames.txt", style.bytes("n01000000 goldfish\nn01000000 goldfish\n"))
            e = readersError { try loadDataset(.imageNetSketch, root: t.root) }
            assertReadersMessage(e?.message, ["\(t.url("imagenet-sketch/classnames.txt").path):2: wnid n01000000 is listed again (first at line 1)"])
        }
    }

    func testFGVCVariantsWithABlankLineInsideIsRefused() throws {
        for style in [Style(end: "\n"), Style(end: "\r\n"), Style(end: "\r", finalNewline: false, bom: true)] {
            let t = try ReadersTempTree()
            try makeAircraft(t, style)
            try t.write("fgvc_aircraft/variants.txt", style.bytes("707-320\nA300B4\n\nFalcon 2000\nF/A-18\n"))
            var e = readersError { try loadDataset(.fgvcAircraft, root: t.root) }
            XCTAssertEqual(e?.kind, .malformedFile, "\(style)")
            assertReadersMessage(e?.message, ["\(t.url("fgvc_aircraft/variants.txt").path):3: blank line among the variants"])
            // A line of spaces is blank too.
            try t.write("fgvc_aircraft/variants.txt", style.bytes("707-320\n  \nA300B4\nFalcon 2000\nF/A-18\n"))
            e = readersError { try loadDataset(.fgvcAircraft, root: t.root) }
            assertReadersMessage(e?.message, ["variants.txt:2: blank line"])
            // Blank lines at the end shift no label: ignored.
            try t.write("fgvc_aircraft/variants.txt", style.bytes("707-320\nA300B4\nFalcon 2000\nF/A-18\n\n\n"))
            XCTAssertEqual(try loadDataset(.fgvcAircraft, root: t.root).classNames.count, 4, "\(style)")
            // A variant listed twice.
            try t.write("fgvc_aircraft/variants.txt", style.bytes("707-320\nA300B4\nFalcon 2000\nA300B4\nF/A-18\n"))
            e = readersError { try loadDataset(.fgvcAircraft, root: t.root) }
            assertReadersMessage(e?.message, ["variants.txt:4: variant 'A300B4' is listed again (first at line 2)"])
        }
    }

    // MARK: A whole root against its CRLF copy

    /// A CoOp-layout root with a split-file dataset, FGVCAircraft, ImageNet and its four variants.
    static func makeCoOpRoot(_ t: ReadersTempTree) throws {
        let pets = ["abyssinian", "beagle", "boxer", "pug", "saint bernard"]
        func rows(_ split: String, _ n: Int) -> String {
            (0..<(pets.count * n)).map { i in
                let c = i % pets.count
                return "[\"\(pets[c].replacingOccurrences(of: " ", with: "_"))_\(split)\(i).jpg\", \(c), \"\(pets[c])\"]"
            }.joined(separator: ",\n  ")
        }
        try t.write("oxford_pets/split_zhou_OxfordPets.json",
                    text: "{\"train\": [\n  \(rows("tr", 5))\n],\n\"val\": [\n  \(rows("va", 3))\n],\n\"test\": [\n  \(rows("te", 2))\n]}\n")
        for split in ["tr", "va", "te"] {
            for i in 0..<(pets.count * 5) {
                try t.touch(["oxford_pets/images/\(pets[i % pets.count].replacingOccurrences(of: " ", with: "_"))_\(split)\(i).jpg"])
            }
        }
        let variants = ["707-320", "A300B4", "Falcon 2000", "F/A-18", "DHC-8-100"]
        try t.write("fgvc_aircraft/variants.txt", text: variants.joined(separator: "\n") + "\n")
        for (split, n) in [("train", 4), ("val", 3), ("test", 2)] {
            var lines: [String] = []
            for i in 0..<(variants.count * n) {
                let id = String(format: "%07d", 1000 * (split.count) + i)
                lines.append("\(id) \(variants[(i * 3) % variants.count])")
                try t.touch(["fgvc_aircraft/images/\(id).jpg"])
            }
            try t.write("fgvc_aircraft/images_variant_\(split).txt", text: lines.joined(separator: "\n") + "\n")
        }
        let table = [("n05000000", "pug dog"), ("n01000000", "goldfish"), ("n03000000", "tench"),
                     ("n02000000", "great white shark"), ("n04000000", "caf\u{E9} au lait")]
        let classnames = table.map { "\($0.0) \($0.1)" }.joined(separator: "\n") + "\n"
        try t.write("imagenet/classnames.txt", text: classnames)
        for (w, _) in table {
            for j in 0..<5 { try t.touch(["imagenet/images/train/\(w)/\(w)_\(j).JPEG"]) }
            for j in 0..<2 { try t.touch(["imagenet/images/val/\(w)/val_\(w)_\(j).JPEG"]) }
            try t.touch(["imagenet-sketch/images/\(w)/sketch_\(w).jpg"])
        }
        for k in 0..<table.count { try t.touch(["imagenetv2/imagenetv2-matched-frequency-format-val/\(k)/v2_\(k).jpeg"]) }
        for w in ["n02000000", "n04000000", "n05000000"] { try t.touch(["imagenet-adversarial/imagenet-a/\(w)/a.jpg"]) }
        for w in ["n01000000", "n03000000", "n04000000"] { try t.touch(["imagenet-rendition/imagenet-r/\(w)/r.jpg"]) }
        for folder in ["imagenetv2", "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition"] {
            try t.write("\(folder)/classnames.txt", text: classnames)
        }
    }

    /// A copy of `from` where every .txt and .json file has CRLF line ends (and the .txt files a BOM
    /// and no final line end).
    static func crlfCopy(of from: URL, to: URL) throws {
        let fm = FileManager.default
        try fm.copyItem(at: from, to: to)
        let walker = fm.enumerator(atPath: to.path)!
        while let rel = walker.nextObject() as? String {
            let ext = (rel as NSString).pathExtension
            guard ext == "txt" || ext == "json" else { continue }
            let url = to.appendingPathComponent(rel)
            let text = try String(contentsOf: url, encoding: .utf8)
            var out = text.replacingOccurrences(of: "\n", with: "\r\n")
            var bytes: [UInt8] = []
            if ext == "txt" {
                if out.hasSuffix("\r\n") { out.removeLast() }  // "\r\n" is one Character
                bytes = [0xEF, 0xBB, 0xBF]
            }
            bytes += Array(out.utf8)
            XCTAssertTrue(bytes.contains(0x0D))
            try Data(bytes).write(to: url)
        }
    }

    func testSelectOnACRLFCopyEqualsTheLFRoot() throws {
        let lf = try ReadersTempTree(), crlf = try ReadersTempTree()
        try Self.makeCoOpRoot(lf)
        let copy = crlf.url("data")
        try Self.crlfCopy(of: lf.root, to: copy)
        let raw = try Data(contentsOf: copy.appendingPathComponent("imagenet/classnames.txt"))
        XCTAssertEqual(Array(raw.prefix(3)), [0xEF, 0xBB, 0xBF])
        XCTAssertTrue(String(decoding: raw, as: UTF8.self).contains("\r\n"))
        var compared = 0
        for name in [DatasetName.oxfordPets, .fgvcAircraft, .imageNet, .imageNetV2, .imageNetSketch, .imageNetA, .imageNetR] {
            let a = try loadDataset(name, root: lf.root, verifyImages: true)
            let b = try loadDataset(name, root: copy, verifyImages: true)
            XCTAssertFalse(a.test.isEmpty, name.rawValue)
            for shots in [nil, 1, 2] as [Int?] {
                for seed in [1, 2] {
                    for subset in ClassSubset.allCases {
                        let o = SelectionOptions(shots: shots, seed: seed, subset: subset)
                        let x = try select(a, dataset: name, options: o), y = try select(b, dataset: name, options: o)
                        let what = "\(name.rawValue) shots \(shots.map(String.init) ?? "all") seed \(seed) \(subset)"
                        XCTAssertEqual(x.train, y.train, what)
                        XCTAssertEqual(x.val, y.val, what)
                        XCTAssertEqual(x.test, y.test, what)
                        XCTAssertEqual(x.classNames, y.classNames, what)
                        XCTAssertEqual(x.imageNetClasses, y.imageNetClasses, what)
                        XCTAssertFalse(x.test.isEmpty, what)
                        compared += 1
                    }
                }
            }
        }
        XCTAssertEqual(compared, 7 * 3 * 2 * 3)
    }
}
