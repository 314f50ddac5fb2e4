import Foundation
import TestSupport
import XCTest
@testable import Datasets

/// IDX files and Fashion-MNIST.
final class ReadersIDXTests: XCTestCase {
    // MARK: IDX

    func testIDXRawAndGzip() throws {
        let t = try ReadersTempTree()
        let data = (0..<24).map { UInt8($0 * 10) }
        let idx = FileFixtures.makeIDX(shape: [2, 3, 4], data: data)
        let raw = try t.write("a-idx3-ubyte", idx)
        let gz = try t.write("a-idx3-ubyte.gz", FileFixtures.gzipStored(idx))
        let two = try t.write("two.gz", FileFixtures.gzipStored(Array(idx[..<10])) + FileFixtures.gzipStored(Array(idx[10...])))
        for url in [raw, gz, two] {
            let a = try readIDX(url)
            XCTAssertEqual(a.shape, [2, 3, 4], url.lastPathComponent)
            XCTAssertEqual(a.data, data, url.lastPathComponent)
            XCTAssertEqual(a.count, 2)
            XCTAssertEqual(a.itemSize, 12)
        }
        let labels = try readIDX(t.write("l.gz", FileFixtures.gzipStored(FileFixtures.makeIDX(shape: [3], data: [7, 0, 9]))))
        XCTAssertEqual(labels.shape, [3])
        XCTAssertEqual(labels.data, [7, 0, 9])
    }

