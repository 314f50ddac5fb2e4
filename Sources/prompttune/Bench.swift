import ArgumentParser
import CKernels
import CLIP
import Foundation
import TensorCore

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print their ratio against PyTorch measured in the same run.",
        subcommands: [Encoders.self, CoopStep.self, DAPTStep.self, CoCoOpStep.self, MaPLeStep.self, PromptSRCStep.self, Pipeline.self, GEMM.self])
}

/// Options every benchmark shares.
struct BenchOptions: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and for the PyTorch reference.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Timed runs after one warm-up; the best is reported.")
    var `repeat`: Int = 1

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(name: .customLong("no-reference"), help: "Skip the PyTorch reference even if it is importable.")
    var noReference = false

    @Option(help: "Python interpreter that runs the reference script.")
    var python = "python3"

    @Option(help: "Inputs of the products with layer weights (and the image tower's attention products): fp32 (exact) or bf16 (fp32 accumulation; PyTorch runs under autocast).")
    var precision: Precision = .fp32

    /// Threads for the run, and the backend that runs its model at `precision`; the GEMM path
    /// it uses, to print.
    func configure() throws -> (gemm: GEMMDiagnostics, backend: CPUBackend) {
        Compute.threads = threads
        let backend = try CPUBackend.default.with(precision: precision)
        return (GEMMDiagnostics.current(backend), backend)
    }

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1 (got \(threads))") }
        guard `repeat` >= 1 else { throw ValidationError("--repeat must be at least 1 (got \(`repeat`))") }
    }

    /// Best wall time of `repeat` runs after a warm-up.
    func time(_ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        for _ in 0..<`repeat` {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return best
    }

    /// Runs `reference/<script>` with PyTorch and returns its JSON, or why it did not run.
    func runReference(_ script: String, _ arguments: [String]) -> Result<[String: Any], ReferenceUnavailable> {
        if noReference { return .failure(.init(reason: "skipped (--no-reference)")) }
        guard let path = ReferenceScripts.locate(script) else {
            return .failure(.init(reason: "reference/\(script) not found (run from the repository root or set PROMPTTUNE_REFERENCE_DIR)"))
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, path, "--json", "--threads", String(threads), "--repeat", String(`repeat`)] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch {
            return .failure(.init(reason: "could not start \(python): \(error.localizedDescription)"))
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let last = errText.split(separator: "\n").last.map(String.init) ?? "exit \(process.terminationStatus)"
            return .failure(.init(reason: "PyTorch reference unavailable: \(last)"))
        }
        let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            return .failure(.init(reason: "reference printed no JSON: \(line.prefix(200))"))
        }
        return .success(obj)
    }
}

struct ReferenceUnavailable: Error { var reason: String }

extension Precision: ExpressibleByArgument {}

enum ReferenceScripts {
    /// reference/<name> under $PROMPTTUNE_REFERENCE_DIR, the working directory, or this checkout.
    static func locate(_ name: String) -> String? {
        var dirs: [String] = []
        if let env = ProcessInfo.processInfo.environment["PROMPTTUNE_REFERENCE_DIR"] { dirs.append(env) }
        dirs.append(FileManager.default.currentDirectoryPath + "/reference")
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        dirs.append(repo.appendingPathComponent("reference").path)
        return dirs.map { $0 + "/" + name }.first { FileManager.default.fileExists(atPath: $0) }
    }
}

/// Prints `rows` as an aligned two-column table.
func printTable(_ title: String, _ rows: [(String, String)]) {
    print(title)
    let width = rows.map(\.0.count).max() ?? 0
    for (k, v) in rows { print("  " + k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v) }
}

