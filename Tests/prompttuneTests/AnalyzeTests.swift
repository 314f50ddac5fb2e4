import CLIP
import Features
import Foundation
import TensorCore
import TestSupport
import XCTest
@testable import prompttune

final class AnalyzeTests: XCTestCase {
    /// `analyze --json` on the tiny model and a small random features file prints exactly the
    /// documented keys, and an empty class is refused with its name.
    func testAnalyzeJSONKeys() throws {
        let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path
        let dim = try CLIPModel.load(path: tiny).config.embedDim
        var rng = SeededGenerator(seed: 4)
        let labels = [0, 1, 2, 0, 1, 2, 0, 2]
        let data = (0..<(labels.count * dim)).map { _ in Float.random(in: -1...1, using: &rng) }
        let dir = try makeTempDir(self)
        let path = dir.appendingPathComponent("f.safetensors").path
        try FeatureSet(features: Tensor(shape: [1, labels.count, dim], data: data), labels: labels,
                       classNames: ["cat", "golden_retriever", "bird"], provenance: ["template": "a photo of a {}."])
            .write(to: URL(fileURLWithPath: path))
        let cmd = try XCTUnwrap(try PromptTune.parseAsRoot(["analyze", "--model", tiny, "--features", path, "--json"]) as? Analyze)
        let json = try analysisJSON(cmd.report().report)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["accuracy", "image", "nc3", "nc4", "text"])
        XCTAssertEqual(Set((object["image"] as? [String: Any] ?? [:]).keys), ["nc1", "equinorm", "equiangularity", "max_angle", "etf_error"])
        XCTAssertEqual(Set((object["text"] as? [String: Any] ?? [:]).keys), ["equinorm", "equiangularity", "max_angle", "etf_error"])
        XCTAssertTrue(json.hasPrefix("{\"accuracy\":"), json)  // sorted keys

        let gap = dir.appendingPathComponent("gap.safetensors").path
        try FeatureSet(features: Tensor(shape: [1, labels.count, dim], data: data), labels: labels.map { $0 == 1 ? 0 : $0 },
                       classNames: ["cat", "golden_retriever", "bird"]).write(to: URL(fileURLWithPath: gap))
        let bad = try XCTUnwrap(try PromptTune.parseAsRoot(["analyze", "--model", tiny, "--features", gap]) as? Analyze)
        XCTAssertThrowsError(try bad.report()) { XCTAssertTrue("\($0)".contains("no images of class 1 (golden_retriever)"), "\($0)") }
    }
}
