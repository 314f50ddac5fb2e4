import ArgumentParser
import CLIP
import Foundation
import PromptLearning
import TensorCore

extension Bench {
    struct MaPLeStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "maple-step",
            abstract: "One MaPLe step (both towers forward with the coupled deep prompts, backward to the context, the deep text prompts and every projection through the frozen ViT-B/16, SGD).")

        @OptionGroup var bench: BenchOptions
        @Option(help: "Classes.") var classes = 100
        @Option(help: "Images per batch (MaPLe's recipe: 4).") var batch = 4
        @Option(name: .customLong("prompt-depth"), help: "Prompt depth (MaPLe's base-to-novel: 9).") var depth = 9

        func run() throws {
            let (gemm, backend) = try bench.configure()
            let clip = CLIPModel.random(config: .vitB16, seed: 0).on(backend)
            let names = (0..<classes).map { Array(repeating: "cat", count: 1 + $0 % 5).joined(separator: " ") }
            var rng = SeededGenerator(seed: 3)
            let r = clip.config.imageResolution
            let images = BenchImages(pixels: Tensor.randomNormal([batch, 3, r, r], using: &rng),
                                     labels: (0..<batch).map { _ in Int(rng.next() % UInt64(classes)) }, classNames: names)
            var optimizer = OptimizerConfig()
            optimizer.warmupEpochs = 0
            var method = Method.maple
            method.maple?.promptDepth = depth
            let config = TrainConfig(method: method, optimizer: optimizer, epochs: 1, batchSize: batch, seed: 1)
            let tuner = try PromptTuner(model: clip, tokenizer: try CLIPTokenizer(), data: .images(images), config: config)
            let b = try tuner.loadBatch(Array(0..<batch), epoch: 0)
            var failure: Error?
            let stepS = bench.time {
                do { try tuner.step(b, lr: 0.0035) } catch { failure = error }
            }
            if let failure { throw failure }
            let rss = peakRSSMegabytes()
            var result: [String: Any] = ["step_s": stepS, "peak_rss_mb": rss, "classes": classes, "batch": batch, "depth": depth,
                                         "threads": bench.threads]
            var table: [(String, String)] = [
                ("step", String(format: "%.3f s  (shared text prefix, rows cut after EOT, frozen towers: input gradients only)", stepS)),
                ("peak RSS", String(format: "%.0f MB", rss)),
            ]
            bench.compareStep("bench_maple_step.py", ["--classes", String(classes), "--batch", String(batch), "--depth", String(depth)], ours: stepS, label: "PyTorch (MaPLe's own code, fp32)", result: &result, table: &table)
            try bench.report("bench maple-step: ViT-B/16, \(classes) classes, batch \(batch), depth \(depth)", result: result, table: table, gemm: gemm)
        }
    }
}