extension Bench {
    struct Encoders: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "ViT-B/16 (or RN50) text tower (100 CoOp-layout prompts) and image tower (32 images), random weights.")

        /// The random model the encoders run.
        enum ModelKind: String, ExpressibleByArgument, CaseIterable {
            case vitB16 = "vit-b-16"
            case rn50
            var config: CLIPConfig { self == .rn50 ? .rn50 : .vitB16 }
            var title: String { self == .rn50 ? "RN50" : "ViT-B/16" }
        }

        @OptionGroup var bench: BenchOptions
        @Option(name: .customLong("model-kind"), help: "vit-b-16 or rn50 (ModifiedResNet image tower; its text tower is ViT-B/16's).")
        var modelKind: ModelKind = .vitB16
        @Option(help: "Prompts in the text batch.") var prompts = 100
        @Option(help: "Images in the image batch.") var images = 32

        /// Normwise relative error ||a - b|| / ||b|| over all features, and the smallest cosine
        /// between a row of `a` and the same row of `b`.
        static func featureError(_ a: Tensor, _ b: Tensor) -> (relative: Double, minCosine: Double) {
            var diff = 0.0, norm = 0.0, minCos = 1.0
            let c = b.lastDim
            for r in 0..<b.rows {
                var ab = 0.0, aa = 0.0, bb = 0.0
                for j in 0..<c {
                    let (u, v) = (Double(a[r * c + j]), Double(b[r * c + j]))
                    diff += (u - v) * (u - v); ab += u * v; aa += u * u; bb += v * v
                }
                norm += bb
                minCos = min(minCos, ab / (aa * bb).squareRoot())
            }
            return ((diff / norm).squareRoot(), minCos)
        }

        /// SOS + 16 context vectors + a 1-5 token class name + "." + EOT, as CoOp lays prompts out.
        static func coopLayout(prompts: Int) -> (eot: [Int], tokens: Int) {
            let eot = (0..<prompts).map { 1 + 16 + (1 + $0 % 5) + 1 }
            return (eot, (eot.max() ?? 0) + 1)
        }

        func run() throws {
            let (gemm, backend) = try bench.configure()
            let config = modelKind.config
            let model = CLIPModel.random(config: config, seed: 0).on(backend)
            var rng = SeededGenerator(seed: 1)
            let (eot, tokens) = Self.coopLayout(prompts: prompts)
            let x = Tensor.randomNormal([prompts, tokens, config.textWidth], std: 0.02, using: &rng)
            let r = config.imageResolution
            let pixels = Tensor.randomNormal([images, 3, r, r], using: &rng)

            var textOut = Tensor(zeros: [0]), imageOut = Tensor(zeros: [0])
            let textS = bench.time { textOut = model.text.forward(embeddings: x, eot: eot).0 }
            let imageS = bench.time { imageOut = model.image.forward(pixels: pixels).0 }
            let textGF = FLOPs.textForward(config, lengths: eot.map { $0 + 1 }) / textS / 1e9
            let imageGF = FLOPs.imageForward(config, batch: images) / imageS / 1e9

            var result: [String: Any] = [
                "text_forward_s": textS, "image_forward_s": imageS, "text_gflops": textGF, "image_gflops": imageGF,
                "threads": bench.threads, "prompts": prompts, "tokens": tokens, "images": images,
                "kernels": pt_kernels_isa() == 1 ? "avx512" : "portable", "gemm": gemm.json,
                "precision": bench.precision.rawValue, "model": modelKind.rawValue,
            ]
            var rows: [(String, String)] = [
                ("text forward", String(format: "%.3f s  %6.1f GFLOP/s  (%d prompts, rows cut after each EOT, at most %d tokens)", textS, textGF, prompts, tokens)),
                ("image forward", String(format: "%.3f s  %6.1f GFLOP/s  (%d images)", imageS, imageGF, images)),
            ]
            if modelKind == .rn50 {
                let conv = Conv2D.oneDNNImplementation(bf16: bench.precision == .bf16)
                result["conv_kernel"] = conv
                rows.append(("convolutions", "\(conv) (NHWC, batch norms folded)"))
            }
            if bench.precision != .fp32 {
                // What the precision changes: the features against fp32 features of the same inputs.
                let exact = model.on(CPUBackend.default)
                let t32 = exact.text.forward(embeddings: x, eot: eot).0, i32 = exact.image.forward(pixels: pixels).0
                let te = Self.featureError(textOut, t32), ie = Self.featureError(imageOut, i32)
                result["text_feature_error"] = ["relative": te.relative, "min_cosine": te.minCosine]
                result["image_feature_error"] = ["relative": ie.relative, "min_cosine": ie.minCosine]
                rows.append(("vs fp32 features", String(format: "text: relative error %.1e, min cosine %.6f; image: relative error %.1e, min cosine %.6f",
                                                         te.relative, te.minCosine, ie.relative, ie.minCosine)))
            }
            switch bench.runReference("bench_encoders.py", ["--prompts", String(prompts), "--images", String(images),
                                                            "--precision", bench.precision.rawValue, "--model-kind", modelKind.rawValue]) {
            case .success(let ref):
                let rt = (ref["text_forward_s"] as? Double) ?? .nan, ri = (ref["image_forward_s"] as? Double) ?? .nan
                result["reference"] = ref
                result["text_ratio"] = rt / textS
                result["image_ratio"] = ri / imageS
                rows += [("PyTorch text", String(format: "%.3f s  ratio %.2fx", rt, rt / textS)),
                         ("PyTorch image", String(format: "%.3f s  ratio %.2fx", ri, ri / imageS))]
                if bench.precision == .bf16 { rows.append(("PyTorch", "bf16 under torch.autocast(\"cpu\", dtype=torch.bfloat16)")) }
            case .failure(let why):
                result["reference"] = ["unavailable": why.reason]
                rows.append(("PyTorch", why.reason))
            }
            if bench.json { print(try jsonText(result)) } else {
                printTable("bench encoders: \(modelKind.title), \(bench.threads) threads, \(bench.precision.rawValue) (ratio = PyTorch time / ours)", rows + gemm.rows)
            }
        }
    }
}

extension BenchOptions {
    /// Runs the PyTorch side of a step benchmark (`reference/<script>`, printing `step_s` and
    /// `peak_rss_mb`) and adds its time, the ratio (reference / ours) and its memory to `result`
    /// (`reference_step_s`, `ratio`, `reference_peak_rss_mb`, `reference`) and a row to `table`;
    /// where it cannot run, the reason. Returns the reference's step time.
    @discardableResult
    func compareStep(_ script: String, _ arguments: [String], ours stepS: Double, label: String,
                     result: inout [String: Any], table: inout [(String, String)]) -> Double? {
        switch runReference(script, arguments) {
        case .success(let ref):
            let refS = (ref["step_s"] as? Double) ?? .nan
            result["reference_step_s"] = refS
            result["ratio"] = refS / stepS
            result["reference_peak_rss_mb"] = ref["peak_rss_mb"]
            result["reference"] = ref
            table.append((label, String(format: "%.3f s  ratio %.2fx  peak RSS %.0f MB", refS, refS / stepS,
                                        (ref["peak_rss_mb"] as? Double) ?? .nan)))
            return refS
        case .failure(let why):
            result["reference"] = ["unavailable": why.reason]
            table.append(("PyTorch", why.reason))
            return nil
        }
    }

    /// Prints a step benchmark: its JSON with `--json`, else the table with the GEMM rows.
    func report(_ title: String, result: [String: Any], table: [(String, String)], gemm: GEMMDiagnostics) throws {
        var result = result
        result["gemm"] = gemm.json
        result["precision"] = precision.rawValue
        if json { print(try jsonText(result)) } else {
            printTable("\(title), \(threads) threads, \(precision.rawValue) (ratio = PyTorch time / ours)", table + gemm.rows)
        }
    }
}
