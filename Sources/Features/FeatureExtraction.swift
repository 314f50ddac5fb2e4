import CLIP
import Datasets
import Foundation
import Imaging
import TensorCore
import TensorIO

/// Everything that decides the numbers in a features file. Two runs with equal plans produce
/// the same features; a file or a partial run made under another plan is never reused.
public struct ExtractionPlan: Codable, Equatable, Sendable {
    public var modelDigest: String
    public var imagesDigest: String
    public var count: Int
    /// "test" (resize, centre crop) or "train" (RandomResizedCrop + flip, seeded per image and view).
    public var transform: String
    public var views: Int
    public var resolution: Int
    public var seed: UInt64
    /// The towers' product precision when it is not exact fp32 ("bf16"); nil (absent) for fp32, so
    /// fp32 plans are unchanged and a bf16 file is never taken for an fp32 one.
    public var precision: String?

    /// `precision`: the product precision of the model that encodes (its backend's).
    public init(modelDigest: String, items: [Datum], transform: String, views: Int, resolution: Int, seed: UInt64,
                precision: Precision = .fp32) {
        self.precision = precision == .fp32 ? nil : precision.rawValue
        self.modelDigest = modelDigest
        let list = items.map { "\($0.path)\t\($0.label)\t\($0.className)" }.joined(separator: "\n")
        self.imagesDigest = Data(list.utf8).withUnsafeBytes { contentDigest($0) }
        self.count = items.count
        self.transform = transform
        self.views = views
        self.resolution = resolution
        self.seed = seed
    }

    /// The plan as sorted-key JSON: what the features file and `<out>.partial/plan.json` record.
    public var asJSON: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }
}

public struct ExtractionError: Error, CustomStringConvertible, LocalizedError {
    public var description: String
    public var errorDescription: String? { description }
    public init(description: String) { self.description = description }
}

/// Bytes an extraction holds at once: the decoded pixels of one chunk (every view) and the
/// assembled features of every image and view (twice: the per-view rows and the final tensor).
/// Nil when the count overflows.
public func extractionMemory(plan: ExtractionPlan, dimension d: Int, chunk: Int) -> Int? {
    let r = plan.resolution
    var total = 0
    for factors in [[plan.views, min(chunk, max(plan.count, 1)), 3, r, r, 4], [2, plan.views, plan.count, d, 4]] {
        var product = 1
        for f in factors {
            guard f >= 0 else { return nil }
            let (p, o) = product.multipliedReportingOverflow(by: f)
            if o { return nil }
            product = p
        }
        let (t, o) = total.addingReportingOverflow(product)
        if o { return nil }
        total = t
    }
    return total
}

/// The default memory budget of an extraction: half the machine's memory.
public var defaultExtractionBudget: Int { Int(clamping: ProcessInfo.processInfo.physicalMemory / 2) }

/// An image that could not be read, and why. Extraction reports it and goes on.
public struct SkippedImage: Sendable, Equatable {
    public var path: String
    public var reason: String
}

public struct ExtractionResult: Sendable {
    public var features: FeatureSet
    public var skipped: [SkippedImage]
    /// True when an existing file with the same plan was returned without any work.
    public var reused: Bool
}

