import Foundation

/// A CoOp-layout DTD with 4 classes of small PNGs: each class a colour, with seeded noise.
public func makeSyntheticDTD(in root: URL, train: Int = 6, val: Int = 2, test: Int = 3) throws {
    let names = ["banded", "blotchy", "braided", "bubbly"]
    let colours: [[Double]] = [[220, 40, 40], [40, 200, 60], [50, 60, 210], [200, 200, 40]]
    let dir = root.appendingPathComponent("dtd")
    var state: UInt64 = 12345
    func noise() -> Double {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Double(state >> 40) / Double(1 << 24) * 60 - 30
    }
    var split: [String: [[Any]]] = [:]
    for (part, count) in [("train", train), ("val", val), ("test", test)] {
        var rows: [[Any]] = []
        for (label, name) in names.enumerated() {
            for i in 0..<count {
                let rel = "\(name)/\(name)_\(part)_\(i).png"
                var pixels: [UInt8] = []
                for _ in 0..<(12 * 12) {
                    for c in 0..<3 { pixels.append(UInt8(max(0, min(255, colours[label][c] + noise())))) }
                }
                let url = dir.appendingPathComponent("images").appendingPathComponent(rel)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(FileFixtures.makePNG(width: 12, height: 12, pixels: pixels)).write(to: url)
                rows.append([rel, label, name])
            }
        }
        split[part] = rows
    }
    try JSONSerialization.data(withJSONObject: split).write(to: dir.appendingPathComponent("split_zhou_DescribableTextures.json"))
}