    func testIDXWithRealDeflateWhenGzipIsInstalled() throws {
        guard let gzip = ["/usr/bin/gzip", "/bin/gzip"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("no gzip binary")
        }
        let t = try ReadersTempTree()
        let data: [UInt8] = (0..<5000).map { (i: Int) -> UInt8 in UInt8((i * 7 + i / 13) % 256) }
        let file = try t.write("x-idx1-ubyte", FileFixtures.makeIDX(shape: [5000], data: data))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: gzip)
        p.arguments = ["-9", file.path]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertEqual(try readIDX(t.url("x-idx1-ubyte.gz")).data, data)
    }

    func testIDXErrors() throws {
        let t = try ReadersTempTree()
        let idx = FileFixtures.makeIDX(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])
        var e = readersError { try parseIDX(Array(idx.dropLast()), source: "f") }
        XCTAssertEqual(e?.kind, .malformedFile)
        assertReadersMessage(e?.message, ["f: IDX shape [2, 3] needs 6 data bytes, the file has 5 (truncated: download it again)"])
        e = readersError { try parseIDX([0x1F, 0x8B, 8, 0], source: "f") }
        assertReadersMessage(e?.message, ["f is not an IDX file"])
        e = readersError { try parseIDX([0, 0, 0x0D, 1, 0, 0, 0, 0], source: "f") }
        assertReadersMessage(e?.message, ["IDX element type 0xd is not supported"])
        let cut = FileFixtures.gzipStored(idx).dropLast(12)
        let url = try t.write("cut.gz", Array(cut))
        e = readersError { try readIDX(url) }
        assertReadersMessage(e?.message, ["\(url.path): the gzip data end early"])
        var corrupt = FileFixtures.gzipStored(idx)
        corrupt[10] = 0x07  // an invalid block type
        e = readersError { try readIDX(t.write("bad.gz", corrupt)) }
        assertReadersMessage(e?.message, ["corrupt gzip data"])
        e = readersError { try readIDX(t.url("absent.gz")) }
        XCTAssertEqual(e?.kind, .missingFile)
    }

    // MARK: Fashion-MNIST, fake

    /// A fake Fashion-MNIST: 29 train images (20 of class 0, so that its last 10% is 2 val images;
    /// one of each other class, whose 10% rounds to none), 10 test images; pixel = (index + offset) % 256.
    func makeFakeFashion(_ dir: URL, gzip: Bool) throws {
        let trainLabels: [UInt8] = Array(repeating: 0, count: 20) + (1...9).map { UInt8($0) }
        let testLabels: [UInt8] = (0..<10).map { UInt8(9 - $0) }
        func images(_ n: Int) -> [UInt8] { (0..<(n * 784)).map { (i: Int) -> UInt8 in UInt8((i / 784 + i % 784) % 256) } }
        let files: [(String, [UInt8])] = [
            ("train-images-idx3-ubyte", FileFixtures.makeIDX(shape: [trainLabels.count, 28, 28], data: images(trainLabels.count))),
            ("train-labels-idx1-ubyte", FileFixtures.makeIDX(shape: [trainLabels.count], data: trainLabels)),
            ("t10k-images-idx3-ubyte", FileFixtures.makeIDX(shape: [10, 28, 28], data: images(10))),
            ("t10k-labels-idx1-ubyte", FileFixtures.makeIDX(shape: [10], data: testLabels)),
        ]
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, bytes) in files {
            try Data(gzip ? FileFixtures.gzipStored(bytes) : bytes).write(to: dir.appendingPathComponent(gzip ? name + ".gz" : name))
        }
    }

    func testFakeFashionMNISTSplitsAndImages() throws {
        for gzip in [true, false] {
            let t = try ReadersTempTree()
            try makeFakeFashion(t.url("fashion-mnist"), gzip: gzip)
            let d = try openDataset(.fashionMNIST, root: t.root)
            let s = d.splits
            XCTAssertEqual(s.imageRoot.path, t.url("fashion-mnist").path)
            XCTAssertEqual(s.classNames, FashionMNIST.classNames)
            XCTAssertEqual(s.template, "a photo of a {}.")
            // Class 0 has 20 train images: its last 2 (indices 18, 19) are val.
            XCTAssertEqual(s.val, [Datum(path: "train/00018", label: 0, className: "T-shirt/top"),
                                   Datum(path: "train/00019", label: 0, className: "T-shirt/top")])
            XCTAssertEqual(s.train.count, 27)
            XCTAssertEqual(s.train.last, Datum(path: "train/00028", label: 9, className: "Ankle boot"))
            XCTAssertEqual(s.test.first, Datum(path: "test/00000", label: 9, className: "Ankle boot"))
            let image = try d.images.image(for: s.test[3])
            XCTAssertEqual(image.width, 28)
            XCTAssertEqual(image.height, 28)
            XCTAssertEqual(image[x: 5, y: 1].r, UInt8((3 + 28 + 5) % 256))
            XCTAssertEqual(image[x: 5, y: 1].g, image[x: 5, y: 1].r)
            XCTAssertEqual(image[x: 5, y: 1].b, image[x: 5, y: 1].r)
            let source = try XCTUnwrap(d.images as? FashionMNIST)
            XCTAssertEqual(try fashionMNISTImage(s.val[0], from: source), try source.image(for: s.val[0]))
            let e = readersError { try d.images.image(for: Datum(path: "train/00029", label: 0, className: "")) }
            XCTAssertEqual(e?.kind, .missingImages)
            assertReadersMessage(e?.message, ["Fashion-MNIST has no image 'train/00029' (expected train/<0..<29> or test/<0..<10>)"])
        }
    }

    func testFashionMNISTLocationsAndMissingFiles() throws {
        let t = try ReadersTempTree()
        try makeFakeFashion(t.url("data/FashionMNIST/raw"), gzip: false)
        XCTAssertEqual(try FashionMNIST.locate(root: t.url("data"), fallbacks: []).path, t.url("data/FashionMNIST/raw").path)
        try makeFakeFashion(t.url("flat"), gzip: true)
        XCTAssertEqual(try FashionMNIST.locate(root: t.url("flat"), fallbacks: []).path, t.url("flat").path)

        var e = readersError { try FashionMNIST.locate(root: t.url("none"), fallbacks: [t.url("also-none")]) }
        XCTAssertEqual(e?.kind, .missingFile)
        assertReadersMessage(e?.message, ["no Fashion-MNIST IDX files in \(t.url("none/fashion-mnist").path)", t.url("also-none").path,
                                          "train-images-idx3-ubyte.gz", "apt-get install dataset-fashion-mnist"])
        try FileManager.default.removeItem(at: t.url("flat/t10k-labels-idx1-ubyte.gz"))
        e = readersError { try FashionMNIST.locate(root: t.url("flat"), fallbacks: []) }
        assertReadersMessage(e?.message, ["\(t.url("flat").path) lacks t10k-labels-idx1-ubyte[.gz]", "apt-get install dataset-fashion-mnist"])
    }

    // MARK: Fashion-MNIST, Debian's files

    func testDebianFashionMNIST() throws {
        guard (try? FashionMNIST.locate(root: nil, fallbacks: [FashionMNIST.debianDirectory])) != nil else {
            throw XCTSkip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
        }
        let d = try openDataset(.fashionMNIST, root: URL(fileURLWithPath: "/nonexistent"))
        let s = d.splits
        XCTAssertEqual(s.imageRoot.path, FashionMNIST.debianDirectory.path)
        XCTAssertEqual(s.train.count + s.val.count, 60000)
        XCTAssertEqual(s.train.count, 54000)
        XCTAssertEqual(s.val.count, 6000)
        XCTAssertEqual(s.test.count, 10000)
        func histogram(_ items: [Datum]) -> [Int] {
            var h = [Int](repeating: 0, count: 10)
            for i in items { h[i.label] += 1 }
            return h
        }
        XCTAssertEqual(histogram(s.train), [Int](repeating: 5400, count: 10))
        XCTAssertEqual(histogram(s.val), [Int](repeating: 600, count: 10))
        XCTAssertEqual(histogram(s.test), [Int](repeating: 1000, count: 10))
        XCTAssertTrue(Set(s.train.map(\.path)).isDisjoint(with: s.val.map(\.path)))
        // Values read with Python (gzip + numpy) from the Debian files.
        XCTAssertEqual(s.train.prefix(10).map(\.label), [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
        XCTAssertEqual(s.test.prefix(10).map(\.label), [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
        XCTAssertEqual(s.train[0], Datum(path: "train/00000", label: 9, className: "Ankle boot"))

        let first = try d.images.image(for: s.train[0])
        XCTAssertEqual(first.width, 28)
        XCTAssertEqual(first.height, 28)
        let gray = stride(from: 0, to: first.pixels.count, by: 3).map { first.pixels[$0] }
        let px = first.pixels
        for i in stride(from: 0, to: px.count, by: 3) where px[i] != px[i + 1] || px[i] != px[i + 2] {
            XCTFail("pixel \(i / 3) is not gray")
            break
        }
        XCTAssertEqual(gray.reduce(0) { $0 + Int($1) }, 76247)
        XCTAssertEqual(Array(gray[(10 * 28)..<(11 * 28)]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 193, 228, 218, 213, 198, 180, 212, 210, 211, 213, 223, 220, 243, 202, 0])
        XCTAssertEqual(gray.indices.filter { gray[$0] != 0 }.prefix(5), [96, 99, 100, 103, 104])

        let test0 = try d.images.image(for: s.test[0])
        let testGray = stride(from: 0, to: test0.pixels.count, by: 3).map { test0.pixels[$0] }
        XCTAssertEqual(testGray.reduce(0) { $0 + Int($1) }, 33456)
        XCTAssertEqual(Array(testGray[(14 * 28)..<(15 * 28)]), [0, 0, 0, 0, 0, 0, 2, 4, 1, 0, 0, 0, 98, 136, 110, 109, 110, 162, 135, 144, 149, 159, 167, 144, 158, 169, 119, 0])
        let last = try d.images.image(for: Datum(path: "train/59999", label: 5, className: "Sandal"))
        let lastSum = stride(from: 0, to: last.pixels.count, by: 3).reduce(0) { (sum: Int, i: Int) -> Int in sum + Int(last.pixels[i]) }
        XCTAssertEqual(lastSum, 16684)
        let source = try XCTUnwrap(d.images as? FashionMNIST)
        XCTAssertEqual(source.trainImages.data.reduce(0) { $0 + Int($1) }, 3_431_114_169)
        XCTAssertEqual(source.testImages.data.reduce(0) { $0 + Int($1) }, 573_469_082)
    }
}