/// Encodes `items` through the frozen image tower into a features file at `output`.
///
/// Work is done in chunks; each chunk is written atomically into `<output>.partial/` with the plan,
/// so an interrupted run resumes at the first missing chunk. Decoding and preprocessing of a chunk
/// run on all threads; the image tower uses OpenBLAS's. Unreadable images are reported and left out.
/// `stopAfterChunks` ends the run early as an interruption would (for tests).
public func extractFeatures(model: CLIPModel, plan: ExtractionPlan, items: [Datum], classNames: [String],
                            source: any ImageSource, provenance: [String: String], output: URL, chunk: Int = 64,
                            stopAfterChunks: Int? = nil, memoryBudget: Int = defaultExtractionBudget,
                            progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }) throws -> ExtractionResult {
    let modelPrecision = model.backend.precision
    guard plan.precision == (modelPrecision == .fp32 ? nil : modelPrecision.rawValue) else {
        throw ExtractionError(description: "the plan for \(output.path) asks for \(plan.precision ?? "fp32") products but the model runs \(modelPrecision.rawValue) (\(model.backend.name)): make the plan with the model's precision")
    }
    let fm = FileManager.default
    let partial = URL(fileURLWithPath: output.path + ".partial")
    let manifest = partial.appendingPathComponent("plan.json")
    if fm.fileExists(atPath: output.path) {
        let existing = try FeatureSet.read(path: output.path)
        guard existing.provenance["plan"] == plan.asJSON else {
            throw ExtractionError(description: "\(output.path) exists but was made with another model, image list or transform (its plan differs); delete it or write to another file")
        }
        // A run killed between writing the file and removing its chunks leaves them behind: the
        // file is finished, so chunks made under the same plan are no longer needed.
        if (try? String(contentsOf: manifest, encoding: .utf8)) == plan.asJSON { try? fm.removeItem(at: partial) }
        return ExtractionResult(features: existing, skipped: [], reused: true)
    }
    guard plan.views >= 1, chunk >= 1, plan.count == items.count else {
        throw ExtractionError(description: "invalid extraction: \(plan.views) views, chunks of \(chunk), a plan of \(plan.count) images for \(items.count) items")
    }
    // Sized from the plan before anything is allocated or written.
    let need = extractionMemory(plan: plan, dimension: model.config.embedDim, chunk: chunk)
    guard let need, need <= memoryBudget else {
        throw ExtractionError(description: "\(plan.views) views of \(plan.count) images would need \(need.map(formatBytes) ?? "more memory than can be counted") (pixels of a chunk and the features of every view) but the budget is \(formatBytes(memoryBudget)) (half this machine's memory); use fewer views or images. Nothing was written")
    }
    // A partial folder is resumed only under the plan and the decoding options it was made with;
    // otherwise its chunks are stale (an image-size limit lifted since would skip the same images
    // again) and it is discarded.
    let optionsFile = partial.appendingPathComponent("options.json")
    let options = decodingOptionsJSON()
    if fm.fileExists(atPath: partial.path) {
        let recordedPlan = (try? String(contentsOf: manifest, encoding: .utf8)) ?? ""
        let recordedOptions = (try? String(contentsOf: optionsFile, encoding: .utf8)) ?? ""
        if recordedPlan != plan.asJSON || recordedOptions != options {
            do { try fm.removeItem(at: partial) } catch {
                throw ExtractionError(description: "\(partial.path) holds an interrupted extraction made under another plan or other decoding options, and it cannot be removed (\(error.localizedDescription)); delete that folder")
            }
        }
    }
    if !fm.fileExists(atPath: manifest.path) {
        try fm.createDirectory(at: partial, withIntermediateDirectories: true)
        try writeAtomically(Data(options.utf8), to: optionsFile)
        try writeAtomically(Data(plan.asJSON.utf8), to: manifest)
    }
    do {
        return try extractChunks(model: model, plan: plan, items: items, classNames: classNames, source: source, provenance: provenance,
                                 output: output, partial: partial, chunk: chunk, stopAfterChunks: stopAfterChunks, progress: progress)
    } catch {
        // A run that failed before finishing a chunk leaves nothing behind (a stop after some chunks keeps them to resume).
        let left = (try? fm.contentsOfDirectory(atPath: partial.path)) ?? []
        if left.allSatisfy({ $0 == "plan.json" || $0 == "options.json" }) { try? fm.removeItem(at: partial) }
        throw error
    }
}

