import CLIP
import Datasets
import Foundation
import PromptLearning
import TensorCore
import TensorIO

/// What a cell is estimated to cost on this machine before it runs (`CostEstimator`).
public struct CellEstimate: Codable, Equatable, Sendable {
    /// Encoding the cell's features files that are not cached yet (0 when all are).
    public var featureSeconds: Double
    /// Building the trainer, epochs x steps per epoch x the measured step (plus decoding each batch
    /// where images are read every iteration) and the checkpoint after each epoch; DAPT's
    /// prototypes when not cached; a linear probe's C search.
    public var trainSeconds: Double
    /// The classifiers of the training set and every test set, a per-image classifier (CoCoOp) on
    /// each image, a prompted image tower re-encoding the images, the neural-collapse measures of
    /// each set; again at every `nc_every` epoch.
    public var evaluationSeconds: Double
    /// The sum of the three.
    public var seconds: Double
    /// Peak resident memory of the process running the cell: the model, what its towers keep once
    /// run, the features it holds, and the largest piece (encoding, a step, evaluation); at least
    /// the peak of loading the model.
    public var peakBytes: Int
    /// How many of the cell's features files (`ExperimentRunner.featureRequests`) are not cached yet.
    public var uncachedFeatureFiles: Int

    public init(featureSeconds: Double, trainSeconds: Double, evaluationSeconds: Double, peakBytes: Int, uncachedFeatureFiles: Int) {
        self.featureSeconds = featureSeconds; self.trainSeconds = trainSeconds; self.evaluationSeconds = evaluationSeconds
        self.seconds = featureSeconds + trainSeconds + evaluationSeconds
        self.peakBytes = peakBytes; self.uncachedFeatureFiles = uncachedFeatureFiles
    }

    enum CodingKeys: String, CodingKey {
        case featureSeconds = "feature_seconds", trainSeconds = "train_seconds", evaluationSeconds = "evaluation_seconds"
        case seconds, peakBytes = "peak_bytes", uncachedFeatureFiles = "uncached_feature_files"
    }
}

/// Estimates what cells cost on this machine from measured rates: decoding an image of each
/// dataset, the frozen image tower per image, one training step of each method as the cells
/// configure it at the grid's smallest and largest class counts (a line between), the classifiers
/// and prompted towers of evaluation, the linear probe's search, and the peak memory of each.
/// The rates are measured once per machine, model and precision (`RatesKey`) and kept in a rates
/// file; an estimate measures only what the file lacks (docs: "What a cell costs").
public final class CostEstimator {
    public let runner: ExperimentRunner
    /// The rates file (``defaultRatesURL(results:)`` by default).
    public let ratesURL: URL
    /// What the last `estimate` or `featuresJob` measured (empty when the rates file had it all),
    /// and how long that took.
    public private(set) var measured: [String] = []
    public private(set) var calibrationSeconds = 0.0
    var plans: [RunSpec: CellPlan] = [:]

    /// The margins `slurmLimits` adds: time x 1.5 + 5 minutes, memory x 1.25 + 512 MiB.
    public static let timeMargin = Margin(factor: 1.5, plus: 300)
    public static let memoryMargin = Margin(factor: 1.25, plus: 512 * 1024 * 1024)

    /// The margins as `--list` and `--slurm` state them.
    public static var marginDescription: String {
        "with a margin of time x\(formatNumber(timeMargin.factor)) + \(Int(timeMargin.plus / 60)) min, memory x\(formatNumber(memoryMargin.factor)) + \(Int(memoryMargin.plus) >> 20) MiB"
    }

    /// A limit with room: `value x factor + plus`.
    public struct Margin: Sendable, Equatable {
        public var factor: Double
        public var plus: Double
        public func apply(_ value: Double) -> Double { value * factor + plus }
    }

    public init(runner: ExperimentRunner, rates: URL) {
        self.runner = runner
        self.ratesURL = rates
    }

    /// `<results>/costs/rates.json`.
    public static func defaultRatesURL(results: ResultsFolder) -> URL {
        results.url.appendingPathComponent("costs").appendingPathComponent("rates.json")
    }

    /// This machine's rates for the runner's model and precision as the file has them (nil: none yet).
    public func currentRates() throws -> MachineRates? {
        try RatesFile.read(ratesURL).entry(key)
    }

