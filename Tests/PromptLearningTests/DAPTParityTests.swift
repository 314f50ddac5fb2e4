import CLIP
import Foundation
import Imaging
import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// In-memory training images for DAPT's tests: 4 images per class of 5 classes, of different
/// sizes, each a class colour plus a seeded pattern, augmented as CoOp does (Imaging's transform).
struct SyntheticImages: TrainingImages {
    static let classNames = ["cat", "golden_retriever", "sunflower", "Boeing 747-400", "apple pie"]
    let images: [RGBImage]
    let labels: [Int]
    var classNames: [String] { Self.classNames }
    var digest: String { "synthetic-dapt-images-v1" }

    init(perClass: Int = 4) {
        var rng = SeededGenerator(seed: 2024)
        var images: [RGBImage] = [], labels: [Int] = []
        let base: [(Double, Double, Double)] = [(200, 60, 40), (220, 180, 60), (240, 220, 30), (120, 140, 200), (160, 90, 60)]
        for i in 0..<(perClass * Self.classNames.count) {
            let c = i % Self.classNames.count
            let (w, h) = (36 + (i * 7) % 25, 34 + (i * 5) % 23)
            let (fx, fy) = (Double(1 + Int(rng.next() % 4)), Double(1 + Int(rng.next() % 4)))
            var px = [UInt8](repeating: 0, count: w * h * 3)
            for y in 0..<h {
                for x in 0..<w {
                    let wave = 50 * sin(fx * Double(x) / Double(w) * 6.28) * cos(fy * Double(y) / Double(h) * 6.28)
                    let noise = Double(rng.next() % 41) - 20
                    let b = base[c]
                    for (ch, v) in [b.0, b.1, b.2].enumerated() {
                        px[(y * w + x) * 3 + ch] = UInt8(max(0, min(255, v + wave * Double(ch == c % 3 ? 1 : -0.5) + noise)))
                    }
                }
            }
            images.append(RGBImage(width: w, height: h, pixels: px))
            labels.append(c)
        }
        self.images = images
        self.labels = labels
    }

    func load(_ indices: [Int], seeds: [UInt64], resolution: Int) throws -> (pixels: Tensor, augmentations: [AugmentationRecord]) {
        let t = CoOpTrainTransform(size: resolution)
        var data: [Float] = []
        var augs: [AugmentationRecord] = []
        for (i, index) in indices.enumerated() {
            var rng = SeededGenerator(seed: seeds[i])
            let p = t.parameters(width: images[index].width, height: images[index].height, rng: &rng)
            data += t(images[index], p).data
            augs.append(AugmentationRecord(top: p.crop.top, left: p.crop.left, height: p.crop.height, width: p.crop.width, flip: p.flip))
        }
        return (Tensor(shape: [indices.count, 3, resolution, resolution], data: data), augs)
    }
}

/// 20 steps of DAPT (text context, visual prompt, CE + beta_v L_intra + beta_t L_inter) on the tiny
/// CLIP against DAPT's own model code in PyTorch (reference/dapt_goldens.py, fp32), from the same
/// initial parameters and the same augmented pixel batches (Goldens/dapt/inputs.safetensors, made
/// by this file with PROMPTTUNE_WRITE_DAPT_INPUTS=1).
final class DAPTParityTests: XCTestCase {
    static let dir = repoRoot.appendingPathComponent("Goldens/dapt")
    static let model = try! CLIPModel.load(path: repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path)
    static let steps = 20

    struct Golden: Decodable {
        var losses: [Double]
        var terms: [[String: Double]]
        var lrs: [Double]
        var accuracy: [Double]
    }

    struct Inputs: Codable {
        var indices: [[Int]]
        var labels: [[Int]]
        var augmentations: [[AugmentationRecord]]
        var prototype_augmentations: [AugmentationRecord]
        var image_labels: [Int]
        var lr0: Double
        var max_epoch: Int
        var batch_size: Int
        var beta_v: Float
        var beta_t: Float
        var tau: Float
        var seed: UInt64
        var classnames: [String]
    }

    static func config(npt: Bool = false) -> TrainConfig {
        var method = Method.dapt
        method.terms = [LossTerm("intra", weight: 100), LossTerm("inter", weight: 0.5, parameters: ["tau": 2])]
        if npt {
            method.terms += Method.nptTerms + [LossTerm("ia", weight: 1)]
            method.anchors = AnchorOptions()
        }
        var optimizer = OptimizerConfig()
        optimizer.learningRate = 0.5
        return TrainConfig(method: method, optimizer: optimizer, epochs: 4, batchSize: 4, seed: 1)
    }

    func makeTuner(_ config: TrainConfig = config(), initial: ParameterSet? = nil) throws -> PromptTuner {
        try PromptTuner(model: Self.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config,
                        initialParameters: initial)
    }