private func extractChunks(model: CLIPModel, plan: ExtractionPlan, items: [Datum], classNames: [String], source: any ImageSource,
                           provenance: [String: String], output: URL, partial: URL, chunk: Int, stopAfterChunks: Int?,
                           progress: (_ done: Int, _ total: Int) -> Void) throws -> ExtractionResult {
    let fm = FileManager.default
    let d = model.config.embedDim, r = model.config.imageResolution
    let chunks = stride(from: 0, to: items.count, by: chunk).map { $0..<min(items.count, $0 + chunk) }
    var done = 0
    for (c, range) in chunks.enumerated() {
        let file = partial.appendingPathComponent(String(format: "chunk-%06d.safetensors", c))
        // A finished chunk is kept unless it skipped images: those are tried again (one may have
        // been restored since the run that skipped it).
        if fm.fileExists(atPath: file.path), let meta = try? Safetensors.read(path: file.path).1,
           !meta.keys.contains(where: { $0.hasPrefix("skip.") }) {
            done += range.count
            progress(done, items.count)
            continue
        }
        // Decode + preprocess in parallel: one slot per (view, image).
        let n = range.count
        var pixels = [Float](repeating: 0, count: plan.views * n * 3 * r * r)
        var failures = [String?](repeating: nil, count: n)
        pixels.withUnsafeMutableBufferPointer { px in failures.withUnsafeMutableBufferPointer { fail in
            let pxBase = px.baseAddress!, failBase = fail.baseAddress!
            DispatchQueue.concurrentPerform(iterations: n) { i in
                let index = range.lowerBound + i
                do {
                    let image = try source.image(for: items[index])
                    for v in 0..<plan.views {
                        let t: Tensor
                        if plan.transform == "train" {
                            var rng = SeededGenerator(seed: viewSeed(plan.seed, index: index, view: v))
                            t = clipTrainPreprocess(image, resolution: r, rng: &rng)
                        } else {
                            t = clipPreprocess(image, resolution: r)
                        }
                        t.withPointer { (pxBase + (v * n + i) * 3 * r * r).update(from: $0, count: 3 * r * r) }
                    }
                } catch {
                    failBase[i] = "\(error)"
                }
            }
        } }
        var rows: [Float] = []
        rows.reserveCapacity(plan.views * n * d)
        let workspace = Workspace(backend: model.backend)  // each view reuses the buffers of the one before
        for v in 0..<plan.views {
            let batch = Tensor(shape: [n, 3, r, r], data: Array(pixels[(v * n * 3 * r * r)..<((v + 1) * n * 3 * r * r)]))
            rows += model.image.forward(pixels: batch, workspace: workspace).0.data
        }
        if let bad = rows.firstIndex(where: { !$0.isFinite }) {
            let image = range.lowerBound + bad / d % n
            throw ExtractionError(description: "the image tower gives non-finite features (\(rows[bad])) for \(items[image].path): the model checkpoint holds non-finite weights; check it (prompttune info --model) or use another")
        }
        // An all-zero feature has no direction: every cosine with it is 0/0. Weights out of range
        // gave such rows once; name the image rather than store them.
        for v in 0..<plan.views {
            for i in 0..<n where failures[i] == nil && rows[((v * n + i) * d)..<((v * n + i + 1) * d)].allSatisfy({ $0 == 0 }) {
                throw ExtractionError(description: "the image tower gives an all-zero feature for \(items[range.lowerBound + i].path): its weights are out of range; check the checkpoint (prompttune info --model) or use another")
            }
        }
        let valid = failures.map { $0 == nil ? Float(1) : 0 }
        var meta: [String: String] = [:]
        for (i, f) in failures.enumerated() { if let f { meta["skip.\(range.lowerBound + i)"] = f } }
        try Safetensors.write(tensors: ["features": Tensor(shape: [plan.views, n, d], data: rows),
                                        "valid": Tensor(shape: [n], data: valid)], metadata: meta, to: file)
        done += n
        progress(done, items.count)
        if let stop = stopAfterChunks, c + 1 >= stop, c + 1 < chunks.count {
            throw ExtractionError(description: "stopped after \(c + 1) chunks (as asked); run again to resume")
        }
    }
    // Assemble, leaving out unreadable images.
    var perView = [[Float]](repeating: [], count: plan.views)
    var labels: [Int] = []
    var skipped: [SkippedImage] = []
    for (c, range) in chunks.enumerated() {
        let (t, meta) = try Safetensors.read(path: partial.appendingPathComponent(String(format: "chunk-%06d.safetensors", c)).path)
        guard let f = t["features"], let valid = t["valid"], f.shape == [plan.views, range.count, d] else {
            throw ExtractionError(description: "\(partial.path): chunk \(c) is damaged; delete that folder to start over")
        }
        for (i, index) in range.enumerated() {
            guard valid[i] == 1 else {
                skipped.append(SkippedImage(path: items[index].path, reason: meta["skip.\(index)"] ?? "unreadable"))
                continue
            }
            labels.append(items[index].label)
            for v in 0..<plan.views { perView[v] += f.data[((v * range.count + i) * d)..<((v * range.count + i + 1) * d)] }
        }
    }
    guard !labels.isEmpty else {
        throw ExtractionError(description: "none of the \(items.count) images could be read (first: \(skipped.first.map { "\($0.path): \($0.reason)" } ?? "-"))")
    }
    var meta = provenance
    meta["plan"] = plan.asJSON
    meta["model_digest"] = plan.modelDigest
    meta["images_digest"] = plan.imagesDigest
    meta["transform"] = plan.transform
    meta["views"] = String(plan.views)
    if !skipped.isEmpty { meta["skipped"] = skipped.map(\.path).joined(separator: "\n") }
    let set = FeatureSet(features: Tensor(shape: [plan.views, labels.count, d], data: Array(perView.joined())),
                         labels: labels, classNames: classNames, provenance: meta)
    try set.write(to: output)
    try? fm.removeItem(at: partial)
    return ExtractionResult(features: set, skipped: skipped, reused: false)
}

/// The decoding options an extraction's skips depend on, as recorded in `<out>.partial/options.json`.
func decodingOptionsJSON() -> String {
    "{\"max_image_pixels\":\(ImageLimits.current.maxPixels)}"
}

/// A byte count in plain units, for messages.
func formatBytes(_ n: Int) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var v = Double(n), u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) bytes" : String(format: "%.1f %@", v, units[u])
}

/// The seed of one augmented view of one image: independent of chunking and thread order.
func viewSeed(_ seed: UInt64, index: Int, view: Int) -> UInt64 {
    var g = SeededGenerator(seed: seed ^ (UInt64(index) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(view) &* 0xC2B2_AE3D_27D4_EB4F))
    return g.next()
}
