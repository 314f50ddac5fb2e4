import ArgumentParser
import CLIP
import Foundation
import Imaging
import TensorCore

struct PipelineError: Error, CustomStringConvertible { var description: String }

extension Bench {
    struct Pipeline: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decode + CLIP preprocessing of a folder of images, and the same plus the ViT-B/16 image tower (random weights).",
            discussion: """
                Times (a) decode + CLIP test preprocessing (shorter side to 224 bicubic, center crop, \
                normalise) of every JPEG/PNG file directly in --images, split over --threads workers, and \
                (b) the same in batches of --batch, each batch then encoded by the ViT-B/16 image tower. \
                The reference reads the same files with a PyTorch DataLoader (num_workers = --threads). \
                Ratio = our images per second / PyTorch's (>1 = faster).
                """)

        @OptionGroup var bench: BenchOptions
        @Option(help: "Folder of JPEG/PNG images (not searched recursively).") var images: String
        @Option(help: "Use only the first N images (by name).") var limit: Int?
        @Option(help: "Images per image-tower forward pass.") var batch = 32

        func validate() throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1 (got \(limit))") }
            guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch))") }
        }

        static let extensions: Set<String> = ["jpg", "jpeg", "png"]

        /// The JPEG/PNG files directly in `folder`, sorted by name as Python's `sorted` does
        /// (code point order), dotfiles skipped; the reference lists the same files.
        static func listImages(_ folder: String, limit: Int?) throws -> [String] {
            let fm = FileManager.default
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
                throw PipelineError(description: "image folder \(folder) does not exist or is not a folder")
            }
            let names = try fm.contentsOfDirectory(atPath: folder).filter { name in
                guard !name.hasPrefix("."),
                      Self.extensions.contains((name as NSString).pathExtension.lowercased()) else { return false }
                var dir: ObjCBool = false
                return fm.fileExists(atPath: folder + "/" + name, isDirectory: &dir) && !dir.boolValue
            }.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
            guard !names.isEmpty else { throw PipelineError(description: "no JPEG or PNG files (.jpg, .jpeg, .png) in \(folder)") }
            return names.prefix(limit ?? names.count).map { folder + "/" + $0 }
        }

        /// Runs body(i) for every i in 0..<count, split over `threads` workers (striding).
        static func parallel(_ count: Int, threads: Int, _ body: (Int) -> Void) {
            let workers = min(threads, count)
            if workers <= 1 {
                for i in 0..<count { body(i) }
                return
            }
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                var i = w
                while i < count { body(i); i += workers }
            }
        }

        /// Decodes and preprocesses `paths` in parallel; `store(i, tensor)` receives each result.
        /// Throws the first failure (by index).
        static func preprocess(_ paths: ArraySlice<String>, resolution: Int, threads: Int,
                               _ store: (Int, Tensor) -> Void) throws {
            var errors = [Error?](repeating: nil, count: paths.count)
            errors.withUnsafeMutableBufferPointer { errs in
                parallel(paths.count, threads: threads) { i in
                    do {
                        let image = try decodeImage(path: paths[paths.startIndex + i])
                        store(i, clipPreprocess(image, resolution: resolution))
                    } catch { errs[i] = error }
                }
            }
            if let first = errors.lazy.compactMap({ $0 }).first { throw first }
        }

        func run() throws {
            let paths = try Self.listImages(images, limit: limit)
            let n = paths.count
            let threads = bench.threads
            let (gemm, backend) = try bench.configure()
            let model = CLIPModel.random(config: .vitB16, seed: 0).on(backend)
            let r = model.config.imageResolution
            let plane = 3 * r * r

            // (a) decode + preprocess every image; results dropped (a checksum keeps them used).
            var failure: Error?
            var checksum = [Float](repeating: 0, count: n)
            let preS = bench.time {
                do {
                    try checksum.withUnsafeMutableBufferPointer { sums in
                        try Self.preprocess(paths[...], resolution: r, threads: threads) { i, t in sums[i] = t.data[0] }
                    }
                } catch { failure = error }
            }
            if let failure { throw failure }

            // (b) per batch: decode + preprocess in parallel into one [B,3,R,R] tensor, then the image tower
            // (each batch reusing the buffers of the one before, as feature extraction does).
            let encS = bench.time {
                do {
                    let workspace = Workspace()
                    for start in stride(from: 0, to: n, by: batch) {
                        let count = min(batch, n - start)
                        var pixels = [Float](repeating: 0, count: count * plane)
                        try pixels.withUnsafeMutableBufferPointer { buf in
                            try Self.preprocess(paths[start..<(start + count)], resolution: r, threads: threads) { i, t in
                                t.data.withUnsafeBufferPointer { src in
                                    _ = UnsafeMutableBufferPointer(rebasing: buf[(i * plane)..<((i + 1) * plane)])
                                        .update(fromContentsOf: src)
                                }
                            }
                        }
                        let (features, _) = model.image.forward(pixels: Tensor(shape: [count, 3, r, r], data: pixels),
                                                                workspace: workspace)
                        checksum[start] += features.data[0]
                    }
                } catch { failure = error }
            }
            if let failure { throw failure }

            let pre = Double(n) / preS, enc = Double(n) / encS
            var result: [String: Any] = [
                "preprocess_images_per_s": pre, "encode_images_per_s": enc, "preprocess_s": preS, "encode_s": encS,
                "images": n, "threads": threads, "batch": batch,
            ]
            var preRow = String(format: "%8.1f images/s  (%.3f s)", pre, preS)
            var encRow = String(format: "%8.1f images/s  (%.3f s)", enc, encS)
            var extra: [(String, String)] = []
            var args = ["--images", images, "--batch", String(batch)]
            if let limit { args += ["--limit", String(limit)] }
            switch bench.runReference("bench_pipeline.py", args) {
            case .success(let ref):
                let rp = (ref["preprocess_images_per_s"] as? Double) ?? .nan
                let re = (ref["encode_images_per_s"] as? Double) ?? .nan
                result["reference"] = ref
                result["preprocess_ratio"] = pre / rp
                result["encode_ratio"] = enc / re
                preRow += String(format: "  PyTorch %8.1f images/s  ratio %.2fx", rp, pre / rp)
                encRow += String(format: "  PyTorch %8.1f images/s  ratio %.2fx", re, enc / re)
                if let refN = ref["images"] as? Int, refN != n {
                    extra.append(("warning", "PyTorch read \(refN) images, we read \(n)"))
                }
            case .failure(let why):
                result["reference"] = ["unavailable": why.reason]
                extra.append(("PyTorch", why.reason))
            }
            result["gemm"] = gemm.json
            result["precision"] = bench.precision.rawValue
            if bench.precision != .fp32 { extra.append(("PyTorch", "runs fp32 (its reference has no autocast)")) }
            if bench.json { print(try jsonText(result)) } else {
                printTable("bench pipeline: \(n) images from \(images), ViT-B/16 (random weights), batch \(batch), "
                           + "\(threads) threads, \(bench.precision.rawValue) (ratio = our images/s / PyTorch's)",
                           [("decode + preprocess", preRow), ("decode + preprocess + encode", encRow)] + extra + gemm.rows)
            }
        }
    }
}