    var key: RatesKey { RatesKey.current(modelDigest: runner.store.modelDigest, precision: runner.precision) }

    /// The estimate of each cell, in order. Measures what the rates file lacks for them and saves it.
    /// `afterFeaturesJob`: the cells run after `featuresJob` made their files (a Slurm array after
    /// its features job), so they encode nothing.
    public func estimate(_ cells: [RunSpec], afterFeaturesJob: Bool = false) throws -> [CellEstimate] {
        let plans = try cells.map(plan)
        let rates = try ratesCovering(plans)
        return plans.map { cost($0, rates, featuresCached: afterFeaturesJob) }
    }

    /// One process making every features file of `cells` not cached yet, each once
    /// (`ExperimentRunner.prepareFeatures`): its seconds and peak resident bytes.
    public func featuresJob(_ cells: [RunSpec]) throws -> (seconds: Double, peakBytes: Int) {
        let plans = try cells.map(plan)
        let rates = try ratesCovering(plans)
        var seen = Set<String>(), seconds = 0.0, piece = 0
        for p in plans {
            for f in p.files where !f.isCached && seen.insert(f.key).inserted {
                seconds += fileSeconds(f, rates)
                piece = max(piece, extractionPeak(f, rates))
            }
        }
        let packed = seconds > 0 ? rates.packed?.imageForward ?? 0 : 0
        return (seconds, max(rates.loadPeakBytes ?? 0, (rates.processBytes ?? 0) + packed + piece))
    }

    /// Slurm's `--time` (minutes) and `--mem` (MB) for jobs that each run one of these cells (an
    /// array shares one limit): the largest estimate with `timeMargin` and `memoryMargin`.
    public static func slurmLimits(for estimates: [CellEstimate]) -> (timeMinutes: Int, memoryMB: Int) {
        slurmLimits(seconds: estimates.map(\.seconds).max() ?? 0, peakBytes: estimates.map(\.peakBytes).max() ?? 0)
    }

    /// Slurm's limits for a job estimated at `seconds` and `peakBytes` (e.g. `featuresJob`).
    public static func slurmLimits(seconds: Double, peakBytes: Int) -> (timeMinutes: Int, memoryMB: Int) {
        let minutes = (timeMargin.apply(max(0, seconds)) / 60).rounded(.up)
        let mb = (memoryMargin.apply(Double(max(0, peakBytes))) / 1_048_576).rounded(.up)
        return (max(1, Int(minutes)), max(1, Int(mb)))
    }

    /// The rates of this key with everything `plans` need, measuring and saving what is missing.
    func ratesCovering(_ plans: [CellPlan]) throws -> MachineRates {
        var rates = try currentRates() ?? MachineRates(key: key)
        measured = []
        calibrationSeconds = try wallSeconds { measured = try calibrate(plans, rates: &rates) }
        if !measured.isEmpty { try RatesFile.save(rates, to: ratesURL) }
        return rates
    }

    // MARK: The cost model

    /// Encoding a features file: every view of every image decoded, preprocessed and encoded.
    func fileSeconds(_ f: CellPlan.File, _ r: MachineRates) -> Double {
        Double(f.images * f.views) * ((r.decode[f.dataset] ?? 0) + (r.encode?.seconds ?? 0))
    }

    /// What making a features file adds at its peak: a chunk of 64 images (all views of their
    /// pixels; the tower's activations, one view at a time through one workspace) and the file's
    /// features, assembled twice.
    func extractionPeak(_ f: CellPlan.File, _ r: MachineRates) -> Int {
        let chunk = min(64, f.images), res = runner.model.config.imageResolution
        let perImage = f.views > 1 ? r.encodeRepeatedPeakBytes ?? r.encode?.peakBytes ?? 0 : r.encode?.peakBytes ?? 0
        return perImage * chunk + chunk * f.views * 3 * res * res * 4 + 2 * f.bytes(runner.model.config.embedDim)
    }

