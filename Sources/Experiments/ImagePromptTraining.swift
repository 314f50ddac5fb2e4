import Analysis
import CLIP
import Datasets
import Features
import Foundation
import Imaging
import PromptLearning
import TensorCore
import TensorIO

/// Training and evaluating methods with trainable image prompts (DAPT, VPT) in a grid cell: the
/// training images are decoded and augmented every iteration, DAPT's prototypes are read from its
/// `_prototype.pkl` or computed once per (model, dataset, shots, seed) and cached, and test images
/// are encoded through the prompted tower.
extension ExperimentRunner {
    func trainImagePrompt(_ spec: RunSpec, dataset: DatasetName, train: StoredFeatures, tests: [(EvaluationSet, StoredFeatures)],
                          folder: RunFolder, record: inout RunRecord) throws -> Classifier {
        let config = try trainConfig(spec, datasetTemplate: train.template)
        let method = config.method, template = config.template
        let request = FeatureRequest(dataset: dataset, split: .train, selection: trainSelection(spec), views: 1)
        let (items, selection, loaded) = try store.items(request)
        let images = AugmentedImages(items: items, classNames: selection.classNames, source: loaded.images)
        let prototypes = method.needsPrototypes
            ? try cachedPrototypes(spec, images: images, fewShotCache: selection.coopCache, classes: selection.classNames.count, warnings: &record.warnings)
            : nil
        let tuner = try PromptTuner(model: model, tokenizer: tokenizer, data: .images(images), config: config,
                                    prototypes: prototypes, modelDigest: store.modelDigest, dataDigest: images.digest)
        record.warnings += tuner.warnings
        let checkpoint = folder.parameterCheckpoint
        var resumed = false
        if FileManager.default.fileExists(atPath: checkpoint.path) {
            do {
                try tuner.restore(ParameterCheckpoint.read(path: checkpoint.path))
                resumed = true
            } catch {
                record.warnings.append("the checkpoint \(checkpoint.path) could not be resumed (\(error)); \(setAside(checkpoint)); training from the start")
            }
        }
        // Every run saves what it starts from (a restart under other settings replaces it).
        if !resumed {
            try ParameterCheckpoint.writeParameters(tuner.initialParameters, to: folder.initial,
                                                    metadata: ["method": method.name, "seed": String(spec.seed)])
        }
        tuner.trace = trace
        defer { tuner.trace = nil }
        var ncHistory: [NCPoint] = resumed ? ((try? readJSON([NCPoint].self, from: folder.ncHistory)) ?? []) : []
        ncHistory.removeAll { $0.epoch > tuner.epochsDone }
        var warnings: [String] = []
        while !tuner.isFinished {
            try tuner.runEpoch { self.events(.step($0, epochs: spec.recipe.epochs)) }
            try tuner.checkpoint().write(to: checkpoint)
            let epoch = tuner.epochsDone, every = spec.recipe.ncEvery
            if every > 0 && epoch % every == 0 && epoch < spec.recipe.epochs {
                // The measures of the prompt so far: images through the prompted tower, as at the end.
                var measures: [String: NeuralCollapseReport] = [:]
                let c = Classifier.imagePrompt(method, tuner.parameters, template: template, trainClasses: train.classNames)
                let trainImages = try evaluationImages(c, stored: train, request: FeatureRequest(dataset: dataset, split: .train,
                                                                                                 selection: trainSelection(spec), views: 1))
                if let m = measure(trainImages, text: try classifierVectors(c, names: train.classNames, dataset: dataset),
                                   label: "train", warnings: &warnings) { measures["train"] = m }
                for (s, f) in tests {
                    guard let text = try? classifierVectors(c, names: f.classNames, dataset: s.dataset) else { continue }
                    let images = try evaluationImages(c, stored: f, request: FeatureRequest(dataset: s.dataset, split: .test,
                                                                                             selection: SelectionOptions(subset: s.subset), views: 1))
                    if let m = measure(images, text: text, label: s.name, warnings: &warnings) { measures[s.name] = m }
                }
                ncHistory.append(NCPoint(epoch: epoch, measures: measures))
                try writeJSON(ncHistory, to: folder.ncHistory)
            }
            if shouldStop() { throw RunInterrupted(epochsDone: tuner.epochsDone) }
        }
        try writeJSON(["history": tuner.history], to: folder.history)
        record.warnings += Array(Set(warnings)).sorted()
        record.history = tuner.history
        record.ncHistory = ncHistory
        return .imagePrompt(method, tuner.parameters, template: template, trainClasses: train.classNames)
    }

