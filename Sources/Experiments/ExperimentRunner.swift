import Analysis
import CLIP
import Datasets
import Features
import Foundation
import PromptLearning
import TensorCore
import TensorIO

/// What a grid reports while it runs, for progress lines and logs.
public enum RunEvent {
    case cellStarted(index: Int, position: Int, total: Int, spec: RunSpec)
    case cellSkipped(index: Int, position: Int, total: Int, record: RunRecord)
    case features(label: String, done: Int, total: Int)
    case step(StepReport, epochs: Int)
    /// A cell's training resumed from its checkpoint after `epochsDone` of `epochs` epochs.
    case resumed(epochsDone: Int, epochs: Int)
    case cellFinished(index: Int, position: Int, total: Int, record: RunRecord)
}

/// One test set of a cell: which images, under which class names.
struct EvaluationSet {
    var name: String
    var dataset: DatasetName
    var subset: ClassSubset
}

/// Runs grid cells: features from the shared store, training with checkpoints, evaluation, the
/// neural-collapse measures, and one record per cell. Finished cells are skipped; an interrupted
/// cell resumes from its last epoch; a failing cell is recorded with its error and the grid goes on
/// (failed cells are tried again on the next run).
public final class ExperimentRunner {
    public let results: ResultsFolder
    public let store: FeatureStore
    public let tokenizer: CLIPTokenizer
    public var model: CLIPModel { store.model }
    /// The model's file name (the folder's for a Hugging Face directory), as records name it.
    public let modelName: String
    /// "bf16" when the frozen towers run with bf16 products, "fp16-reference" for the references'
    /// fp16 training approached, nil for exact fp32.
    public let precision: String?
    /// fp16-reference: the model is rounded (features encoded by it) and every cell trains so.
    public let trainingPrecision: TrainingPrecision
    /// The sub-folder of `runs/` for this model and precision (``CellInputs/folderName``).
    public var modelFolder: String { CellInputs.folderName(modelName: modelName, modelDigest: store.modelDigest, precision: precision) }
    /// Asked after every epoch; true stops the grid with `RunInterrupted` (the checkpoint stays).
    public var shouldStop: () -> Bool = { false }
    /// Read CoOp's `split_fewshot` draws when the dataset folder has them.
    public var useCoOpCache = true
    /// One JSON line per training step of every trained cell that runs (`--trace`), stamped with
    /// the cell's identifier.
    public var trace: TraceWriter?
    /// TensorBoard event files, one run per cell: <tensorboard>/<model>/<cell identifier> (`--tensorboard`).
    public var tensorboard: URL?
    var board: CellBoard?
    let events: (RunEvent) -> Void

    /// `backend` runs the model (its precision keys features, cells and records).
    public init(modelPath: String, root: URL, out: URL, trainingPrecision: TrainingPrecision = .fp32,
                backend: any ComputeBackend = defaultBackend, events: @escaping (RunEvent) -> Void = { _ in }) throws {
        let digest = try modelDigest(modelPath)
        let model = trainingPrecision.model(try CLIPModel.load(path: modelPath)).on(backend)
        // The precision keys features, cells and records: bf16 products, or fp16-reference training.
        let precision = trainingPrecision == .fp16Reference ? trainingPrecision.rawValue
            : backend.precision == .fp32 ? nil : backend.precision.rawValue
        self.results = ResultsFolder(out)
        // Features are keyed by the model too: another checkpoint gets its own folder.
        self.store = FeatureStore(model: model, modelPath: modelPath, modelDigest: digest, root: root,
                                  directory: results.features.appendingPathComponent(precision.map { "\(digest)-\($0)" } ?? digest))
        self.tokenizer = try CLIPTokenizer()
        self.events = events
        self.modelName = URL(fileURLWithPath: modelPath).standardizedFileURL.lastPathComponent
        self.precision = precision
        self.trainingPrecision = trainingPrecision
    }

    /// The folder of cell `spec` under this runner's model and precision.
    public func folder(for spec: RunSpec) -> RunFolder { results.cell(spec, model: modelFolder) }