    func cost(_ p: CellPlan, _ r: MachineRates, featuresCached: Bool = false) -> CellEstimate {
        let d = runner.model.config.embedDim, res = runner.model.config.imageResolution
        let decode = { (dataset: String) in r.decode[dataset] ?? 0 }
        let encode = r.encode ?? PieceRate(seconds: 0, peakBytes: 0)
        let uncached = featuresCached ? [] : p.files.filter { !$0.isCached }
        let featureSeconds = uncached.reduce(0) { $0 + fileSeconds($1, r) }
        var pieces = uncached.map { extractionPeak($0, r) }
        var held = p.files.reduce(0) { $0 + $1.bytes(d) }
        var train = 0.0, evaluation = 0.0
        let spec = p.spec, trainFile = p.files[0]
        let analysis = { (s: CellPlan.File) in (r.analysis ?? 0) * Double(s.classes * d * (s.images + s.classes)) }
        switch p.kind {
        case .zeroShot(let key):
            guard let m = r.method(key) else { break }
            // One text classifier for the training names, one per test set.
            for s in [trainFile] + p.tests { evaluation += m.at(s.classes) { $0.classifier.seconds } + analysis(s) }
            pieces.append(Int(m.at(p.maxClasses) { Double($0.classifier.peakBytes) }))
        case .probe:
            train = (r.probe ?? 0) * Double(trainFile.images * trainFile.classes)
            evaluation = ([trainFile] + p.tests.filter(\.sameClassesAsTraining)).reduce(0) { $0 + analysis($1) }
        case .trained(let t):
            guard let m = r.method(t.key) else { break }
            let k = trainFile.classes
            let perStep = m.at(k) { $0.stepSeconds } + (t.usesImages ? Double(t.batch) * decode(spec.dataset) : 0)
            train = m.at(k) { $0.setupSeconds } + Double(spec.recipe.epochs) * (Double(t.stepsPerEpoch) * perStep + m.epochSeconds)
            pieces.append(Int(m.at(k) { Double($0.stepPeakBytes) }))
            if t.prototypes == .uncached {
                train += Double(trainFile.images) * (decode(spec.dataset) + encode.seconds)
                pieces.append(encode.peakBytes * min(32, trainFile.images))
            }
            // A cached-views trainer keeps a normalised copy of its views.
            if !t.usesImages { held += trainFile.bytes(d) }
            // The training set (one view) and each test set the classifier can name, at the end and every nc_every epochs.
            var once = 0.0
            for s in [trainFile.oneView] + p.tests where !(t.classSpecific && !s.sameClassesAsTraining) {
                once += analysis(s)
                if m.perImageClassifier {
                    once += Double(s.images) * m.at(s.classes) { $0.classifier.seconds }
                    pieces.append(Int(m.at(s.classes) { Double($0.classifier.peakBytes) }) * min(64, s.images))
                } else {
                    once += m.at(s.classes) { $0.classifier.seconds }
                    pieces.append(Int(m.at(s.classes) { Double($0.classifier.peakBytes) }))
                }
                if let prompted = m.promptedEncode {
                    once += Double(s.images) * (decode(s.dataset) + prompted.seconds)
                    pieces.append(prompted.peakBytes * min(32, s.images) + min(32, s.images) * 3 * res * res * 4)
                }
            }
            let every = spec.recipe.ncEvery
            evaluation = once * Double(1 + (every > 0 ? (spec.recipe.epochs - 1) / every : 0))
        }
        // What the towers the cell runs keep resident once they have run.
        var packed = 0
        if let b = r.packed {
            var image = !uncached.isEmpty, text = true
            switch p.kind {
            case .probe: text = false
            case .zeroShot: break
            case .trained(let t):
                image = image || t.usesImages || t.prototypes == .uncached
                if t.config.method.needsImages { packed += b.imageBackward ?? 0 }
            }
            packed += (text ? b.text : 0) + (image ? b.imageForward : 0)
        }
        return CellEstimate(featureSeconds: featureSeconds, trainSeconds: train, evaluationSeconds: evaluation,
                            peakBytes: max(r.loadPeakBytes ?? 0, (r.processBytes ?? 0) + packed + held + (pieces.max() ?? 0)),
                            uncachedFeatureFiles: uncached.count)
    }

    // MARK: What a cell reads and runs

