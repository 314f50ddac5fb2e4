import CLIP
import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// Every stage of the ModifiedResNet image tower against openai's PyTorch code
/// (reference/rn_goldens.py: random weights and random batch-norm statistics).
///
/// CI uses the committed small configuration (Goldens/rn: layers 2-1-1-1, width 8, resolution 96,
/// 4 heads). For RN50-shaped weights (~100 MB, not committed):
///   python3 reference/rn_goldens.py --config rn50 --out /tmp/rn50g
///   PROMPTTUNE_RN_GOLDENS=/tmp/rn50g swift test --filter ResNetParityTests
final class ResNetParityTests: XCTestCase {
    struct Meta: Decodable {
        var layers: [Int]
        var width: Int
        var resolution: Int
        var heads: Int
        var embed_dim: Int
    }

    static func load(_ dir: String) throws -> (ResNetTower, [String: Tensor]) {
        let g = try Safetensors.read(path: dir + "/rn_goldens.safetensors").tensors
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/rn_meta.json"))
        let m = try JSONDecoder().decode(Meta.self, from: data)
        let arch = ResNetArchitecture(layers: m.layers, width: m.width, resolution: m.resolution, heads: m.heads, embedDim: m.embed_dim)
        return (try ResNetTower(architecture: arch, tensors: g), g)
    }

    /// B, C, H, W (PyTorch) -> B, H, W, C (the tower's layout).
    static func nhwc(_ t: Tensor) -> Tensor { channelsLast(t) }

    func checkEveryStage(_ dir: String, tolerance: Float) throws {
        let (tower, g) = try Self.load(dir)
        var seen: [String] = []
        let features = tower.forward(pixels: g["pixels"]!) { name, value in
            seen.append(name)
            assertAgrees(value, Self.nhwc(g[name]!), atol: tolerance, rtol: tolerance, "\(tower.architecture.name) \(name)")
        }
        XCTAssertEqual(seen, ["stem", "layer1", "layer2", "layer3", "layer4"])
        assertAgrees(features, g["features"]!, atol: tolerance, rtol: tolerance, "\(tower.architecture.name) features")
        // Buffers reused through a workspace (a second pass takes the first's): the same numbers.
        let workspace = Workspace()
        XCTAssertEqual(tower.forward(pixels: g["pixels"]!, workspace: workspace), features)
        XCTAssertEqual(tower.forward(pixels: g["pixels"]!, workspace: workspace), features)
        XCTAssertGreaterThan(workspace.reused, 0)
    }

    func testSmallConfigurationEveryStage() throws {
        try checkEveryStage(repoRoot.appendingPathComponent("Goldens/rn").path, tolerance: 1e-4)
    }

    /// The same through bf16 convolutions and products, where this CPU runs them: close, not equal.
    func testSmallConfigurationBF16() throws {
        // bf16 runs on oneDNN.
        guard CPUBackend(gemm: .oneDNN).canRunBF16 else { throw XCTSkip("no bf16 kernel on this CPU") }
        var (tower, g) = try Self.load(repoRoot.appendingPathComponent("Goldens/rn").path)
        tower.backend = try CPUBackend(gemm: .oneDNN).with(precision: .bf16)
        let features = tower.forward(pixels: g["pixels"]!)
        assertAgrees(features, g["features"]!, atol: 2e-2, rtol: 5e-2, "bf16 features")
    }

    /// The parity test catches a tower without the anti-aliasing pools: strided 3x3 convolutions
    /// in their place give the same shapes and different values.
    func testStridedConvolutionInsteadOfAntiAliasingDiffers() throws {
        let (tower, g) = try Self.load(repoRoot.appendingPathComponent("Goldens/rn").path)
        var wrong = tower
        for l in 1..<wrong.layers.count {
            // torchvision's downsampling: conv2 and the downsample convolution strided, no pools.
            let b = wrong.layers[l][0]
            wrong.layers[l][0] = ResNetTower.Bottleneck(
                conv1: b.conv1, conv2: Conv2D(weight: b.conv2.weight, bias: b.conv2.bias, stride: 2, padding: 1),
                conv3: b.conv3, downsample: Conv2D(weight: b.downsample!.weight, bias: b.downsample!.bias, stride: 2),
                stride: 1)
        }
        let got = wrong.forward(pixels: g["pixels"]!)
        XCTAssertEqual(got.shape, g["features"]!.shape)
        XCTAssertGreaterThan(Agreement(got, g["features"]!).maxAbs, 1e-3, "a tower without anti-aliasing must not pass the parity test")
    }

    /// The bench's GFLOP/s count: RN50's convolutions as PyTorch's forward hooks count them
    /// (10.734 GFLOP per image), plus the attention pool's products.
    func testRN50FLOPs() {
        let a = CLIPConfig.rn50.resnet!
        let (t, c, e): (Double, Double, Double) = (50, 2048, 1024)
        let keysValues: Double = 2 * t * c * c, query: Double = c * c, scores: Double = 2 * t * c, out: Double = c * e
        let attention: Double = 2 * (keysValues + query + scores + out)
        XCTAssertEqual(FLOPs.resnetForward(a, batch: 1), 10_734_452_736 + attention, accuracy: 1)
        XCTAssertEqual(FLOPs.imageForward(.rn50, batch: 32), 32 * FLOPs.resnetForward(a, batch: 1), accuracy: 32)
    }

    /// What bf16 convolutions and products change on RN50-shaped weights, stage by stage (printed).
    func testRN50ShapedBF16() throws {
        guard let dir = ProcessInfo.processInfo.environment["PROMPTTUNE_RN_GOLDENS"],
              FileManager.default.fileExists(atPath: dir + "/rn_goldens.safetensors") else {
            throw XCTSkip("set PROMPTTUNE_RN_GOLDENS to a directory made by reference/rn_goldens.py --config rn50")
        }
        // bf16 runs on oneDNN.
        guard CPUBackend(gemm: .oneDNN).canRunBF16 else { throw XCTSkip("no bf16 kernel on this CPU") }
        var (tower, g) = try Self.load(dir)
        tower.backend = try CPUBackend(gemm: .oneDNN).with(precision: .bf16)
        let features = tower.forward(pixels: g["pixels"]!) { name, value in
            print("bf16 \(name): \(Agreement(value, Self.nhwc(g[name]!)))")
        }
        let a = Agreement(features, g["features"]!)
        print("bf16 features: \(a)")
        XCTAssertLessThan(a.normRelative, 0.05)
    }

    func testRN50ShapedEveryStage() throws {
        guard let dir = ProcessInfo.processInfo.environment["PROMPTTUNE_RN_GOLDENS"],
              FileManager.default.fileExists(atPath: dir + "/rn_goldens.safetensors") else {
            throw XCTSkip("set PROMPTTUNE_RN_GOLDENS to a directory made by reference/rn_goldens.py --config rn50")
        }
        try checkEveryStage(dir, tolerance: 1e-4)
    }
}
