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

    /// A tower whose features are all zero (weights out of range once gave that) is an error naming
    /// an image, not a features file of zero vectors that every later cosine divides by.
    func testAllZeroFeaturesAreAnError() throws {
        var model = Self.model
        model.image.projection = Tensor(zeros: model.image.projection.shape)
        XCTAssertThrowsError(try extractFeatures(model: model, plan: plan(views: 1), items: items, classNames: ["class0", "class1", "class2"],
                                                 source: FileImageSource(root: dir), provenance: ["dataset": "test"],
                                                 output: dir.appendingPathComponent("zero.safetensors"), chunk: 3)) {
            XCTAssertTrue("\($0)".contains("all-zero feature for \(self.items[0].path)"), "\($0)")
        }
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
        // A partial folder made under another plan is discarded, not resumed: the result equals a
        // fresh extraction under the new plan.
        XCTAssertThrowsError(try extract(plan(), to: "d.safetensors", stopAfter: 1))
        let fresh = try extract(plan(seed: 6), to: "fresh.safetensors").features
        XCTAssertEqual(try extract(plan(seed: 6), to: "d.safetensors").features.features, fresh.features)
    }

    /// A failed or interrupted extraction's chunks used to pin its skips: an image restored since,
    /// or one refused under an image-size limit lifted since, stayed missing on every later run.
    func testSkippedImagesAreRetriedAndStaleOptionsDiscardTheChunks() throws {
        let p = plan(views: 1)
        // The broken image sits in chunk 1 (items 3...5); stop after both of the first chunks.
        XCTAssertThrowsError(try extract(p, to: "r.safetensors", stopAfter: 2))
        try FileManager.default.copyItem(at: dir.appendingPathComponent(items[0].path), to: dir.appendingPathComponent("class1/restored.png"))
        try FileManager.default.removeItem(at: dir.appendingPathComponent("class1/broken.png"))
        try FileManager.default.moveItem(at: dir.appendingPathComponent("class1/restored.png"), to: dir.appendingPathComponent("class1/broken.png"))
        let r = try extract(p, to: "r.safetensors")
        XCTAssertEqual(r.skipped, [], "the restored image is read on resume")
        XCTAssertEqual(r.features.count, items.count)

        // Under a limit that refuses every image, the chunks skip everything; lifting the limit
        // discards them instead of repeating the stale refusals.
        let saved = ImageLimits.current
        defer { ImageLimits.current = saved }
        ImageLimits.current = ImageLimits(maxPixels: 1)
        XCTAssertThrowsError(try extract(p, to: "s.safetensors", stopAfter: 1))
        ImageLimits.current = saved
        XCTAssertEqual(try extract(p, to: "s.safetensors").features.count, items.count)
    }

    /// Re-extracting identical features gives a byte-identical file (sorted JSON in the metadata and
    /// plan), so its digest, and with it `train --resume`, stays valid.
    func testReExtractionIsByteIdentical() throws {
        let p = plan(views: 2)
        _ = try extract(p, to: "first.safetensors")
        _ = try extract(p, to: "second.safetensors")
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("first.safetensors")),
                       try Data(contentsOf: dir.appendingPathComponent("second.safetensors")))
    }

    /// A kill between writing the file and removing `<out>.partial/` left the folder behind: the
    /// next run with the same plan removes it.
    func testAFinishedPartialFolderIsRemoved() throws {
        let p = plan(views: 1)
        _ = try extract(p, to: "e.safetensors")
        let partial = dir.appendingPathComponent("e.safetensors.partial")
        try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
        try Data(p.asJSON.utf8).write(to: partial.appendingPathComponent("plan.json"))
        XCTAssertTrue(try extract(p, to: "e.safetensors").reused)
        XCTAssertFalse(FileManager.default.fileExists(atPath: partial.path))
    }

    /// K13: views x images x dim is sized against a memory budget before anything is allocated or
    /// written, and nothing is left behind.
    func testExtractionBeyondTheMemoryBudgetIsRefusedUpFront() throws {
        let p = plan(views: 100_000)
        XCTAssertThrowsError(try extractFeatures(model: Self.model, plan: p, items: items, classNames: ["class0", "class1", "class2"],
                                                 source: FileImageSource(root: dir), provenance: [:],
                                                 output: dir.appendingPathComponent("big.safetensors"), chunk: 64,
                                                 memoryBudget: 1 << 30)) {
            XCTAssertTrue("\($0)".contains("100000 views of 8 images") && "\($0)".contains("budget"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("big.safetensors.partial").path))
        XCTAssertNil(extractionMemory(plan: plan(views: Int.max), dimension: 512, chunk: 64), "overflow is caught")
    }
}

import Imaging
func clipPreprocessFile(_ path: String) throws -> Tensor {
    clipPreprocess(try decodeImage(path: path), resolution: 32)
}
