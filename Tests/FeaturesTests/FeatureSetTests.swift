import Foundation
import TensorCore
import TensorIO
@testable import Features
import TestSupport
import XCTest

final class FeatureSetTests: XCTestCase {
    func testRoundTripKeepsEverything() throws {
        var rng = SeededGenerator(seed: 1)
        let set = FeatureSet(features: .randomNormal([2, 5, 4], using: &rng), labels: [0, 2, 1, 2, 0],
                             classNames: ["cat", "dog \"quoted\"", "café"], provenance: ["model_digest": "abc", "split": "train"])
        let url = try makeTempDir(self).appendingPathComponent("a.safetensors")
        try set.write(to: url)
        let back = try FeatureSet.read(path: url.path)
        XCTAssertEqual(back, set)
        XCTAssertEqual(back.view(1).shape, [5, 4])
        XCTAssertEqual(back.view(1)[0], set.features[20])
    }

    func testRejectsOtherSafetensorsWithAHint() throws {
        let url = try makeTempDir(self).appendingPathComponent("b.safetensors")
        try Safetensors.write(tensors: ["x": Tensor(zeros: [2])], to: url)
        XCTAssertThrowsError(try FeatureSet.read(path: url.path)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(url.path) && text.contains("not a PromptTune features file") && text.contains("written by feature extraction"), text)
        }
    }

    func testLabelsOutOfRangeAreRefusedOnWrite() throws {
        let set = FeatureSet(features: Tensor(zeros: [1, 2, 3]), labels: [0, 5], classNames: ["a", "b"])
        let url = try makeTempDir(self).appendingPathComponent("c.safetensors")
        XCTAssertThrowsError(try set.write(to: url)) { XCTAssertTrue("\($0)".contains("labels must lie in 0..<2"), "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path), "nothing is written")
    }

    func testDigestDistinguishesContent() {
        let a = [UInt8](repeating: 1, count: 100), b = a.enumerated().map { $0.offset == 50 ? 2 : $0.element }
        let da = a.withUnsafeBytes { contentDigest($0) }, db = b.withUnsafeBytes { contentDigest($0) }
        XCTAssertNotEqual(da, db)
        XCTAssertEqual(da.count, 16)
    }
}
