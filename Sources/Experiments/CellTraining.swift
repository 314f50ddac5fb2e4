import Analysis
import CLIP
import Datasets
import Features
import Foundation
import Imaging
import PromptLearning
import TensorCore
import TensorIO

/// Training a cell's prompt. Text-prompt methods train on the stored features' cached views; methods
/// with prompts in the image tower (DAPT, VPT) and cells with `augment: per-iteration` train on the
/// training images, decoded and augmented every iteration (a text method's go through the frozen
/// tower's forward only). DAPT's prototypes are read from its `_prototype.pkl` or computed once per
/// (model, dataset, shots, seed) and cached; test images of image-prompt methods are encoded
/// through the prompted tower.
extension ExperimentRunner {
    /// Trains the cell's prompt (resuming its checkpoint), recording NC measures every `nc_every` epochs.
    func trainPrompt(_ spec: RunSpec, dataset: DatasetName, train: StoredFeatures, tests: [(EvaluationSet, StoredFeatures)],
                     folder: RunFolder, record: inout RunRecord) throws -> Classifier {
        let config = try trainConfig(spec, datasetTemplate: train.template)
        let method = config.method, template = config.template
        let data: TrainingData, dataDigest: String
        var prototypes: Tensor?
        if method.needsImages || spec.recipe.augment == .perIteration {
            let request = FeatureRequest(dataset: dataset, split: .train, selection: trainSelection(spec), views: 1)
            let (items, selection, loaded) = try store.items(request)
            let images = AugmentedImages(items: items, classNames: selection.classNames, source: loaded.images)
            if method.needsPrototypes {
                let p = try cachedPrototypes(spec, images: images, fewShotCache: selection.coopCache, classes: selection.classNames.count,
                                             warnings: &record.warnings)
                prototypes = p.tensor
                record.prototypesSource = p.source
                record.digests["prototypes"] = p.digest
            }
            data = .images(images)
            dataDigest = images.digest
        } else {
            data = .features(train.set.labeled)
            dataDigest = train.digest
        }
        let tuner = try PromptTuner(model: model, tokenizer: tokenizer, data: data, config: config,
                                    prototypes: prototypes, modelDigest: store.modelDigest, dataDigest: dataDigest)
        // Resumes the cell's checkpoint (or sets a damaged one aside) and saves what a new run starts from.
        let run = try TrainingRun(folder: folder, tuner: tuner, resume: .ifPresent)
        record.warnings += tuner.warnings + run.warnings
        if run.resumed { events(.resumed(epochsDone: tuner.epochsDone, epochs: spec.recipe.epochs)) }
        tuner.trace = trace
        defer { tuner.trace = nil }
        try openBoard(spec, resumeStep: tuner.steps)
        var ncHistory: [NCPoint] = run.resumed ? ((try? readJSON([NCPoint].self, from: folder.ncHistory)) ?? []) : []
        ncHistory.removeAll { $0.epoch > tuner.epochsDone }
        var warnings: [String] = []
        try run.run(onStep: { self.boardStep($0); self.events(.step($0, epochs: spec.recipe.epochs)) }, afterEpoch: { epoch in
            try self.boardEpoch(tuner.history.last, step: tuner.steps)
            let every = spec.recipe.ncEvery
            if every > 0 && epoch % every == 0 && epoch < spec.recipe.epochs {
                // The measures of the prompt so far, as at the end.
                var measures: [String: NeuralCollapseReport] = [:]
                let c = Classifier.trained(tuner.architecture, tuner.parameters, template: template)
                let trainImages = try self.evaluationImages(c, stored: train, request: FeatureRequest(dataset: dataset, split: .train,
                                                                                                 selection: self.trainSelection(spec), views: 1))
                if let m = self.measure(trainImages, classifier: try self.classifier(c, names: train.classNames, dataset: dataset),
                                        label: "train", clusters: self.cellClusters(spec, names: train.classNames, dataset: dataset),
                                        warnings: &warnings) { measures["train"] = m }
                for (s, f) in tests {
                    guard let text = (try? self.evaluationClassifier(c, s, names: f.classNames, trainClasses: train.classNames,
                                                                     dataset: dataset)) ?? nil else { continue }
                    let images = try self.evaluationImages(c, stored: f, request: FeatureRequest(dataset: s.dataset, split: .test,
                                                                                             selection: SelectionOptions(subset: s.subset), views: 1))
                    if let m = self.measure(images, classifier: text, label: s.name,
                                            clusters: self.cellClusters(spec, names: f.classNames, dataset: s.dataset),
                                            warnings: &warnings) { measures[s.name] = m }
                }
                ncHistory.append(NCPoint(epoch: epoch, measures: measures))
                try writeJSON(ncHistory, to: folder.ncHistory)
                try self.boardMeasures(measures, step: tuner.steps)
            }
            if self.shouldStop() { throw RunInterrupted(epochsDone: tuner.epochsDone) }
        })
        record.warnings += Array(Set(warnings)).sorted()
        record.history = tuner.history
        record.ncHistory = ncHistory
        return .trained(tuner.architecture, tuner.parameters, template: template)
    }

