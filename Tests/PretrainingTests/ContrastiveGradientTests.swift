import CLIP
import Foundation
import Pretraining
import TensorCore
import TestSupport
import XCTest

/// Finite differences of the contrastive loss on a tiny CLIP: the features, the log scale, and a
/// sample of every kind of parameter of both towers.
final class ContrastiveGradientTests: XCTestCase {
    static let config = CLIPConfig(embedDim: 8, imageResolution: 8, patchSize: 4, visionWidth: 16, visionLayers: 2,
                                   visionHeads: 2, contextLength: 12, vocabSize: 40, textWidth: 16, textLayers: 2, textHeads: 2)

    func testLossGradientsWithRespectToFeaturesAndScale() {
        var rng = SeededGenerator(seed: 3)
        let img = Tensor.randomNormal([5, 6], using: &rng), txt = Tensor.randomNormal([5, 6], using: &rng)
        let logScale: Float = 1.3
        let l = ContrastiveLoss(imageFeatures: img, textFeatures: txt, logScale: logScale)
        checkGradient("image features", at: img, analytic: l.dImageFeatures, tolerance: .lossTerms) {
            ContrastiveLoss(imageFeatures: $0, textFeatures: txt, logScale: logScale).value
        }
        checkGradient("text features", at: txt, analytic: l.dTextFeatures, tolerance: .lossTerms) {
            ContrastiveLoss(imageFeatures: img, textFeatures: $0, logScale: logScale).value
        }
        checkGradient("log scale", at: Tensor(scalar: logScale), analytic: Tensor(scalar: l.dLogScale), tolerance: .lossTerms) {
            ContrastiveLoss(imageFeatures: img, textFeatures: txt, logScale: $0[0]).value
        }
        // Matching pairs along the diagonal lower the loss.
        XCTAssertLessThan(ContrastiveLoss(imageFeatures: img, textFeatures: img, logScale: 2).value, l.value)
    }

    func testEveryParameterKindAgainstFiniteDifferences() {
        var model = CLIPModel.random(config: Self.config, seed: 11)
        model.logScale = 1
        // CLIP-scale text embeddings (std 0.02) are so small against LayerNorm that a finite-difference
        // step of 1e-2 is far from linear; scale them to O(1) so the check is well conditioned.
        model.text.tokenEmbedding = model.text.tokenEmbedding * 20
        model.text.positionalEmbedding = model.text.positionalEmbedding * 20
        var rng = SeededGenerator(seed: 5)
        let pixels = Tensor.randomNormal([3, 3, 8, 8], using: &rng)
        // Rows of different lengths; the EOT (largest id) ends each.
        let tokens = [[37, 5, 9, 39, 0, 0], [37, 12, 39, 0, 0, 0], [37, 3, 3, 7, 21, 39]]
        let step = ContrastiveStep(model: model, pixels: pixels, tokens: tokens)
        func loss(_ m: CLIPModel) -> Double { ContrastiveStep(model: m, pixels: pixels, tokens: tokens).loss.value }
        var checked = 0
        for p in model.parameters {
            // Token embedding rows that are not used have zero gradient; probe the used ones.
            let analytic = step.gradient[parameter: p]
            let probes = p.name == "token_embedding.weight" ? 0 : 6
            if probes > 0 {
                checkGradient(p.name, at: model[parameter: p], analytic: analytic, tolerance: .layers, maxProbes: probes) { x in
                    var m = model
                    m[parameter: p] = x
                    return loss(m)
                }
                checked += 1
            }
        }
        // The token embedding at the used rows (and exactly zero elsewhere).
        let p = model.parameters.first { $0.name == "token_embedding.weight" }!
        let g = step.gradient[parameter: p]
        for row in [5, 12, 21, 39] {
            for j in [0, 7, 15] {
                var plus = model, minus = model
                plus.text.tokenEmbedding[row * 16 + j] += 1e-2
                minus.text.tokenEmbedding[row * 16 + j] -= 1e-2
                let numeric = Float((loss(plus) - loss(minus)) / 2e-2)
                XCTAssertEqual(g[row * 16 + j], numeric, accuracy: 2e-3 + 2e-2 * abs(numeric), "token row \(row)")
            }
        }
        XCTAssertEqual(g.gatherRows([1, 2, 30]).maxAbs, 0, "unused token rows")
        XCTAssertEqual(checked, model.parameters.count - 1)
    }
}
