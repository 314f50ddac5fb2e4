import CLIP
import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// A whole ResNet CLIP read from its checkpoint formats (reference/rn_goldens.py --checkpoints):
/// the architecture inferred from the shapes as openai's build_model does, and the image features
/// equal to openai's `encode_image`.
///
/// CI reads the committed OpenAI TorchScript archive (Goldens/rn/checkpoint/openai.pt, fp16, laid out
/// as OpenAI's RN50.pt); the state dict and open_clip files are checked when made:
///   python3 reference/rn_goldens.py --checkpoints /tmp/rnckpt      # or --config rn50 (a whole RN50)
///   PROMPTTUNE_RN_CHECKPOINTS=/tmp/rnckpt swift test --filter ResNetLoadingTests
final class ResNetLoadingTests: XCTestCase {
    static let committed = repoRoot.appendingPathComponent("Goldens/rn/checkpoint").path
    static let expected = ResNetArchitecture(layers: [2, 1, 1, 1], width: 8, resolution: 96, heads: 4, embedDim: 32)

    /// `expected`: the architecture the file must have (nil: whatever the features' width allows,
    /// for files made with --config rn50).
    func checkFile(_ path: String, format: CheckpointFormat, features dir: String, expected: ResNetArchitecture? = expected) throws {
        let weights = try loadCLIPWeights(path: path)
        let g = try Safetensors.read(path: dir + "/features.safetensors").tensors
        XCTAssertEqual(weights.format, format)
        if let expected { XCTAssertEqual(weights.config.resnet, expected) }
        XCTAssertEqual(weights.config.imageResolution, g["pixels"]!.shape[2])
        XCTAssertEqual(weights.config.embedDim, g["features"]!.lastDim)
        XCTAssertFalse(weights.config.isViT)
        let model = try CLIPModel.load(path: path)
        XCTAssertFalse(model.image.isViT)
        assertAgrees(model.encodeImage(g["pixels"]!, chunk: 2), g["features"]!, atol: 1e-4, rtol: 1e-4, "\(format) features")
        // The text tower is the usual one.
        let text = model.encodeText([[CLIPTokenizer.sot, 320, CLIPTokenizer.eot]])
        XCTAssertEqual(text.shape, [1, weights.config.embedDim])
        XCTAssertTrue(text.data.allSatisfy(\.isFinite))
    }

    func testOpenAITorchScriptArchive() throws {
        try checkFile(Self.committed + "/openai.pt", format: .torchScript, features: Self.committed)
    }

    func testStateDictAndOpenCLIPWhenMade() throws {
        guard let dir = ProcessInfo.processInfo.environment["PROMPTTUNE_RN_CHECKPOINTS"] else {
            throw XCTSkip("set PROMPTTUNE_RN_CHECKPOINTS to a directory made by reference/rn_goldens.py --checkpoints")
        }
        let small = try loadCLIPWeights(path: dir + "/openai.pt").config.resnet == Self.expected
        for (file, format) in [("state_dict.pt", CheckpointFormat.stateDict), ("open_clip_model.safetensors", .openCLIPSafetensors),
                               ("openai.pt", .torchScript)] {
            try checkFile(dir + "/" + file, format: format, features: dir, expected: small ? Self.expected : CLIPConfig.rn50.resnet)
        }
    }

    /// A ResNet checkpoint's tensors are checked before anything is built: a missing batch-norm
    /// statistic and a wrong shape are named.
    func testMissingAndMisshapenTensorsAreNamed() throws {
        let weights = try loadCLIPWeights(path: Self.committed + "/openai.pt")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rn-load-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var missing = weights.tensors
        missing["visual.layer2.0.bn3.running_var"] = nil
        let a = dir.appendingPathComponent("missing.pt")
        try TorchArchive.writeStateDict(missing, to: a)
        XCTAssertThrowsError(try loadCLIPWeights(path: a.path)) { e in
            XCTAssertTrue("\(e)".contains("visual.layer2.0.bn3.running_var"), "\(e)")
        }
        var wrong = weights.tensors
        wrong["visual.attnpool.c_proj.weight"] = Tensor(zeros: [32, 128])
        let b = dir.appendingPathComponent("wrong.pt")
        try TorchArchive.writeStateDict(wrong, to: b)
        XCTAssertThrowsError(try loadCLIPWeights(path: b.path)) { e in
            XCTAssertTrue("\(e)".contains("visual.attnpool.c_proj.weight") && "\(e)".contains("[32, 256]"), "\(e)")
        }
    }

    /// The parameter table (what trains, exports and takes gradients) of a ResNet CLIP is the text
    /// tower and the logit scale; the tower's tensors are checkpoint tensors only.
    func testParameterTableHoldsNoResNetTensors() throws {
        let config = try loadCLIPWeights(path: Self.committed + "/openai.pt").config
        XCTAssertFalse(config.parameters.contains { $0.name.hasPrefix("visual.") })
        let names = expectedCLIPTensorShapes(config).map(\.name)
        XCTAssertTrue(names.contains("visual.layer1.1.conv2.weight"))
        XCTAssertFalse(names.contains("visual.layer1.1.downsample.0.weight"), "only a block's first may downsample")
        XCTAssertTrue(names.contains("visual.layer1.0.downsample.0.weight"))
        XCTAssertEqual(config.imageTowerName, "ResNet 2-1-1-1 width 8")
        XCTAssertEqual(ResNetArchitecture(layers: [3, 4, 6, 3], width: 64, resolution: 224, heads: 32, embedDim: 1024).name, "RN50")
    }
}
