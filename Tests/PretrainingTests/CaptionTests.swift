import Foundation
import Imaging
import Pretraining
import TestSupport
import XCTest

/// Attribute captions (the committed demo model's): the measures, the words, the medium word, and
/// recipes written before these fields existed.
final class CaptionTests: XCTestCase {
    func testAttributesOfASyntheticImage() {
        // A bright bar 20 wide and 4 tall in the top rows of a black 28 x 28 image.
        var pixels = [UInt8](repeating: 0, count: 28 * 28 * 3)
        for y in 2..<6 { for x in 4..<24 { for c in 0..<3 { pixels[(y * 28 + x) * 3 + c] = 200 } } }
        let a = ImageAttributes(RGBImage(width: 28, height: 28, pixels: pixels))
        XCTAssertEqual(a.brightness, 200)
        XCTAssertEqual(a.coverage, 80.0 / 784, accuracy: 1e-12)
        XCTAssertEqual(a.aspect, 5, accuracy: 1e-12)
        XCTAssertEqual(a.balance, 0, accuracy: 1e-12)   // uniform bar: its centre of mass is its outline's centre
        XCTAssertEqual(a.words(thresholds: [100, 0.5, -0.1, 1]), ["light", "small", "bottom-heavy", "wide"])
    }

    func testMediumCaptionsNameCoverageAndTheClass() throws {
        var recipe = PretrainRecipe()
        recipe.limit = 512; recipe.batchSize = 256; recipe.epochs = 1
        recipe.attributeCaptions = true; recipe.classRelativeAttributes = true; recipe.mediumAttribute = 1
        recipe.templates = CaptionTemplates.medium
        let data: PretrainData
        do { data = try PretrainData(root: nil, split: "train", limit: recipe.limit) } catch {
            throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): \(error)")
        }
        let trainer = try Pretrainer(recipe: recipe, data: data)
        let items = trainer.batch(0)
        let captions = trainer.captions(0, items: items)
        XCTAssertEqual(captions, trainer.captions(0, items: items), "captions are a function of (seed, step)")
        var photos = 0
        for (i, c) in zip(items, captions) {
            XCTAssertTrue(c.contains(data.classNames[data.items[i].label]), c)
            let photo = c.contains("photo"), sketch = c.contains("sketch")
            XCTAssertNotEqual(photo, sketch, c)
            XCTAssertFalse(c.contains("small") || c.contains("large"), "coverage is named by the medium word only: \(c)")
            XCTAssertFalse(c.contains("  ") || c.contains("{"), c)
            if photo { photos += 1 }
        }
        XCTAssertEqual(Double(photos) / Double(items.count), 0.5, accuracy: 0.15)   // split at each class's median
    }

    func testRecipesWithoutTheNewFieldsDecodeWithDefaults() throws {
        let old = #"{"embed_dim":32,"resolution":28,"patch_size":7,"vision_width":64,"vision_layers":2,"text_width":64,"text_layers":2,"templates":["a {}."],"augment":true,"epochs":3,"batch_size":128,"lr":0.002,"warmup_steps":100,"adamw":{"beta1":0.9,"beta2":0.98,"eps":1e-06,"weight_decay":0.2},"initial_logit_scale":14.285714285714285,"seed":1}"#
        let r = try JSONDecoder().decode(PretrainRecipe.self, from: Data(old.utf8))
        XCTAssertEqual(r.cropScale, 0.08)
        XCTAssertFalse(r.attributeCaptions)
        XCTAssertNil(r.mediumAttribute)
        XCTAssertEqual(r.templates, ["a {}."])
        let again = try JSONDecoder().decode(PretrainRecipe.self, from: JSONEncoder().encode(r))
        XCTAssertEqual(again, r)
    }

    func testInvalidAttributeRecipesAreRefused() {
        var r = PretrainRecipe()
        r.mediumAttribute = 1
        XCTAssertThrowsError(try r.validate())   // needs attribute captions and {m} templates
        r.attributeCaptions = true
        XCTAssertThrowsError(try r.validate())
        r.templates = CaptionTemplates.medium
        XCTAssertNoThrow(try r.validate())
        r.cropScale = 0
        XCTAssertThrowsError(try r.validate())
    }
}
