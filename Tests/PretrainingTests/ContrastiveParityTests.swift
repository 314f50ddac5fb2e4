import CLIP
import Foundation
import Pretraining
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// Every parameter gradient of CLIP's contrastive loss against openai's PyTorch model
/// (reference/contrastive_goldens.py, on the committed tiny checkpoint).
final class ContrastiveParityTests: XCTestCase {
    struct Meta: Decodable {
        var tokens: [[Int]]
        var token_rows: [Int]
        var loss: Double
        var parameters: [String]
    }

    func testEveryParameterGradientMatchesPyTorch() throws {
        let dir = repoRoot.appendingPathComponent("Goldens/pretrain")
        let meta = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: dir.appendingPathComponent("contrastive.json")))
        let g = try Safetensors.read(path: dir.appendingPathComponent("contrastive.safetensors").path).tensors
        let model = try CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path)
        let step = ContrastiveStep(model: model, pixels: g["pixels"]!, tokens: meta.tokens)
        XCTAssertEqual(step.loss.value, meta.loss, accuracy: 1e-5 * max(1, meta.loss), "loss")

        // The table names exactly the tensors PyTorch has parameters for.
        let table = model.parameters.map(\.name)
        XCTAssertEqual(Set(table), Set(meta.parameters))
        XCTAssertEqual(table.count, meta.parameters.count, "each tensor named once")

        let grads = step.gradient.stateDict()
        for name in meta.parameters {
            var got = grads[name]!
            var want: Tensor
            if name == "token_embedding.weight" {
                want = g["grad_rows.\(name)"]!
                got = got.gatherRows(meta.token_rows)
                // Every other row's gradient is zero.
                var rest = grads[name]!
                for r in meta.token_rows { for j in 0..<rest.lastDim { rest[r * rest.lastDim + j] = 0 } }
                XCTAssertEqual(rest.maxAbs, 0, "token embedding gradient outside the used rows")
            } else {
                want = g["grad.\(name)"]!
            }
            XCTAssertEqual(got.shape, want.shape, name)
            let scale = max(want.maxAbs, 1e-6)
            let err = maxDiff(got, want)
            XCTAssertLessThanOrEqual(err, 1e-6 + 2e-4 * scale, "\(name): max |diff| \(err) at scale \(scale)")
        }
    }
}