    /// Runs `cells` (all of them, or only the numbers in `only`), in order; returns their records.
    /// Stops early only on `RunInterrupted`.
    @discardableResult
    public func run(_ cells: [RunSpec], only: [Int]? = nil) throws -> [RunRecord] {
        let indices = only ?? Array(cells.indices)
        for i in indices where !cells.indices.contains(i) {
            throw PlanError("the grid has cells 0...\(cells.count - 1); there is no cell \(i)")
        }
        try checkDatasets(indices.map { cells[$0] })
        var records: [RunRecord] = []
        for (position, i) in indices.enumerated() {
            let spec = cells[i]
            let folder = self.folder(for: spec)
            // One process at a time runs a cell folder: two grids run into one --out at once used to
            // leave a silent mix of both. The same cell running elsewhere is waited for (then found
            // done); another spec running in this folder is refused, and nothing of it is touched.
            guard let lock = try cellLock(spec, folder: folder) else {
                let record = RunRecord(spec: spec, status: .failed, error: "another process is running this cell's folder \(folder.url.path) with another spec (\(runningSpecSummary(folder))); nothing was written: run this grid into another --out, or after that one ends")
                events(.cellFinished(index: i, position: position, total: indices.count, record: record))
                records.append(record)
                continue
            }
            defer { lock.release() }
            if let done = finishedRecord(spec) {
                events(.cellSkipped(index: i, position: position, total: indices.count, record: done))
                records.append(done)
                continue
            }
            events(.cellStarted(index: i, position: position, total: indices.count, spec: spec))
            trace?.cell = spec.identifier
            board = nil
            var record: RunRecord
            do {
                record = try runCell(spec, folder: folder)
            } catch let stop as RunInterrupted {
                throw stop
            } catch {
                record = RunRecord(spec: spec, status: .failed, error: "\(error)")
                // A failed cell still says which model and precision it failed with.
                record.model = modelName
                record.digests["model"] = store.modelDigest
                record.precision = precision
            }
            try folder.create()
            try folder.supersedeRecord()
            try writeJSON(record, to: folder.record)
            events(.cellFinished(index: i, position: position, total: indices.count, record: record))
            records.append(record)
        }
        return records
    }

    /// The finished record of cell `spec` in this runner's folder, when it was made from the same
    /// model, precision and data (else the cell runs again).
    public func finishedRecord(_ spec: RunSpec) -> RunRecord? {
        guard let inputs = try? inputs(spec) else { return nil }
        return folder(for: spec).finishedRecord(for: spec, inputs: inputs)
    }

    /// The cell folder's lock: taken at once when free; when another process holds it, waited for
    /// if that process runs the same spec, else nil (refused).
    func cellLock(_ spec: RunSpec, folder: RunFolder) throws -> FileLock? {
        if let lock = try FileLock.acquire(folder.url, wait: false) { return lock }
        if let running = try? readJSON(RunSpec.self, from: folder.spec), running != spec { return nil }
        return try FileLock.acquire(folder.url, wait: true)
    }

    /// What another process is running in `folder`, for the refusal.
    func runningSpecSummary(_ folder: RunFolder) -> String {
        guard let s = try? readJSON(RunSpec.self, from: folder.spec) else { return "unknown" }
        return "\(s.method), \(s.recipe.epochs) epochs, lr \(s.recipe.learningRate), batch \(s.recipe.batchSize), \(s.recipe.augment == .perIteration ? "per-iteration augmentation" : "\(s.recipe.views) views")"
    }

    // MARK: One cell

    func evaluationSets(_ spec: RunSpec, dataset: DatasetName) throws -> [EvaluationSet] {
        switch spec.protocolKind {
        case .fewShot, .longTailed:
            return [EvaluationSet(name: "test", dataset: dataset, subset: .all)]
        case .baseToNovel:
            return [EvaluationSet(name: "base", dataset: dataset, subset: .base),
                    EvaluationSet(name: "novel", dataset: dataset, subset: .novel)]
        case .crossDataset, .domainGeneralization:
            guard !spec.targets.isEmpty else { throw ExperimentError(.invalidSetting, "a \(spec.protocolKind.rawValue) run needs target datasets") }
            return try [EvaluationSet(name: dataset.rawValue, dataset: dataset, subset: .all)]
                + spec.targets.map { EvaluationSet(name: $0, dataset: try datasetName($0), subset: .all) }
        }
    }

