import ArgumentParser
import CLIP
import Foundation
import PromptLearning
import TensorCore

/// Fixed random pixels standing in for decoded images (the bench times the step, not decoding).
struct BenchImages: TrainingImages {
    let pixels: Tensor
    let labels: [Int]
    let classNames: [String]
    var digest: String { "bench" }
    func load(_ indices: [Int], seeds: [UInt64], resolution: Int) throws -> (pixels: Tensor, augmentations: [AugmentationRecord]) {
        let size = 3 * resolution * resolution
        var data: [Float] = []
        data.reserveCapacity(indices.count * size)
        for i in indices { data += pixels.data[(i * size)..<((i + 1) * size)] }
        return (Tensor(shape: [indices.count, 3, resolution, resolution], data: data),
                indices.map { _ in AugmentationRecord(top: 0, left: 0, height: resolution, width: resolution, flip: false) })
    }
}

extension Bench {
    struct DAPTStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dapt-step",
            abstract: "One DAPT step (both towers forward, backward to the text context and the visual prompt through the frozen ViT-B/16, SGD).")

        @OptionGroup var bench: BenchOptions
        @Option(help: "Classes.") var classes = 100
        @Option(help: "Images per batch.") var batch = 32

        func run() throws {
            let gemm = try bench.configure()
            let clip = CLIPModel.random(config: .vitB16, seed: 0)
            let names = (0..<classes).map { Array(repeating: "cat", count: 1 + $0 % 5).joined(separator: " ") }
            var rng = SeededGenerator(seed: 3)
            let r = clip.config.imageResolution
            let images = BenchImages(pixels: Tensor.randomNormal([batch, 3, r, r], using: &rng),
                                     labels: (0..<batch).map { _ in Int(rng.next() % UInt64(classes)) }, classNames: names)
            let prototypes = L2Normalize.forward(Tensor.randomNormal([classes, clip.config.embedDim], using: &rng)).0
            var optimizer = OptimizerConfig()
            optimizer.warmupEpochs = 0
            let config = TrainConfig(method: .dapt, optimizer: optimizer, epochs: 1, batchSize: batch, seed: 1)
            let tuner = try PromptTuner(model: clip, tokenizer: try CLIPTokenizer(), data: .images(images), config: config,
                                        prototypes: prototypes)
            let b = try tuner.loadBatch(Array(0..<batch), epoch: 0)
            var failure: Error?
            let stepS = bench.time {
                do { try tuner.step(b, lr: 0.002) } catch { failure = error }
            }
            if let failure { throw failure }
            let rss = peakRSSMegabytes()
            var result: [String: Any] = ["step_s": stepS, "peak_rss_mb": rss, "classes": classes, "batch": batch,
                                         "threads": bench.threads, "image_tokens": 1 + 16 + clip.image.patchesPerImage]
            var table: [(String, String)] = [
                ("step", String(format: "%.3f s", stepS)),
                ("peak RSS", String(format: "%.0f MB", rss)),
            ]
            bench.compareStep("bench_dapt_step.py", ["--classes", String(classes), "--batch", String(batch)], ours: stepS, label: "PyTorch (DAPT's model, fp32)", result: &result, table: &table)
            try bench.report("bench dapt-step: ViT-B/16, \(classes) classes, batch \(batch)", result: result, table: table, gemm: gemm)
        }
    }
}
