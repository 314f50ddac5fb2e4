import CLIP
import Datasets
import Features
import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest

final class FeatureExtractionTests: XCTestCase {
    static let model = try! CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path)

    var dir: URL!
    var items: [Datum] = []

    /// An image folder made from the committed PNG/JPEG fixtures, plus one corrupt file.
    override func setUpWithError() throws {
        dir = try makeTempDir(self, prefix: "ptfx")
        let fm = FileManager.default
        let sources = try fm.contentsOfDirectory(atPath: repoRoot.appendingPathComponent("Goldens/preprocess").path)
            .filter { $0.hasSuffix(".png") }.sorted().prefix(7)
        for (i, name) in sources.enumerated() {
            let cls = "class\(i % 3)"
            try fm.createDirectory(at: dir.appendingPathComponent(cls), withIntermediateDirectories: true)
            try fm.copyItem(at: repoRoot.appendingPathComponent("Goldens/preprocess/\(name)"), to: dir.appendingPathComponent("\(cls)/\(name)"))
            items.append(Datum(path: "\(cls)/\(name)", label: i % 3, className: cls))
        }
        try Data("this is not an image".utf8).write(to: dir.appendingPathComponent("class1/broken.png"))
        items.insert(Datum(path: "class1/broken.png", label: 1, className: "class1"), at: 3)
    }

    func plan(views: Int = 2, seed: UInt64 = 5, digest: String = "model-a") -> ExtractionPlan {
        ExtractionPlan(modelDigest: digest, items: items, transform: views > 1 ? "train" : "test", views: views,
                       resolution: Self.model.config.imageResolution, seed: seed)
    }

    func extract(_ p: ExtractionPlan, to name: String, stopAfter: Int? = nil) throws -> ExtractionResult {
        try extractFeatures(model: Self.model, plan: p, items: items, classNames: ["class0", "class1", "class2"],
                            source: FileImageSource(root: dir), provenance: ["dataset": "test"],
                            output: dir.appendingPathComponent(name), chunk: 3, stopAfterChunks: stopAfter)
    }

    func testFeaturesMatchTheTowerAndUnreadableImagesAreSkippedAndReported() throws {
        let r = try extract(plan(views: 1), to: "a.safetensors")
        XCTAssertEqual(r.skipped.map(\.path), ["class1/broken.png"])
        XCTAssertTrue(r.skipped[0].reason.contains("broken.png"), r.skipped[0].reason)
        XCTAssertEqual(r.features.count, items.count - 1)
        XCTAssertEqual(r.features.labels, items.filter { $0.path != "class1/broken.png" }.map(\.label))
        // Row 0 equals the image tower on the test-preprocessed image.
        let pixels = try clipPreprocessFile(dir.appendingPathComponent(items[0].path).path)
        let want = Self.model.image.forward(pixels: pixels.reshaped([1] + pixels.shape)).0
        XCTAssertLessThan(zip(r.features.view(0).slice(rows: 0..<1).data, want.data).map { abs($0 - $1) }.max()!, 1e-5)
        XCTAssertEqual(r.features.provenance["dataset"], "test")
        XCTAssertNotNil(r.features.provenance["model_digest"])
    }

    func testInterruptedExtractionResumesToTheSameFile() throws {
        let p = plan()
        let whole = try extract(p, to: "whole.safetensors").features
        XCTAssertThrowsError(try extract(p, to: "resumed.safetensors", stopAfter: 1))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("resumed.safetensors.partial").path))
        let resumed = try extract(p, to: "resumed.safetensors")
        XCTAssertFalse(resumed.reused)
        XCTAssertEqual(resumed.features.features, whole.features, "augmented views are seeded per image and view")
        XCTAssertEqual(resumed.features.labels, whole.labels)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("resumed.safetensors.partial").path))
        // Views differ from each other (different augmentations).
        XCTAssertNotEqual(resumed.features.view(0), resumed.features.view(1))
    }

    func testACacheFromAnotherModelOrListIsNeverUsedSilently() throws {
        _ = try extract(plan(views: 1), to: "c.safetensors")
        XCTAssertTrue(try extract(plan(views: 1), to: "c.safetensors").reused)
        XCTAssertThrowsError(try extract(plan(views: 1, digest: "model-b"), to: "c.safetensors")) {
            XCTAssertTrue("\($0)".contains("another model, image list or transform"), "\($0)")
        }
        XCTAssertThrowsError(try extract(plan(), to: "d.safetensors", stopAfter: 1))
        XCTAssertThrowsError(try extract(plan(seed: 6), to: "d.safetensors")) {
            XCTAssertTrue("\($0)".contains("interrupted extraction made under another plan"), "\($0)")
        }
    }
}

import Imaging
func clipPreprocessFile(_ path: String) throws -> Tensor {
    clipPreprocess(try decodeImage(path: path), resolution: 32)
}
