import CLIP
import TestSupport
import XCTest

/// The README states the demonstration model's size as `prompttune info` prints it.
final class ModelSizeDocsTests: XCTestCase {
    func testReadmeParameterCountAgreesWithInfo() throws {
        let weights = try loadCLIPWeights(path: repoRoot.appendingPathComponent("models/fashion-clip/model.pt").path)
        let params = weights.tensors.values.reduce(0) { $0 + $1.count }
        let shown = String(format: "%.1fM", Double(params) / 1e6)
        let readme = try String(contentsOf: repoRoot.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(readme.contains("`models/fashion-clip` is a \(shown)-parameter"), "README should call the model \(shown)-parameter, as `info` does")
        let card = try String(contentsOf: repoRoot.appendingPathComponent("models/fashion-clip/MODEL-CARD.md"), encoding: .utf8)
        var digits = String(params), grouped = ""
        while digits.count > 3 { grouped = "," + digits.suffix(3) + grouped; digits = String(digits.dropLast(3)) }
        XCTAssertTrue(card.contains("| parameters | \(digits + grouped) "), "the model card should state the exact count, \(digits + grouped)")
    }
}
