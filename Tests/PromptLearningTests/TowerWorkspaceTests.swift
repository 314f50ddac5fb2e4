import CLIP
import PromptLearning
import TensorCore
import XCTest

/// The image tower's arena path (forward into a workspace keeping only what the token gradient
/// reads, backward releasing the trace) equals the plain path bit for bit, on reused buffers too.
final class TowerWorkspaceTests: XCTestCase {
    func testReleasingBackwardToExtraTokensIsBitIdentical() {
        let tower = DAPTParityTests.model.image
        var rng = SeededGenerator(seed: 11)
        let ws = Workspace()
        for (step, shape) in [[3, tower.width], [2, 3, tower.width], [3, tower.width]].enumerated() {
            let pixels = Tensor.randomNormal([2, 3, tower.resolution, tower.resolution], using: &rng)
            let extra = Tensor.randomUniform(shape, -0.2, 0.2, using: &rng)
            let dF = Tensor.randomNormal([2, DAPTParityTests.model.config.embedDim], using: &rng)
            let (f0, trace0) = tower.forward(pixels: pixels, extraTokens: extra, keepCaches: true)
            let g0 = tower.backwardToExtraTokens(dF, trace: trace0)
            var (f1, trace1) = tower.forward(pixels: pixels, extraTokens: extra, keepCaches: true, workspace: ws, keepLinearInputs: false)
            XCTAssertEqual(f1.data, f0.data, "step \(step): features")
            let g1 = tower.backwardToExtraTokens(dF, releasing: &trace1, workspace: ws)
            XCTAssertEqual(g1.shape, g0.shape)
            XCTAssertEqual(g1.data, g0.data, "step \(step): token gradient")
            f1 = Tensor(zeros: [0])
        }
        XCTAssertGreaterThan(ws.reused, 0, "later steps reuse the arena")
    }
}
