import ArgumentParser
import CLIP
import Foundation
import PromptLearning
import TensorCore
import TensorIO

/// Peak resident memory of this process (VmHWM), in MB.
func peakRSSMegabytes() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
    return kb / 1024
}

extension Bench {
    struct CoopStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "coop-step",
            abstract: "One CoOp step (forward, backward to the context, SGD) for 100 classes on the ViT-B/16 text tower.")

        @OptionGroup var bench: BenchOptions
        @Option(help: "Classes.") var classes = 100
        @Option(help: "Batch of image features.") var batch = 32

        func run() throws {
            let (gemm, backend) = try bench.configure()
            let clip = CLIPModel.random(config: .vitB16, seed: 0).on(backend)
            // Class names of 1-5 tokens ("cat", "cat cat", ...), 16 shared context vectors, class at the end.
            let names = (0..<classes).map { Array(repeating: "cat", count: 1 + $0 % 5).joined(separator: " ") }
            var rng = SeededGenerator(seed: 3)
            let images = Tensor.randomNormal([batch, 512], using: &rng)
            let labels = (0..<batch).map { _ in Int(rng.next() % UInt64(classes)) }
            let features = LabeledFeatures(features: images.reshaped([1, batch, 512]), labels: labels, classNames: names)
            var optimizer = OptimizerConfig()
            optimizer.warmupEpochs = 0
            let config = TrainConfig(method: .coop, optimizer: optimizer, epochs: 1, batchSize: batch, seed: 1)
            let tokenizer = try CLIPTokenizer()
            let trainer = try PromptTuner(model: clip, tokenizer: tokenizer, data: .features(features), config: config)
            let all = try trainer.loadBatch(Array(0..<batch), epoch: 0)
            var failure: Error?
            let stepS = bench.time {
                do { try trainer.step(all, lr: 0.002) } catch { failure = error }
            }
            if let failure { throw failure }
            var unused = SeededGenerator(seed: 0)
            let learner = try PromptLearner(config: config.method.prompt, classNames: names, text: clip.text, tokenizer: tokenizer,
                                            context: trainer.context, rng: &unused)
            let eot: [Int] = learner.eot
            let rows: Int = 1 + 16 + eot.reduce(0) { $0 + $1 - 16 }
            var result: [String: Any] = [
                "step_s": stepS, "peak_rss_mb": peakRSSMegabytes(), "classes": classes, "threads": bench.threads,
                "text_rows": rows, "rows_cut_after_last_eot": classes * ((eot.max() ?? 0) + 1),
            ]
            var table: [(String, String)] = [
                ("step", String(format: "%.3f s  (%d rows: shared prefix once + each class's own rows)", stepS, rows)),
                ("peak RSS", String(format: "%.0f MB", peakRSSMegabytes())),
            ]
            switch bench.runReference("bench_coop_step.py", ["--classes", String(classes), "--batch", String(batch)]) {
            case .success(let ref):
                let full = (ref["full_step_s"] as? Double) ?? .nan, cut = (ref["cut_step_s"] as? Double) ?? .nan
                result["reference"] = ref
                result["ratio_vs_full"] = full / stepS
                result["ratio_vs_cut"] = cut / stepS
                table += [("PyTorch, 77 positions", String(format: "%.3f s  ratio %.1fx", full, full / stepS)),
                          ("PyTorch, rows cut", String(format: "%.3f s  ratio %.1fx", cut, cut / stepS))]
            case .failure(let why):
                result["reference"] = ["unavailable": why.reason]
                table.append(("PyTorch", why.reason))
            }
            result["gemm"] = gemm.json
            result["precision"] = bench.precision.rawValue
            if bench.precision != .fp32 { table.append(("PyTorch", "runs fp32 (its reference has no autocast)")) }
            if bench.json { print(try jsonText(result)) } else {
                printTable("bench coop-step: ViT-B/16 text tower, \(classes) classes, batch \(batch), \(bench.threads) threads, \(bench.precision.rawValue) (ratio = PyTorch time / ours)", table + gemm.rows)
            }
        }
    }
}
