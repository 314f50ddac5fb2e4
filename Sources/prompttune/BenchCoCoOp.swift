import ArgumentParser
import CLIP
import Foundation
import PromptLearning
import TensorCore

extension Bench {
    struct CoCoOpStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cocoop-step",
            abstract: "One CoCoOp step (frozen image tower forward, every image's K prompts through the text tower, backward to the context and the meta-net, SGD) at ViT-B/16.")

        @OptionGroup var bench: BenchOptions
        @Option(help: "Classes.") var classes = 100
        @Option(help: "Images per batch (CoCoOp's recipe: 1).") var batch = 1

        func run() throws {
            let (gemm, backend) = try bench.configure()
            let clip = CLIPModel.random(config: .vitB16, seed: 0).on(backend)
            let names = (0..<classes).map { Array(repeating: "cat", count: 1 + $0 % 5).joined(separator: " ") }
            var rng = SeededGenerator(seed: 3)
            let r = clip.config.imageResolution
            let labels = (0..<batch).map { _ in Int(rng.next() % UInt64(classes)) }
            let pixels = Tensor.randomNormal([batch, 3, r, r], using: &rng)
            var optimizer = OptimizerConfig()
            optimizer.warmupEpochs = 0
            let config = TrainConfig(method: .cocoop, optimizer: optimizer, epochs: 1, batchSize: batch, seed: 1)
            let tokenizer = try CLIPTokenizer()
            // The same work as the reference's step: the images through the frozen tower, then the prompts.
            let tuner = try PromptTuner(model: clip, tokenizer: tokenizer,
                                        data: .images(BenchImages(pixels: pixels, labels: labels, classNames: names)), config: config)
            let b = try tuner.loadBatch(Array(0..<batch), epoch: 0)
            var failure: Error?
            let stepS = bench.time {
                do { try tuner.step(b, lr: 0.002) } catch { failure = error }
            }
            if let failure { throw failure }
            // From cached image features (what a grid cell on cached views does): the prompts only.
            let features = LabeledFeatures(features: clip.encodeImage(pixels).reshaped([1, batch, clip.config.embedDim]), labels: labels,
                                           classNames: names)
            let cached = try PromptTuner(model: clip, tokenizer: tokenizer, data: .features(features), config: config)
            let cb = try cached.loadBatch(Array(0..<batch), epoch: 0)
            let cachedS = bench.time {
                do { try cached.step(cb, lr: 0.002) } catch { failure = error }
            }
            if let failure { throw failure }
            let rss = peakRSSMegabytes()
            var result: [String: Any] = ["step_s": stepS, "cached_features_step_s": cachedS, "peak_rss_mb": rss, "classes": classes,
                                         "batch": batch, "threads": bench.threads]
            var table: [(String, String)] = [
                ("step", String(format: "%.3f s  (image tower forward + %d images x %d prompts, shared prefix per image, rows cut after EOT)", stepS, batch, classes)),
                ("step, cached features", String(format: "%.3f s", cachedS)),
                ("peak RSS", String(format: "%.0f MB", rss)),
            ]
            if let refS = bench.compareStep("bench_cocoop_step.py", ["--classes", String(classes), "--batch", String(batch)], ours: stepS,
                                            label: "PyTorch (CoOp's cocoop.py, fp32)", result: &result, table: &table) {
                result["ratio_cached_features"] = refS / cachedS
                table.append(("ratio from cached features", String(format: "%.2fx", refS / cachedS)))
            }
            try bench.report("bench cocoop-step: ViT-B/16, \(classes) classes, batch \(batch)", result: result, table: table, gemm: gemm)
        }
    }
}
