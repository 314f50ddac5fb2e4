import ArgumentParser
import CLIP
import Foundation
import PromptLearning
import TensorCore

/// Fixed random pixels standing in for decoded images (the bench times the step, not decoding).
typealias BenchImages = FixedImages

extension Bench {
    struct DAPTStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dapt-step",
            abstract: "One DAPT step (both towers forward, backward to the text context and the visual prompt through the frozen ViT-B/16, SGD).")

        @OptionGroup var bench: BenchOptions
        @Option(help: "Classes.") var classes = 100
        @Option(help: "Images per batch.") var batch = 32

        func run() throws {
            let (gemm, backend) = try bench.configure()
            let clip = CLIPModel.random(config: .vitB16, seed: 0).on(backend)
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