    /// DAPT's prototypes of a cell: computed from the cell's draw with its model (one train view per
    /// image through the unprompted tower, normalised, class means) and cached in the feature
    /// store's folder (which is per model and precision); or DAPT's own
    /// `split_fewshot/shot_K-seed_S_prototype.pkl` where it provably belongs to the cell.
    ///
    /// That pickle holds a bare tensor: no model, no draw. DAPT writes it from the balanced draw
    /// `shot_K-seed_S.pkl` beside it, so it is used only when (1) the cell's draw is that cached draw
    /// itself (balanced, read from the file), (2) its shape is the cell's classes x width, and (3) it
    /// agrees with the prototypes computed here from the same draw with the cell's model: every
    /// class's cosine at least `pickleAgreement`. DAPT made its prototypes from one random crop per
    /// image on a GPU, so equality cannot be asked; class means of another backbone (even one of the
    /// same width) lie in an unrelated space, with cosines near 0. Otherwise the computed ones are
    /// used, and a warning says why the pickle was not. Returns the source ("computed" or the
    /// pickle's path) and the digest of the file the prototypes came from.
    func cachedPrototypes(_ spec: RunSpec, images: AugmentedImages, fewShotCache: String?, classes: Int,
                          warnings: inout [String]) throws -> (tensor: Tensor, source: String, digest: String) {
        let d = model.config.embedDim
        let url = store.directory.appendingPathComponent("prototypes-\(spec.dataset)-\(images.digest.prefix(16))-seed\(spec.seed).safetensors")
        var computed: Tensor
        if let (t, meta) = try? Safetensors.read(path: url.path), let p = t["prototypes"], p.shape == [classes, d],
           meta["images_digest"] == images.digest {
            computed = p
        } else {
            try FileManager.default.createDirectory(at: store.directory, withIntermediateDirectories: true)
            computed = try imagePrototypes(model: model, images: images, seed: UInt64(spec.seed))
            try Safetensors.write(tensors: ["prototypes": computed],
                                  metadata: ["images_digest": images.digest, "model_digest": store.modelDigest, "seed": String(spec.seed),
                                             "made_by": "DAPT prototypes: one train view per image, unprompted tower, normalised, class mean"],
                                  to: url)
        }
        let ours = (tensor: computed, source: "computed", digest: try contentDigest(path: url.path))
        guard let cache = fewShotCache else { return ours }
        let pkl = DAPTPrototypeFile.path(fewShotCache: cache)
        guard FileManager.default.fileExists(atPath: pkl) else { return ours }
        func notUsed(_ why: String) -> (tensor: Tensor, source: String, digest: String) {
            warnings.append("DAPT's \(pkl) is not used (\(why)); the prototypes were computed from this cell's draw with its model")
            return ours
        }
        if spec.imbalance != 1 {
            return notUsed("it was made from the balanced draw beside it, and this cell's draw is imbalanced (tau \(formatNumber(spec.imbalance)))")
        }
        let p: Tensor
        do { p = try DAPTPrototypeFile.read(path: pkl, dimension: d) } catch { return notUsed("\(error)") }
        guard p.shape == [classes, d] else { return notUsed("it holds \(p.shape[0]) prototypes for this draw's \(classes) classes") }
        var agreement = 1.0
        for k in 0..<classes {
            let rows = (k * d)..<((k + 1) * d)
            agreement = min(agreement, cosine(p.data[rows], computed.data[rows]))
        }
        guard agreement >= Self.pickleAgreement else {
            return notUsed("it does not match this model's prototypes of the draw: the lowest class cosine is \(String(format: "%.3f", agreement)), below \(Self.pickleAgreement); it was made with another backbone")
        }
        return (p, pkl, try contentDigest(path: pkl))
    }

    /// The least cosine, per class, between DAPT's pickled prototypes and ours for them to be used.
    static let pickleAgreement = 0.9

    /// The images of `request` through `encode` (the prompted tower): L x N x D features (view 0),
    /// in the order of the stored features (unreadable images left out as there).
    func promptedFeatures(_ request: FeatureRequest, stored: StoredFeatures,
                          encode: (Tensor, Workspace) -> Tensor) throws -> LabeledFeatures {
        let (items, _, loaded) = try store.items(request)
        let skipped = Set(stored.skipped.map(\.path))
        let kept = items.filter { !skipped.contains($0.path) }
        let features = try encodeImages(kept, source: loaded.images, resolution: model.config.imageResolution, encode: encode)
        ProcessMemory.trim()  // the tower's workspace, before the next set makes its own
        return LabeledFeatures(features: Tensor(shape: [1] + features.shape, data: features.data), labels: kept.map(\.label),
                               classNames: stored.classNames)
    }
}

/// The cosine of two vectors (0 when one is zero).
func cosine(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
    var ab = 0.0, aa = 0.0, bb = 0.0
    for (x, y) in zip(a, b) { ab += Double(x) * Double(y); aa += Double(x) * Double(x); bb += Double(y) * Double(y) }
    return aa > 0 && bb > 0 ? ab / (aa * bb).squareRoot() : 0
}
