import CLIP
import Foundation
import TensorCore

/// Visual prompt tokens (shallow VPT as DAPT uses it): N learned tokens of the image tower's width,
/// inserted after `ln_pre` between the class token and the patch tokens, with no positional
/// embedding, in the first block only.
public struct VisualPromptConfig: Codable, Equatable, Sendable {
    /// N, the number of tokens (DAPT: 16).
    public var tokens: Int
    public init(tokens: Int = 16) { self.tokens = tokens }

    /// DAPT's (VPT's) initialisation bound: v = sqrt(6 / (3 * patch^2 + width)).
    public static func initBound(patchSize: Int, width: Int) -> Float {
        Float((6.0 / Double(3 * patchSize * patchSize + width)).squareRoot())
    }

    /// N x W drawn uniform(-v, v) from `rng`.
    public func initialTokens(tower: ImageTower, rng: inout SeededGenerator) -> Tensor {
        let v = Self.initBound(patchSize: tower.patchSize, width: tower.width)
        return .randomUniform([tokens, tower.width], -v, v, using: &rng)
    }
}
