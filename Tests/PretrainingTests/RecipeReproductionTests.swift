import CLIP
import Foundation
import Pretraining
import TensorCore
import TestSupport
import XCTest

/// The committed demo model's recipe, re-run for its first steps, reproduces the logged losses
/// (models/fashion-clip/recipe.json holds the recipe and the first losses of the run that made it).
final class RecipeReproductionTests: XCTestCase {
    struct Card: Decodable {
        var recipe: PretrainRecipe
        var first_losses: [Double]
    }

    func testFirstStepsReproduceTheCommittedRun() throws {
        let card = try JSONDecoder().decode(Card.self, from: Data(contentsOf: repoRoot.appendingPathComponent("models/fashion-clip/recipe.json")))
        let data: PretrainData
        do { data = try PretrainData(root: nil, split: "train", limit: card.recipe.limit) } catch {
            throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): \(error)")
        }
        let trainer = try Pretrainer(recipe: card.recipe, data: data)
        let n = 3
        for _ in 0..<n { try trainer.trainStep() }
        for (i, (got, want)) in zip(trainer.losses, card.first_losses.prefix(n)).enumerated() {
            XCTAssertEqual(got, want, accuracy: 1e-4 * want, "loss of step \(i + 1)")
        }
    }

    func testResumeContinuesExactly() throws {
        var recipe = PretrainRecipe()
        recipe.limit = 64; recipe.batchSize = 16; recipe.epochs = 1; recipe.warmupSteps = 2
        recipe.visionWidth = 64; recipe.visionLayers = 1; recipe.textLayers = 1
        let data: PretrainData
        do { data = try PretrainData(root: nil, split: "train", limit: recipe.limit) } catch {
            throw XCTSkip("Fashion-MNIST is not installed: \(error)")
        }
        let straight = try Pretrainer(recipe: recipe, data: data)
        for _ in 0..<4 { try straight.trainStep() }
        let first = try Pretrainer(recipe: recipe, data: data)
        for _ in 0..<2 { try first.trainStep() }
        let url = try makeTempDir(self).appendingPathComponent("checkpoint.safetensors")
        try first.saveCheckpoint(to: url)
        let resumed = try Pretrainer(recipe: recipe, data: data)
        try resumed.resume(from: url)
        for _ in 0..<2 { try resumed.trainStep() }
        XCTAssertEqual(resumed.losses, straight.losses)
        XCTAssertEqual(resumed.model.stateDict(), straight.model.stateDict())
        // Another recipe is refused.
        var other = recipe
        other.seed = 2
        XCTAssertThrowsError(try Pretrainer(recipe: other, data: data).resume(from: url))
    }

    func testScheduleWarmsUpThenDecays() {
        XCTAssertEqual(warmupCosine(step: 0, total: 100, warmup: 10, peak: 1), 0.1, accuracy: 1e-12)
        XCTAssertEqual(warmupCosine(step: 9, total: 100, warmup: 10, peak: 1), 1, accuracy: 1e-12)
        XCTAssertEqual(warmupCosine(step: 10, total: 100, warmup: 10, peak: 1), 1, accuracy: 1e-12)
        XCTAssertEqual(warmupCosine(step: 55, total: 100, warmup: 10, peak: 1), 0.5, accuracy: 1e-12)
        XCTAssertEqual(warmupCosine(step: 100, total: 100, warmup: 10, peak: 1), 0, accuracy: 1e-12)
    }

    func testAdamWDecaysMatricesOnly() {
        let config = CLIPConfig(embedDim: 4, imageResolution: 4, patchSize: 2, visionWidth: 8, visionLayers: 1, visionHeads: 1,
                                contextLength: 6, vocabSize: 10, textWidth: 8, textLayers: 1, textHeads: 1)
        var model = CLIPModel.random(config: config, seed: 1)
        let before = model
        var state = AdamWState()
        var c = AdamWConfig()
        c.weightDecay = 0.5
        state.update(&model, gradient: model.zeroGradient(), lr: 0.1, config: c)
        for p in model.parameters {
            let ratio: Float = p.decays ? 0.95 : 1
            XCTAssertEqual(maxDiff(model[parameter: p], before[parameter: p] * ratio), 0, accuracy: 1e-6, p.name)
        }
    }
}
