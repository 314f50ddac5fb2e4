import CLIP
import Foundation
import TensorCore
import TestSupport
import XCTest

/// `CLIPModel.roundedToHalf()`: the reference's fp16 model approached in fp32 (weights rounded,
/// activations and the gradients between layers rounded to fp16 values).
final class HalfModelTests: XCTestCase {
    static let config = CLIPConfig(embedDim: 8, imageResolution: 8, patchSize: 4, visionWidth: 16, visionLayers: 2,
                                   visionHeads: 2, contextLength: 77, vocabSize: 49408, textWidth: 16, textLayers: 2, textHeads: 2)
    static let model = CLIPModel.random(config: config, seed: 5)
    static let tokens = [[49406, 320, 1125, 539, 320, 2368, 269, 49407], [49406, 2368, 269, 49407, 0, 0, 0, 0]]

    func testWeightsAndFeaturesAreHalfValues() {
        let m = Self.model, h = m.roundedToHalf()
        XCTAssertEqual(m.activationRounding, .none)
        XCTAssertEqual(h.activationRounding, .half)
        var changed = 0
        for p in h.parameters {
            XCTAssertEqual(h[parameter: p], h[parameter: p].roundedToHalf(), p.name)
            if h[parameter: p] != m[parameter: p] { changed += 1 }
        }
        XCTAssertGreaterThan(changed, 0, "the random model's fp32 weights lose their low bits")
        XCTAssertEqual(h.roundedToHalf().stateDict(), h.stateDict(), "rounding twice changes nothing")

        // The same rounded weights computed in fp32 throughout: the activation rounding changes the
        // features a little, and every feature is an fp16 value.
        var plain = h
        plain.activationRounding = .none
        let (t16, t32) = (h.encodeText(Self.tokens), plain.encodeText(Self.tokens))
        XCTAssertEqual(t16, t16.roundedToHalf())
        XCTAssertNotEqual(t16, t32)
        XCTAssertLessThan(maxDiff(t16, t32), 1e-2 * t32.maxAbs)
        var rng = SeededGenerator(seed: 9)
        let pixels = Tensor.randomNormal([3, 3, 8, 8], using: &rng)
        let (i16, i32) = (h.encodeImage(pixels), plain.encodeImage(pixels))
        XCTAssertEqual(i16, i16.roundedToHalf())
        XCTAssertNotEqual(i16, i32)
        XCTAssertLessThan(maxDiff(i16, i32), 1e-2 * i32.maxAbs)
    }

    /// The gradient leaving each block (and so the tower's input gradient) is an fp16 value, and
    /// close to fp32's gradient of the same weights.
    func testGradientsBetweenBlocksAreHalfValues() {
        let h = Self.model.roundedToHalf()
        var plain = h
        plain.activationRounding = .none
        var rng = SeededGenerator(seed: 11)
        let x = Tensor.randomNormal([2, 8, 16], std: 0.1, using: &rng)
        let dF = Tensor.randomNormal([2, 8], using: &rng)
        func inputGradient(_ m: CLIPModel) -> Tensor {
            let (_, trace) = m.text.forward(embeddings: x, eot: [7, 3], keepCaches: true)
            return m.text.backwardPacked(dF, trace: trace)
        }
        let (g16, g32) = (inputGradient(h), inputGradient(plain))
        XCTAssertEqual(g16, g16.roundedToHalf())
        XCTAssertNotEqual(g16, g32)
        XCTAssertLessThan(maxDiff(g16, g32), 2e-2 * g32.maxAbs)
        // The image tower's gradient to its extra tokens, through the releasing backward.
        let pixels = Tensor.randomNormal([2, 3, 8, 8], using: &rng)
        let extra = Tensor.randomNormal([2, 16], std: 0.1, using: &rng).roundedToHalf()
        func extraGradient(_ m: CLIPModel) -> Tensor {
            let ws = Workspace()
            var (_, trace) = m.image.forward(pixels: pixels, extraTokens: extra, keepCaches: true, workspace: ws, keepLinearInputs: false)
            return m.image.backwardToExtraTokens(dF, releasing: &trace, workspace: ws)
        }
        let (e16, e32) = (extraGradient(h), extraGradient(plain))
        XCTAssertNotEqual(e16, e32)
        XCTAssertLessThan(maxDiff(e16, e32), 2e-2 * e32.maxAbs)
    }
}