    /// DAPT's prototypes of a cell: its `shot_K-seed_S_prototype.pkl` beside CoOp's draw when there,
    /// else computed and cached in the feature store's folder (which is per model).
    func cachedPrototypes(_ spec: RunSpec, images: AugmentedImages, fewShotCache: String?, classes: Int,
                          warnings: inout [String]) throws -> Tensor {
        let d = model.config.embedDim
        if let cache = fewShotCache {
            let pkl = DAPTPrototypeFile.path(fewShotCache: cache)
            if FileManager.default.fileExists(atPath: pkl) {
                let p = try DAPTPrototypeFile.read(path: pkl, dimension: d)
                if p.shape == [classes, d] { return p }
                warnings.append("\(pkl) holds \(p.shape[0]) prototypes for \(classes) classes; computing them anew")
            }
        }
        let url = store.directory.appendingPathComponent("prototypes-\(spec.dataset)-\(images.digest.prefix(16))-seed\(spec.seed).safetensors")
        if let (t, meta) = try? Safetensors.read(path: url.path), let p = t["prototypes"], p.shape == [classes, d],
           meta["images_digest"] == images.digest {
            return p
        }
        try FileManager.default.createDirectory(at: store.directory, withIntermediateDirectories: true)
        let p = try imagePrototypes(model: model, images: images, seed: UInt64(spec.seed))
        try Safetensors.write(tensors: ["prototypes": p], metadata: ["images_digest": images.digest, "model_digest": store.modelDigest,
                                                                     "seed": String(spec.seed), "made_by": "DAPT prototypes: one train view per image, unprompted tower, normalised, class mean"],
                              to: url)
        return p
    }

    /// The test images of `request` through the image tower with `visualPrompt` inserted: L x N x D
    /// features (view 0), in the order of the stored features (unreadable images left out as there).
    func promptedFeatures(_ request: FeatureRequest, stored: StoredFeatures, visualPrompt: Tensor) throws -> LabeledFeatures {
        let (items, _, loaded) = try store.items(request)
        let skipped = Set(stored.skipped.map(\.path))
        let kept = items.filter { !skipped.contains($0.path) }
        let r = model.config.imageResolution, size = 3 * r * r
        var rows: [Float] = []
        let workspace = Workspace()  // each chunk reuses the buffers of the one before
        for start in stride(from: 0, to: kept.count, by: 32) {
            let chunk = Array(kept[start..<min(kept.count, start + 32)])
            var pixels = [Float](repeating: 0, count: chunk.count * size)
            var failure: String?
            let lock = NSLock()
            pixels.withUnsafeMutableBufferPointer { px in
                let base = px.baseAddress!
                DispatchQueue.concurrentPerform(iterations: chunk.count) { i in
                    do {
                        let t = clipPreprocess(try loaded.images.image(for: chunk[i]), resolution: r)
                        t.withPointer { (base + i * size).update(from: $0, count: size) }
                    } catch {
                        lock.lock(); failure = "\(chunk[i].path): \(error)"; lock.unlock()
                    }
                }
            }
            if let failure { throw ExperimentError("test image could not be read: \(failure)") }
            rows += model.image.forward(pixels: Tensor(shape: [chunk.count, 3, r, r], data: pixels), extraTokens: visualPrompt,
                                      workspace: workspace).0.data
        }
        return LabeledFeatures(features: Tensor(shape: [1, kept.count, model.config.embedDim], data: rows), labels: kept.map(\.label),
                               classNames: stored.classNames)
    }
}
