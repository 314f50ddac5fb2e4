import Foundation
import TensorCore
import TensorIO
@testable import Features
import XCTest

final class FeatureSetTests: XCTestCase {
    func temp(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("ptfs-\(UUID().uuidString)-\(name)")
    }

    func testRoundTripKeepsEverything() throws {
        var rng = SeededGenerator(seed: 1)
        let set = FeatureSet(features: .randomNormal([2, 5, 4], using: &rng), labels: [0, 2, 1, 2, 0],
                             classNames: ["cat", "dog \"quoted\"", "café"], provenance: ["model_digest": "abc", "split": "train"])
        let url = temp("a.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try set.write(to: url)
        let back = try FeatureSet.read(path: url.path)
        XCTAssertEqual(back, set)
        XCTAssertEqual(back.view(1).shape, [5, 4])
        XCTAssertEqual(back.view(1)[0], set.features[20])
    }

    func testRejectsOtherSafetensorsWithAHint() throws {
        let url = temp("b.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try Safetensors.write(tensors: ["x": Tensor(zeros: [2])], to: url)
        XCTAssertThrowsError(try FeatureSet.read(path: url.path)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(url.path) && text.contains("prompttune features"), text)
        }
    }

    func testLabelsOutOfRangeAreRefusedOnWrite() {
        let set = FeatureSet(features: Tensor(zeros: [1, 2, 3]), labels: [0, 5], classNames: ["a", "b"])
        XCTAssertThrowsError(try set.write(to: temp("c.safetensors")))
    }

    func testDigestDistinguishesContent() {
        let a = [UInt8](repeating: 1, count: 100), b = a.enumerated().map { $0.offset == 50 ? 2 : $0.element }
        let da = a.withUnsafeBytes { contentDigest($0) }, db = b.withUnsafeBytes { contentDigest($0) }
        XCTAssertNotEqual(da, db)
        XCTAssertEqual(da.count, 16)
    }
}
