import Foundation

/// A Places-LT in PromptTune's long-tailed layout (`places_lt/` with OLTR-format split files, a
/// Places365-style `categories_places365.txt` and `images/`): class k has `trainCounts[k]` training
/// images and `test` test images, small PNGs of the class's colour with seeded noise (as
/// ``makeSyntheticDTD(in:train:val:test:)``), except that only the first `ownColour[k]` test images of
/// class k (all when nil) have its colour and the rest the next class's, so that a classifier of
/// colours scores each class differently. No `Places_LT_val.txt`: val is empty.
public func makeSyntheticPlacesLT(in root: URL, trainCounts: [Int] = [101, 100, 20, 5], test: Int = 3,
                                  ownColour: [Int]? = nil) throws {
    let categories = ["/a/airfield", "/b/bakery/shop", "/c/canyon", "/d/dam", "/e/elevator/door", "/f/forest_path"]
    precondition(trainCounts.count <= categories.count)
    let colours: [[Double]] = [[220, 40, 40], [40, 200, 60], [50, 60, 210], [200, 200, 40], [40, 200, 200], [200, 40, 200]]
    let dir = root.appendingPathComponent("places_lt")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    var state: UInt64 = 54321
    func noise() -> Double {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Double(state >> 40) / Double(1 << 24) * 60 - 30
    }
    func image(_ rel: String, label: Int, colour: Int? = nil) throws {
        var pixels: [UInt8] = []
        for _ in 0..<(12 * 12) {
            for c in 0..<3 { pixels.append(UInt8(max(0, min(255, colours[colour ?? label][c] + noise())))) }
        }
        let url = dir.appendingPathComponent("images").appendingPathComponent(rel)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(FileFixtures.makePNG(width: 12, height: 12, pixels: pixels)).write(to: url)
    }
    var train = "", testList = ""
    for (label, count) in trainCounts.enumerated() {
        for i in 0..<count {
            let rel = "data_256\(categories[label])/\(String(format: "%08d", i + 1)).jpg"
            try image(rel, label: label)
            train += "\(rel) \(label)\n"
        }
        for i in 0..<test {
            let rel = "val_256/Places365_val_\(String(format: "%08d", label * 100 + i + 1)).jpg"
            let own = i < (ownColour?[label] ?? test)
            try image(rel, label: label, colour: own ? label : (label + 1) % trainCounts.count)
            testList += "\(rel) \(label)\n"
        }
    }
    let names = categories.prefix(trainCounts.count).enumerated().map { "\($0.element) \($0.offset)\n" }.joined()
    try Data(names.utf8).write(to: dir.appendingPathComponent("categories_places365.txt"))
    try Data(train.utf8).write(to: dir.appendingPathComponent("Places_LT_train.txt"))
    try Data(testList.utf8).write(to: dir.appendingPathComponent("Places_LT_test.txt"))
}

/// `root/cifar-100-python/{train,test,meta}`: the genuine-format CIFAR fixture of
/// Goldens/longtailed (reference/make_lt_fixtures.py; 10 classes, 100 train and 3 test images each).
public func makeCIFARFixture(in root: URL) throws {
    let dir = root.appendingPathComponent("cifar-100-python")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    for f in ["train", "test", "meta"] {
        let gz = repoRoot.appendingPathComponent("Goldens/longtailed/cifar-100-python/\(f).gz")
        try Data(contentsOf: gz).write(to: dir.appendingPathComponent(f))
    }
}
