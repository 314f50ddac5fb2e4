import CLIP
import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// The parameter table names every tensor once; the reader, the writers and gradient names derive from it.
final class ParameterTableTests: XCTestCase {
    let checkpoint = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path

    func testTableNamesEveryCheckpointTensorOnce() throws {
        let weights = try loadCLIPWeights(path: checkpoint)
        let table = weights.config.parameters
        XCTAssertEqual(Set(table.map(\.name)).count, table.count, "names are unique")
        XCTAssertEqual(Set(table.map(\.name)), Set(weights.tensors.keys))
        for p in table { XCTAssertEqual(weights.tensors[p.name]!.count, p.count, p.name) }
        // 5 + 12 per block + 3 (vision), 2 + 12 per block + 3 (text), logit scale.
        let c = weights.config
        XCTAssertEqual(table.count, 8 + 12 * c.visionLayers + 5 + 12 * c.textLayers + 1)
        XCTAssertEqual(table.filter(\.decays).map(\.role), Array(repeating: .matrix, count: table.filter(\.decays).count))
        XCTAssertTrue(table.filter { $0.name.hasSuffix("bias") || $0.name.contains("ln_") || $0.name.contains("embedding") || $0.name == "logit_scale" }
            .allSatisfy { !$0.decays }, "no decay on biases, gains, embeddings and the logit scale")
    }

    func testStateDictRoundTripsThroughBothWriters() throws {
        let model = try CLIPModel.load(path: checkpoint)
        let dir = try makeTempDir(self)
        let pt = dir.appendingPathComponent("model.pt"), st = dir.appendingPathComponent("open_clip_model.safetensors")
        try model.writeStateDict(to: pt)
        try model.writeOpenCLIPSafetensors(to: st, dtype: .float16)
        let original = model.stateDict()
        let fromTorch = try CLIPModel.load(path: pt.path)
        XCTAssertEqual(fromTorch.config, model.config)
        XCTAssertEqual(fromTorch.stateDict(), original, "fp32 torch.save round trip is exact")
        // The committed tiny weights are fp16 values, so fp16 storage is exact too.
        let fromSafetensors = try loadCLIPWeights(path: st.path)
        XCTAssertEqual(fromSafetensors.format, .openCLIPSafetensors)
        XCTAssertEqual(try CLIPModel(config: fromSafetensors.config, tensors: fromSafetensors.tensors).stateDict(), original)
    }

    func testAssemblyNamesTheMissingOrMisshapenTensor() throws {
        let weights = try loadCLIPWeights(path: checkpoint)
        var tensors = weights.tensors
        tensors["ln_final.bias"] = nil
        XCTAssertThrowsError(try CLIPModel(config: weights.config, tensors: tensors)) { e in
            XCTAssertEqual("\(e)", "checkpoint has no tensor 'ln_final.bias'")
        }
        tensors = weights.tensors
        tensors["visual.proj"] = Tensor(zeros: [3, 3])
        XCTAssertThrowsError(try CLIPModel(config: weights.config, tensors: tensors)) { e in
            XCTAssertTrue("\(e)".contains("'visual.proj' has shape [3, 3]"), "\(e)")
        }
    }
}