    /// Writes the inputs the PyTorch reference consumes (run once, then `python3 reference/dapt_goldens.py`).
    func testWriteInputs() throws {
        guard ProcessInfo.processInfo.environment["PROMPTTUNE_WRITE_DAPT_INPUTS"] != nil else {
            throw XCTSkip("set PROMPTTUNE_WRITE_DAPT_INPUTS=1 to rewrite Goldens/dapt/inputs.safetensors")
        }
        let config = Self.config()
        let tuner = try makeTuner(config)
        let images = SyntheticImages()
        let n = images.labels.count
        let r = Self.model.config.imageResolution
        let (protoPixels, protoAugs) = try images.load(Array(0..<n), seeds: (0..<n).map { augmentationSeed(config.seed, epoch: -1, index: $0) },
                                                       resolution: r)
        var pixels: [Float] = []
        var meta = Inputs(indices: [], labels: [], augmentations: [], prototype_augmentations: protoAugs, image_labels: images.labels,
                          lr0: config.optimizer.learningRate, max_epoch: config.epochs, batch_size: config.batchSize,
                          beta_v: 100, beta_t: 0.5, tau: 2, seed: config.seed, classnames: SyntheticImages.classNames)
        for epoch in 0..<config.epochs {
            for batch in tuner.drawBatches() {
                let b = try tuner.loadBatch(batch, epoch: epoch)
                pixels += b.pixels!.data
                meta.indices.append(b.indices)
                meta.labels.append(b.labels)
                meta.augmentations.append(b.augmentations!)
            }
        }
        XCTAssertEqual(meta.indices.count, Self.steps)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try Safetensors.write(tensors: [
            "text.context": tuner.initialParameters[ParameterName.textContext]!,
            "visual.prompt": tuner.initialParameters[ParameterName.visualPrompt]!,
            "prototype_pixels": protoPixels,
            "pixels": Tensor(shape: [Self.steps, config.batchSize, 3, r, r], data: pixels),
        ], metadata: ["inputs": String(decoding: try encoder.encode(meta), as: UTF8.self),
                      "made_by": "Tests/PromptLearningTests/DAPTParityTests.swift testWriteInputs"],
           to: Self.dir.appendingPathComponent("inputs.safetensors"))
    }

    func testTwentyStepsAgainstDAPTsReference() throws {
        let (inputTensors, inputMeta) = try Safetensors.read(path: Self.dir.appendingPathComponent("inputs.safetensors").path)
        let inputs = try JSONDecoder().decode(Inputs.self, from: Data(inputMeta["inputs"]!.utf8))
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.dir.appendingPathComponent("dapt.json")))
        let g = try Safetensors.read(path: Self.dir.appendingPathComponent("dapt.safetensors").path).tensors

        // The same initial parameters as drawn by the run's seed, and the same pixels as committed.
        let tuner = try makeTuner()
        XCTAssertEqual(tuner.initialParameters[ParameterName.textContext], inputTensors["text.context"])
        XCTAssertEqual(tuner.initialParameters[ParameterName.visualPrompt], inputTensors["visual.prompt"])
        let bound = VisualPromptConfig.initBound(patchSize: 8, width: 128)
        XCTAssertLessThanOrEqual(inputTensors["visual.prompt"]!.maxAbs, bound)
        let first = try tuner.loadBatch(inputs.indices[0], epoch: 0)
        XCTAssertEqual(first.pixels, inputTensors["pixels"]!.slice(rows: 0..<1).reshaped(first.pixels!.shape), "pixels of step 0")
        let protoWant = g["prototypes"]!
        XCTAssertLessThan(maxDiff(tuner.inputs.prototypes!, protoWant), 1e-5 * max(1, protoWant.maxAbs), "prototypes")

        let traceURL = FileManager.default.temporaryDirectory.appendingPathComponent("dapt-parity-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: traceURL) }
        tuner.trace = try TraceWriter(url: traceURL)
        var worstLoss = 0.0, worstParam: Float = 0
        var s = 0
        while !tuner.isFinished {
            try tuner.runEpoch { r in
                let rel = abs(r.value.total - golden.losses[s]) / abs(golden.losses[s])
                worstLoss = max(worstLoss, rel)
                XCTAssertLessThan(rel, 1e-5, "loss of step \(s)")
                XCTAssertEqual(r.learningRate, golden.lrs[s], accuracy: 1e-12, "lr of step \(s)")
                for (k, want) in golden.terms[s] {
                    let got = r.value.terms[k] ?? .nan
                    XCTAssertLessThan(abs(got - want), 1e-5 * max(abs(want), 1e-3), "term \(k) at step \(s): \(got) vs \(want)")
                }
                let want = ParameterSet([(ParameterName.textContext, g["text.context"]!.slice(rows: s..<(s + 1)).reshaped([16, 64])),
                                         (ParameterName.visualPrompt, g["visual.prompt"]!.slice(rows: s..<(s + 1)).reshaped([16, 128]))])
                let (name, rel2) = tuner.parameters.worstRelativeDifference(to: want)
                worstParam = max(worstParam, rel2)
                XCTAssertLessThan(rel2, 1e-4, "\(name) after step \(s)")
                s += 1
            }
        }
        XCTAssertEqual(s, Self.steps)
        print(String(format: "DAPT parity: %d steps, worst relative loss difference %.2e, worst relative parameter difference %.2e",
                     s, worstLoss, worstParam))
        // The trace records the batches and crops the reference consumed.
        let trace = try TraceWriter.read(url: traceURL)
        XCTAssertEqual(trace.map(\.indices), inputs.indices)
        XCTAssertEqual(trace.map { $0.augmentations ?? [] }, inputs.augmentations)
        for (t, want) in zip(trace, golden.losses) { XCTAssertLessThan(abs(t.loss - want) / abs(want), 1e-5, "trace loss") }
    }
}
