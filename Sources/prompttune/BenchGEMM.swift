import ArgumentParser
import CKernels
import Foundation
import TensorCore

extension Bench {
    struct GEMM: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gemm",
            abstract: "GFLOP/s of the towers' layer products (ViT-B/16) per backend, against the measured fp32 FMA peak.",
            discussion: """
                Each product is a Linear forward (y = x W^T + b) as the towers run it: oneDNN with the
                weight prepacked (fp32, and bf16 where the CPU has it) and OpenBLAS's sgemm. The peak
                is a loop of independent vector FMAs on every thread. Errors are normwise, on sampled
                rows, against a Double reference. No PyTorch here: its GEMMs are timed inside
                `bench encoders`.
                """)

        @OptionGroup var bench: BenchOptions
        @Option(help: "Images (image-tower rows = 197 per image).") var images = 32
        @Option(help: "Text rows (100 CoOp prompts cut after each EOT make about 2200).") var textRows = 2200

        struct Shape { var tower: String, layer: String, rows: Int, inFeatures: Int, outFeatures: Int }

        var shapes: [Shape] {
            let i = images * 197, t = textRows
            return [Shape(tower: "image", layer: "qkv", rows: i, inFeatures: 768, outFeatures: 2304),
                    Shape(tower: "image", layer: "out", rows: i, inFeatures: 768, outFeatures: 768),
                    Shape(tower: "image", layer: "fc", rows: i, inFeatures: 768, outFeatures: 3072),
                    Shape(tower: "image", layer: "proj", rows: i, inFeatures: 3072, outFeatures: 768),
                    Shape(tower: "text", layer: "qkv", rows: t, inFeatures: 512, outFeatures: 1536),
                    Shape(tower: "text", layer: "out", rows: t, inFeatures: 512, outFeatures: 512),
                    Shape(tower: "text", layer: "fc", rows: t, inFeatures: 512, outFeatures: 2048),
                    Shape(tower: "text", layer: "proj", rows: t, inFeatures: 2048, outFeatures: 512)]
        }

        /// fp32 FMA peak of `threads` threads, GFLOP/s (best of three 0.2 s runs).
        static func peak(threads: Int) -> Double {
            var best = 0.0
            for _ in 0..<3 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                let flops = UnsafeMutablePointer<Double>.allocate(capacity: threads)
                defer { flops.deallocate() }
                DispatchQueue.concurrentPerform(iterations: threads) { w in
                    var sink: Float = 0
                    flops[w] = pt_fma_peak_loop(8_000_000, &sink)
                }
                let s = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                best = max(best, (0..<threads).reduce(0) { $0 + flops[$1] } / s / 1e9)
            }
            return best
        }

        func run() throws {
            let (gemm, backend) = try bench.configure()
            let peak = Self.peak(threads: bench.threads)
            var rng = SeededGenerator(seed: 5)
            let bf16 = backend.canRunBF16
            var rows: [(String, String)] = []
            var results: [[String: Any]] = []
            for s in shapes {
                let x = Tensor.randomNormal([s.rows, s.inFeatures], using: &rng)
                var layer = Linear(weight: Tensor.randomNormal([s.outFeatures, s.inFeatures], std: 0.02, using: &rng),
                                   bias: Tensor.randomNormal([s.outFeatures], std: 0.02, using: &rng))
                let flop = 2.0 * Double(s.rows * s.inFeatures * s.outFeatures)
                func measure(_ backend: GEMMBackend, _ precision: Precision) throws -> (gflops: Double, error: Double) {
                    layer.backend = try CPUBackend(gemm: backend).with(precision: precision)
                    // As the towers run it: the output's buffer reused from a workspace, so no
                    // fresh pages are faulted in inside the timing.
                    let workspace = Workspace()
                    let t = bench.time { workspace.recycle(layer.forward(x, workspace: workspace)) }
                    return (flop / t / 1e9, layer.referenceError(of: layer.forward(x), input: x, rowStep: x.rows / 4))
                }
                let dnnl = try measure(.oneDNN, .fp32), blas = try measure(.openBLAS, .fp32)
                let half = bf16 ? try measure(.oneDNN, .bf16) : nil
                var line = String(format: "onednn %6.1f (%3.0f%%, err %.0e)  openblas %6.1f (%3.0f%%, err %.0e)",
                                  dnnl.gflops, 100 * dnnl.gflops / peak, dnnl.error,
                                  blas.gflops, 100 * blas.gflops / peak, blas.error)
                if let half { line += String(format: "  onednn bf16 %6.1f (%.1fx fp32 peak, err %.0e)", half.gflops, half.gflops / peak, half.error) }
                rows.append(("\(s.tower) \(s.layer) \(s.rows)x\(s.inFeatures).\(s.inFeatures)x\(s.outFeatures)", line))
                var r: [String: Any] = ["tower": s.tower, "layer": s.layer, "m": s.rows, "k": s.inFeatures, "n": s.outFeatures,
                                        "onednn_gflops": dnnl.gflops, "onednn_error": dnnl.error,
                                        "openblas_gflops": blas.gflops, "openblas_error": blas.error]
                if let half { r["onednn_bf16_gflops"] = half.gflops; r["onednn_bf16_error"] = half.error }
                results.append(r)
            }
            if bench.json {
                print(try jsonText(["peak_gflops": peak, "threads": bench.threads, "shapes": results, "gemm": gemm.json]))
            } else {
                printTable(String(format: "bench gemm: ViT-B/16 layer products, %d threads, GFLOP/s (%% of the %.0f GFLOP/s fp32 FMA peak)",
                                  bench.threads, peak), rows + gemm.rows)
            }
        }
    }
}