    /// The cell's files, class counts and method, as the cost model reads them (memoised; whether
    /// a file is cached is looked up at each use).
    func plan(_ spec: RunSpec) throws -> CellPlan {
        if let p = plans[spec] { return p }
        try runner.checkDatasets([spec])
        let requests = try runner.featureRequests(spec)
        var files: [CellPlan.File] = []
        var trainNames: [String] = [], template = ""
        for (i, r) in requests.enumerated() {
            let (items, selection, _) = try runner.store.items(r.request)
            if i == 0 { trainNames = selection.classNames; template = selection.template }
            files.append(CellPlan.File(key: r.request.key(seed: spec.seed), url: runner.store.url(for: r.request),
                                       role: r.request.split, dataset: r.request.dataset.rawValue, images: items.count,
                                       views: r.request.views, classNames: selection.classNames,
                                       sameClassesAsTraining: selection.classNames == trainNames, sample: Array(items.prefix(4)),
                                       template: selection.template))
        }
        let kind: CellPlan.Kind
        switch spec.method {
        case "zeroshot":
            kind = .zeroShot(key: "zeroshot")
        case "linear-probe":
            kind = .probe
        default:
            let config = try runner.trainConfig(spec, datasetTemplate: template)
            // The cell would fail the same way: say so rather than measure a method that cannot run.
            if config.method.architecture.promptsImageTower && !runner.model.image.isViT {
                throw PromptError.needsViT(method: config.method.name, model: runner.model.config)
            }
            let n = files[0].images
            let usesImages = config.method.needsImages || spec.recipe.augment == .perIteration
            let batch = max(1, min(spec.recipe.batchSize, n))
            var prototypes = CellPlan.Prototypes.none
            if config.method.needsPrototypes && usesImages {
                let request = FeatureRequest(dataset: try runner.datasetName(spec.dataset), split: .train,
                                             selection: runner.trainSelection(spec), views: 1)
                let (items, selection, loaded) = try runner.store.items(request)
                let digest = AugmentedImages(items: items, classNames: selection.classNames, source: loaded.images).digest
                let url = runner.store.directory.appendingPathComponent("prototypes-\(spec.dataset)-\(digest.prefix(16))-seed\(spec.seed).safetensors")
                prototypes = FileManager.default.fileExists(atPath: url.path) ? .cached : .uncached
            }
            kind = .trained(CellPlan.Trained(key: try Self.methodKey(config, batch: batch, usesImages: usesImages), config: config,
                                             batch: batch, stepsPerEpoch: max(1, n / spec.recipe.batchSize), usesImages: usesImages,
                                             classSpecific: config.method.prompt.classSpecific && config.method.learnsText,
                                             prototypes: prototypes))
        }
        let p = CellPlan(spec: spec, files: files, kind: kind)
        plans[spec] = p
        return p
    }

    /// The rates file's name of a method as a cell configures it: its name, batch, training source
    /// and a digest of the whole configured method (terms, weights, depths).
    static func methodKey(_ config: TrainConfig, batch: Int, usesImages: Bool) throws -> String {
        let digest = try encodeJSON(config.method, pretty: false).withUnsafeBytes { contentDigest($0) }
        return "\(config.method.name), batch \(batch), \(usesImages ? "images" : "cached features"), \(digest.prefix(12))"
    }
}

/// A cell as the cost model reads it.
struct CellPlan {
    struct File {
        /// The file's identity within a grid (`prepareFeatures`' key).
        var key: String
        var url: URL
        var role: SplitKind
        var dataset: String
        var images: Int
        var views: Int
        var classNames: [String]
        var sameClassesAsTraining: Bool
        /// A few of its images, for timing the decoding.
        var sample: [Datum]
        var template: String

        var classes: Int { classNames.count }
        var isCached: Bool { FileManager.default.fileExists(atPath: url.path) }
        func bytes(_ dimension: Int) -> Int { views * images * dimension * 4 }
        var oneView: File { var f = self; f.views = 1; return f }
    }

    enum Prototypes { case none, cached, uncached }

    struct Trained {
        var key: String
        var config: TrainConfig
        /// Images per step (the whole set when smaller than the recipe's batch).
        var batch: Int
        var stepsPerEpoch: Int
        /// Images decoded (and passed through the tower) every iteration.
        var usesImages: Bool
        var classSpecific: Bool
        var prototypes: Prototypes
    }

    enum Kind {
        case zeroShot(key: String)
        case probe
        case trained(Trained)
    }

    var spec: RunSpec
    /// `ExperimentRunner.featureRequests`: training draw, a probe's validation draw, the test sets.
    var files: [File]
    var kind: Kind

    var tests: [File] { files.filter { $0.role == .test } }
    var maxClasses: Int { files.map(\.classes).max() ?? 0 }
}