    func datasetName(_ raw: String) throws -> DatasetName {
        guard let d = DatasetName(rawValue: raw) else {
            throw ExperimentError(.unknownDataset, "unknown dataset '\(raw)'; known: \(DatasetName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return d
    }

    /// The training images of a cell: Dassl's few-shot draw of `shots` per class (under the
    /// long-tailed protocol a cap: classes with fewer keep all theirs; 0 keeps every image).
    func trainSelection(_ spec: RunSpec) -> SelectionOptions {
        SelectionOptions(shots: spec.shots > 0 ? spec.shots : nil, seed: spec.seed, imbalance: spec.imbalance == 1 ? nil : spec.imbalance,
                         subset: spec.trainsOnBase ? .base : .all, useCoOpCache: useCoOpCache,
                         imbalanceProfile: spec.imbalanceProfile ?? .tau)
    }

    func storedFeatures(_ request: FeatureRequest, seed: Int, label: String) throws -> StoredFeatures {
        try store.features(request, seed: seed) { done, total in
            self.events(.features(label: label, done: done, total: total))
        }
    }

    /// What classifies a cell's test images: a trained prompt (its architecture and parameters),
    /// the hand template, or a linear probe.
    enum Classifier {
        /// The architecture (made for the training class names) and its trained parameters; the
        /// hand template the run used, for the architecture of other class names.
        case trained(any PromptArchitecture, ParameterSet, template: String)
        case zeroShot
        case probe(LinearProbe, trainClasses: [String])

        /// A linear probe and class-specific contexts have rows only for the classes they were trained on.
        var knowsOnlyTrainClasses: Bool {
            switch self {
            case .probe: return true
            case .trained(let a, _, _): return a.method.prompt.classSpecific && a.method.learnsText
            case .zeroShot: return false
            }
        }
    }

    /// The image features a classifier is evaluated on: the stored ones, or, where the prompt acts
    /// in the image tower, the images encoded through the prompted tower.
    func evaluationImages(_ c: Classifier, stored: StoredFeatures, request: FeatureRequest) throws -> LabeledFeatures {
        guard case .trained(let a, let p, _) = c, a.promptsImageTower else { return stored.set.labeled }
        return try promptedFeatures(request, stored: stored) { a.encodeImages(p, pixels: $0, workspace: $1) }
    }

    /// The classifier for class names `names` of `dataset`.
    func classifier(_ c: Classifier, names: [String], dataset: DatasetName) throws -> PromptClassifier {
        switch c {
        case .trained(let a, let p, let template):
            let architecture = names == a.classNames ? a
                : try a.method.makeArchitecture(model: model, tokenizer: tokenizer, classNames: names, template: template, parameters: p)
            return architecture.classifier(p)
        case .zeroShot:
            let template = try store.dataset(dataset).splits.template
            return .shared(zeroShotTextFeatures(model: model, tokenizer: tokenizer, template: template, classNames: names))
        case .probe(let probe, let trainClasses):
            guard names == trainClasses else {
                throw ExperimentError(.classMismatch, "a linear probe classifies only the \(trainClasses.count) classes it was trained on; it cannot be evaluated on other class names")
            }
            // The probe's weight rows stand for the text features (classes it never saw stay 0).
            var w = [Float](repeating: 0, count: names.count * probe.dimension)
            for (r, k) in probe.classIndices.enumerated() {
                for j in 0..<probe.dimension { w[k * probe.dimension + j] = Float(probe.weights[r * probe.dimension + j]) }
            }
            return .shared(Tensor(shape: [names.count, probe.dimension], data: w))
        }
    }

    /// The classifier for test set `s` (class names `names`). An ImageNet variant after training
    /// on ImageNet is scored by ImageNet's classifier restricted to the variant's classes (CoOp
    /// evaluates ImageNet-A and -R on their 200 classes so), which every method can do, the linear
    /// probe and class-specific contexts included. Nil where the classifier knows only its
    /// training classes (a probe, class-specific contexts) and `s` names others.
    func evaluationClassifier(_ c: Classifier, _ s: EvaluationSet, names: [String], trainClasses: [String], dataset: DatasetName,
                              trainClassifier: PromptClassifier? = nil) throws -> PromptClassifier? {
        if dataset == .imageNet, s.dataset != .imageNet, let map = try store.dataset(s.dataset).splits.imageNetClasses {
            guard map.count == trainClasses.count, map.labels.allSatisfy({ trainClasses.indices.contains($0) }) else {
                throw ExperimentError(.classMismatch, "\(s.dataset.rawValue)'s classnames.txt lists \(map.count) classes but the ImageNet it was trained on has \(trainClasses.count); the variants' classnames.txt must be a copy of imagenet/classnames.txt and ImageNet must have a folder for each of its classes")
            }
            for (k, label) in map.labels.enumerated() where names[k] != trainClasses[label] {
                throw ExperimentError(.classMismatch, "\(s.dataset.rawValue) names its class \(k) '\(names[k])' but ImageNet's class \(label) (the same wnid) is '\(trainClasses[label])'; make its classnames.txt a copy of imagenet/classnames.txt")
            }
            switch try trainClassifier ?? classifier(c, names: trainClasses, dataset: dataset) {
            case .shared(let full):
                return .shared(rows(full, map.labels))
            case .perImage(let make):
                return .perImage { images in
                    let t = make(images)
                    let (b, k, e) = (t.shape[0], t.shape[1], t.shape[2])
                    return rows(t.reshaped([b * k, e]), (0..<b).flatMap { i in map.labels.map { i * k + $0 } })
                        .reshaped([b, map.labels.count, e])
                }
            }
        }
        if c.knowsOnlyTrainClasses && names != trainClasses { return nil }
        return try classifier(c, names: names, dataset: s.dataset)
    }

    /// NC measures of a classifier on a features set (view 0), or nil with a warning when undefined.
    /// A classifier made per image is measured with its class features averaged over the set's
    /// images (`classify`).
    func measure(_ set: LabeledFeatures, classifier: PromptClassifier, label: String, clusters: [Int]? = nil,
                 warnings: inout [String]) -> NeuralCollapseReport? {
        let text: Tensor
        switch classifier {
        case .shared(let t): text = t
        case .perImage: text = classify(images: set.view(0), classifier: classifier).text
        }
        return measure(set, text: text, label: label, clusters: clusters, warnings: &warnings)
    }

    func measure(_ set: LabeledFeatures, text: Tensor, label: String, clusters: [Int]? = nil, warnings: inout [String]) -> NeuralCollapseReport? {
        do {
            return try NeuralCollapseReport.measure(images: set.view(0), labels: set.labels, text: text, clusters: clusters)
        } catch {
            warnings.append("neural-collapse measures of \(label): \(error)")
            return nil
        }
    }

    /// CPT's clusters of the classes `names` of `dataset`, for the within-cluster ETF error of the
    /// NC measures: K-means on their normalised zero-shot features with the cell's `tetf` options
    /// (cached per features and options, so on the training classes they are the ones training
    /// used). Nil where the cell's method has no clusters, or where the set has fewer classes than
    /// clusters.
    func cellClusters(_ spec: RunSpec, names: [String], dataset: DatasetName) -> [Int]? {
        guard let method = try? Method.named(spec.method).withTermSettings(weights: spec.recipe.termWeights,
                                                                           parameters: spec.recipe.termParameters),
              let term = method.terms.first(where: { $0.type.needs.contains(.clusters) }),
              let datasetTemplate = try? store.dataset(dataset).splits.template else { return nil }
        let template = method.handTemplate(dataset: dataset.rawValue, default: datasetTemplate)
        let zeroShot = L2Normalize.forward(zeroShotTextFeatures(model: model, tokenizer: tokenizer, template: template, classNames: names)).0
        return try? classClusters(zeroShot: zeroShot, options: ClusterOptions(parameters: term.parameters, runSeed: UInt64(spec.seed)))
    }

    /// Every features file cell `spec` reads, in the order it reads them: the training draw (its
    /// cached views for trained prompts), the validation draw of a linear probe, then each test set.
    /// `prepareFeatures` makes exactly these, so a cell that runs after it finds them all cached.
    public func featureRequests(_ spec: RunSpec) throws -> [(request: FeatureRequest, label: String)] {
        let dataset = try datasetName(spec.dataset)
        let trains = spec.method != "zeroshot" && spec.method != "linear-probe"
        var requests = [(FeatureRequest(dataset: dataset, split: .train, selection: trainSelection(spec), views: trains ? spec.recipe.views : 1),
                         "\(spec.dataset) train")]
        if spec.method == "linear-probe", try !probeSearchesOnTrain(spec, dataset: dataset) {
            requests.append((FeatureRequest(dataset: dataset, split: .val, selection: trainSelection(spec), views: 1), "\(spec.dataset) val"))
        }
        for s in try evaluationSets(spec, dataset: dataset) {
            requests.append((FeatureRequest(dataset: s.dataset, split: .test, selection: SelectionOptions(subset: s.subset), views: 1),
                             "\(s.dataset.rawValue) test"))
        }
        return requests.map { (request: $0.0, label: $0.1) }
    }

    /// Makes (or finds cached) every features file of `cells`, each once, without training: the
    /// shared first job of a cluster grid, so that its cells read one cache instead of encoding
    /// the same images in parallel. Returns how many files were made and how many were cached.
    @discardableResult
    public func prepareFeatures(_ cells: [RunSpec]) throws -> (made: Int, cached: Int) {
        try checkDatasets(cells)
        var seen = Set<String>(), made = 0, cached = 0
        for spec in cells {
            for (request, label) in try featureRequests(spec) {
                guard seen.insert(request.key(seed: spec.seed)).inserted else { continue }
                let f = try storedFeatures(request, seed: spec.seed, label: label)
                if f.reused { cached += 1 } else { made += 1 }
            }
        }
        return (made, cached)
    }

    func runCell(_ spec: RunSpec, folder: RunFolder) throws -> RunRecord {
        let start = Date()
        let dataset = try datasetName(spec.dataset)
        try folder.create()
        try writeJSON(spec, to: folder.spec)
        var record = RunRecord(spec: spec, status: .ok)
        let inputs = try inputs(spec)
        record.digests["model"] = inputs.modelDigest
        record.digests["data"] = inputs.dataDigest
        record.model = inputs.modelName
        record.precision = inputs.precision
        let sets = try evaluationSets(spec, dataset: dataset)

        // Features: the training draw (augmented views for trained prompts), then every test set.
        var clock = Date()
        let requests = try featureRequests(spec)
        let train = try storedFeatures(requests[0].request, seed: spec.seed, label: requests[0].label)
        record.digests["train_features"] = train.digest
        // The training inputs themselves (features and labels, not the file, whose provenance
        // names the tau): equal for cells that train on the same images, e.g. 1 shot at every tau.
        record.digests["train_inputs"] = trainInputsDigest(train.set.labeled)
        record.trainCounts = ShotGroups.trainCounts(classNames: train.classNames, labels: train.set.labels)
        record.fewShotSource = train.coopCache ?? "dassl"
        var tests: [(EvaluationSet, StoredFeatures)] = []
        for (s, r) in zip(sets, requests.suffix(sets.count)) {
            let f = try storedFeatures(r.request, seed: spec.seed, label: r.label)
            record.digests["\(s.name)_features"] = f.digest
            tests.append((s, f))
        }
        record.timings.features = Date().timeIntervalSince(clock)
        // Each phase's buffers go back to the system before the next: the process's peak is the
        // largest phase's, not their sum (what `CostEstimator` predicts; glibc keeps freed heap
        // memory otherwise).
        ProcessMemory.trim()

        // The classifier: a trained prompt, the hand template, or a linear probe.
        clock = Date()
        let classifier: Classifier
        switch spec.method {
        case "zeroshot":
            classifier = .zeroShot
        case "linear-probe":
            let val: StoredFeatures
            if try probeSearchesOnTrain(spec, dataset: dataset) {
                val = train
                record.warnings.append("\(spec.dataset) has no val split: the linear probe's regularisation was chosen on its training images")
            } else {
                val = try storedFeatures(requests[1].request, seed: spec.seed, label: requests[1].label)
                record.digests["val_features"] = val.digest
            }
            let search = try LinearProbe.search(trainFeatures: train.set.view(0), trainLabels: train.set.labels,
                                                valFeatures: val.set.view(0), valLabels: val.set.labels,
                                                classes: train.classNames.count)
            classifier = .probe(search.probe, trainClasses: train.classNames)
        default:
            classifier = try trainPrompt(spec, dataset: dataset, train: train, tests: tests, folder: folder, record: &record)
        }
        record.timings.training = Date().timeIntervalSince(clock)
        ProcessMemory.trim()

        // Evaluation and the final measures.
        clock = Date()
        var analysis = 0.0
        let trainClassifier = try self.classifier(classifier, names: train.classNames, dataset: dataset)
        var measured = Date()
        let trainImages = try evaluationImages(classifier, stored: train,
                                               request: FeatureRequest(dataset: dataset, split: .train, selection: trainSelection(spec), views: 1))
        if let m = measure(trainImages, classifier: trainClassifier, label: "train",
                           clusters: cellClusters(spec, names: train.classNames, dataset: dataset), warnings: &record.warnings) {
            record.nc["train"] = m
        }
        analysis += Date().timeIntervalSince(measured)
        for (s, f) in tests {
            guard let text = try evaluationClassifier(classifier, s, names: f.classNames, trainClasses: train.classNames, dataset: dataset,
                                                      trainClassifier: trainClassifier) else {
                // As the papers report them: a probe or class-specific contexts only on the classes they know.
                record.warnings.append("\(s.name): \(spec.method) classifies only the \(train.classNames.count) classes it was trained on and cannot name the classes of \(s.name); its \(s.name) accuracy is not reported")
                continue
            }
            let images = try evaluationImages(classifier, stored: f, request: FeatureRequest(dataset: s.dataset, split: .test,
                                                                                             selection: SelectionOptions(subset: s.subset), views: 1))
            let (scores, classText) = classify(images: images.view(0), classifier: text)
            let r = evaluate(scores: scores, labels: images.labels, classNames: f.classNames)
            record.evaluations.append(EvaluationSummary(name: s.name, dataset: s.dataset.rawValue, classes: f.classNames.count,
                                                        count: r.count, accuracy: r.accuracy, macroF1: r.macroF1,
                                                        perClassAccuracy: r.perClassAccuracy))
            measured = Date()
            if let m = measure(images, text: classText, label: s.name, clusters: cellClusters(spec, names: f.classNames, dataset: s.dataset),
                               warnings: &record.warnings) { record.nc[s.name] = m }
            analysis += Date().timeIntervalSince(measured)
        }
        // The long-tailed protocol's rule; elsewhere the tau protocol's thirds while every class has
        // at most 16 training images (LIFT's thresholds would put them all in "few"), else LIFT's.
        let most = ShotGroups.trainCounts(classNames: train.classNames, labels: train.set.labels).values.max() ?? 0
        let rule = spec.protocolKind == .longTailed ? spec.shotRule ?? .lift : most > ShotGroups.tauRuleMaxShots ? ShotRule.lift : nil
        let groups = rule?.assign(classNames: train.classNames, labels: train.set.labels)
            ?? ShotGroups.assign(classNames: train.classNames, labels: train.set.labels)
        for i in record.evaluations.indices { record.evaluations[i].setShotGroups(groups) }
        if record.evaluations.contains(where: { $0.manyShot != nil || $0.mediumShot != nil || $0.fewShot != nil }) {
            record.shotGroupsRule = rule?.description ?? ShotGroups.rule
        }
        if !record.nc.isEmpty {
            let epoch = record.history.count
            record.ncHistory.removeAll { $0.epoch == epoch }
            record.ncHistory.append(NCPoint(epoch: epoch, measures: record.nc))
        }
        record.timings.evaluation = Date().timeIntervalSince(clock) - analysis
        record.timings.analysis += analysis
        summarise(&record)
        record.timings.total = Date().timeIntervalSince(start)
        record.finishedAt = ISO8601DateFormatter().string(from: Date())
        try boardFinished(record)
        return record
    }

    /// The headline numbers of a record from its evaluations.
    func summarise(_ record: inout RunRecord) {
        let byName = Dictionary(record.evaluations.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        switch record.spec.protocolKind {
        case .fewShot, .longTailed:
            record.accuracy = byName["test"]?.accuracy
            record.macroF1 = byName["test"]?.macroF1
        case .baseToNovel:
            record.base = byName["base"]?.accuracy
            record.novel = byName["novel"]?.accuracy
            if let b = record.base, let n = record.novel { record.hm = harmonicMean(b, n) }
            record.accuracy = record.hm ?? record.base
            record.macroF1 = byName["base"]?.macroF1
        case .crossDataset, .domainGeneralization:
            let targets = record.evaluations.filter { $0.name != record.spec.dataset }
            // A mean over fewer targets than the spec's is marked, so a report can tell it apart.
            let missing = record.spec.targets.filter { t in !targets.contains { $0.name == t } }
            record.targetsMissing = missing.isEmpty ? nil : missing
            if !targets.isEmpty {
                record.accuracy = targets.map(\.accuracy).reduce(0, +) / Double(targets.count)
                record.macroF1 = targets.map(\.macroF1).reduce(0, +) / Double(targets.count)
            }
        }
    }

    /// A long-tailed dataset without a val split (CIFAR-100-LT; ImageNet-LT and Places-LT without
    /// their optional val files) leaves the linear probe's search only its training images.
    func probeSearchesOnTrain(_ spec: RunSpec, dataset: DatasetName) throws -> Bool {
        guard spec.protocolKind == .longTailed else { return false }
        return try store.dataset(dataset).splits.val.isEmpty
    }

    /// The trainer's settings of a cell: its method with the recipe's term weights and parameters (and MaPLe's prompt depth), the recipe's
    /// learning rate, epochs and batch size, the cell's seed, and the method's hand template for
    /// the dataset (else the dataset's).
    func trainConfig(_ spec: RunSpec, datasetTemplate: String) throws -> TrainConfig {
        var method = try Method.named(spec.method).withTermSettings(weights: spec.recipe.termWeights, parameters: spec.recipe.termParameters)
        if let depth = spec.recipe.promptDepth, method.maple != nil { method.maple?.promptDepth = depth }
        if let depth = spec.recipe.promptDepth, method.promptsrc != nil {
            method.promptsrc?.textDepth = depth
            method.promptsrc?.visionDepth = depth
        }
        if let gpa = spec.recipe.aggregation, method.promptsrc != nil { method.promptsrc?.aggregation = gpa }
        var optimizer = OptimizerConfig()
        optimizer.learningRate = spec.recipe.learningRate
        return TrainConfig(method: method, optimizer: optimizer, epochs: spec.recipe.epochs, batchSize: spec.recipe.batchSize,
                           seed: UInt64(spec.seed), template: method.handTemplate(dataset: spec.dataset, default: datasetTemplate),
                           precision: trainingPrecision)
    }
}

/// Rows `indices` of a matrix, in that order.
func rows(_ m: Tensor, _ indices: [Int]) -> Tensor {
    let d = m.lastDim
    var out = [Float](); out.reserveCapacity(indices.count * d)
    for i in indices { out += m.data[(i * d)..<((i + 1) * d)] }
    return Tensor(shape: [indices.count, d], data: out)
}

/// A digest of the values and labels of a features set.
func trainInputsDigest(_ f: LabeledFeatures) -> String {
    var bytes = Data()
    f.features.withPointer { bytes.append(UnsafeBufferPointer(start: $0, count: f.features.count)) }
    f.labels.withUnsafeBytes { bytes.append(contentsOf: $0) }
    return bytes.withUnsafeBytes { contentDigest($0) }
}

/// The digest that identifies a checkpoint (the weights file of a Hugging Face directory).
public func modelDigest(_ path: String) throws -> String {
    var isDir: ObjCBool = false
    let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
    guard exists else { throw ExperimentError(.missingModel, "no model at \(path): give the path of a CLIP checkpoint") }
    return try contentDigest(path: isDir.boolValue ? path + "/model.safetensors" : path)
}
