import Datasets
import Foundation
import PromptLearning
import Yams

/// Why an experiment (a training job, a grid's cell, a report) cannot go on: the error of
/// Experiments besides `PlanError` (plans and options, exit 64) and the errors of the layers below.
/// `message` names the dataset, file or setting and says what to do; `kind` is what went wrong,
/// for code that acts on it.
public struct ExperimentError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// A setting the run cannot take: a loss term or term parameter the method does not have, a
        /// non-finite term weight, a cross-dataset protocol without targets.
        case invalidSetting
        /// A dataset name PromptTune does not know.
        case unknownDataset
        /// A split or selection that holds no images.
        case missingData
        /// No model file at the path given.
        case missingModel
        /// Class names that do not fit the data or the classifier: a count other than the features
        /// file's or split's, an ImageNet variant whose names are not ImageNet's, a linear probe on
        /// other classes.
        case classMismatch
        /// Features made with another model (its digest, or another feature dimension).
        case modelMismatch
        /// A NaN or infinity from the model (text features of non-finite text-tower weights).
        case nonFiniteInput
        /// A method asked for what it cannot do (a method that trains inside the image tower given a
        /// features file).
        case notSupported
        /// A training or test image that could not be decoded.
        case unreadableImage
        /// A JSON file (a record, a job's config) that is not a regular file, cannot be read or does
        /// not decode.
        case unreadableFile
        /// Training into a folder that already holds a checkpoint, without resuming.
        case outputExists
        /// Resuming where there is no checkpoint.
        case noCheckpoint
        /// A cell's lock file could not be created or locked.
        case lockFailed
    }

    public var kind: Kind
    /// The full, human-readable message.
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// A grid of runs: the same fields as `prompttune run`'s flags, or a YAML plan file.
///
///     protocol: base-to-novel
///     datasets: [dtd, eurosat]
///     methods: [zeroshot, coop, coop+npt]
///     shots: [16]
///     seeds: [1, 2, 3]
///     imbalance: [1, 0.25, 0.06]
///     epochs: 10                 # optional, for every method
///     augment: per-iteration     # optional: CoOp's fresh crops every step (default: views)
///     overrides:                 # optional, per method
///       coop+npt: {lr: 0.001}
public struct GridPlan: Codable, Equatable, Sendable {
    public var name: String?
    public var protocolKind: ProtocolKind
    public var datasets: [String]
    /// Test datasets (cross-dataset, domain generalisation); default: the protocol's.
    public var targets: [String]?
    public var methods: [String]
    public var shots: [Int]
    public var seeds: [Int]
    public var imbalance: [Double]
    public var model: String?
    public var root: String?
    public var out: String?
    /// Overrides for every method of the grid.
    public var all: RecipeOverride
    /// Overrides per method name.
    public var overrides: [String: RecipeOverride]
    /// The long-tailed protocol's many / medium / few-shot rule (`shot_rule: lift|oltr`); nil: LIFT's.
    public var shotRule: ShotRule?
    /// How the imbalance values thin the training draws (`imbalance_profile`): tau (default) or candle.
    public var imbalanceProfile: ImbalanceProfile?

    public init(name: String? = nil, protocolKind: ProtocolKind, datasets: [String], targets: [String]? = nil,
                methods: [String], shots: [Int], seeds: [Int], imbalance: [Double] = [1], model: String? = nil,
                root: String? = nil, out: String? = nil, all: RecipeOverride = RecipeOverride(),
                overrides: [String: RecipeOverride] = [:], shotRule: ShotRule? = nil) {
        self.name = name; self.protocolKind = protocolKind; self.datasets = datasets; self.targets = targets
        self.methods = methods; self.shots = shots; self.seeds = seeds; self.imbalance = imbalance
        self.model = model; self.root = root; self.out = out; self.all = all; self.overrides = overrides
        self.shotRule = shotRule
    }

    enum CodingKeys: String, CodingKey {
        case name, protocolKind = "protocol", datasets, targets, methods, shots, seeds, imbalance, model, root, out
        case epochs, lr, batchSize = "batch_size", views, ncEvery = "nc_every", augment, overrides, shotRule = "shot_rule"
        case imbalanceProfile = "imbalance_profile"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        protocolKind = try c.decodeIfPresent(ProtocolKind.self, forKey: .protocolKind) ?? .fewShot
        // A recipe-only plan (no datasets or methods) is completed by flags; `validate` asks for them.
        datasets = try c.decodeIfPresent([String].self, forKey: .datasets) ?? []
        targets = try c.decodeIfPresent([String].self, forKey: .targets)
        methods = try c.decodeIfPresent([String].self, forKey: .methods) ?? []
        // The long-tailed protocol trains on every image (0) unless shots cap them.
        shots = try c.decodeIfPresent([Int].self, forKey: .shots) ?? (protocolKind == .longTailed ? [0] : [16])
        seeds = try c.decodeIfPresent([Int].self, forKey: .seeds) ?? [1, 2, 3]
        imbalance = try c.decodeIfPresent([Double].self, forKey: .imbalance) ?? [1]
        model = try c.decodeIfPresent(String.self, forKey: .model)
        root = try c.decodeIfPresent(String.self, forKey: .root)
        out = try c.decodeIfPresent(String.self, forKey: .out)
        all = RecipeOverride(epochs: try c.decodeIfPresent(Int.self, forKey: .epochs),
                             lr: try c.decodeIfPresent(Double.self, forKey: .lr),
                             batchSize: try c.decodeIfPresent(Int.self, forKey: .batchSize),
                             views: try c.decodeIfPresent(Int.self, forKey: .views),
                             ncEvery: try c.decodeIfPresent(Int.self, forKey: .ncEvery),
                             augment: try c.decodeIfPresent(Augmentation.self, forKey: .augment))
        overrides = try c.decodeIfPresent([String: RecipeOverride].self, forKey: .overrides) ?? [:]
        shotRule = try c.decodeIfPresent(ShotRule.self, forKey: .shotRule)
        imbalanceProfile = try c.decodeIfPresent(ImbalanceProfile.self, forKey: .imbalanceProfile)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(name, forKey: .name)
        try c.encode(protocolKind, forKey: .protocolKind)
        try c.encode(datasets, forKey: .datasets)
        try c.encodeIfPresent(targets, forKey: .targets)
        try c.encode(methods, forKey: .methods)
        try c.encode(shots, forKey: .shots)
        try c.encode(seeds, forKey: .seeds)
        try c.encode(imbalance, forKey: .imbalance)
        try c.encodeIfPresent(model, forKey: .model)
        try c.encodeIfPresent(root, forKey: .root)
        try c.encodeIfPresent(out, forKey: .out)
        try c.encodeIfPresent(all.epochs, forKey: .epochs)
        try c.encodeIfPresent(all.lr, forKey: .lr)
        try c.encodeIfPresent(all.batchSize, forKey: .batchSize)
        try c.encodeIfPresent(all.views, forKey: .views)
        try c.encodeIfPresent(all.ncEvery, forKey: .ncEvery)
        try c.encodeIfPresent(all.augment, forKey: .augment)
        if !overrides.isEmpty { try c.encode(overrides, forKey: .overrides) }
        try c.encodeIfPresent(shotRule, forKey: .shotRule)
        try c.encodeIfPresent(imbalanceProfile, forKey: .imbalanceProfile)
    }

    /// Reads a YAML plan; errors (`PlanError`) name the source, and an unknown key its line and
    /// the closest valid key.
    public static func read(yaml text: String, source: String) throws -> GridPlan {
        do {
            try PlanKeys.check(yaml: text, source: source)
            return try YAMLDecoder().decode(GridPlan.self, from: text)
        } catch let e as PlanError {
            throw e
        } catch let e as DecodingError {
            throw PlanError("plan \(source): \(describe(e))")
        } catch {
            throw PlanError("plan \(source) is not valid YAML: \(error)")
        }
    }

    /// The test datasets of a cross-dataset or domain-generalisation run from `source`.
    public static func defaultTargets(protocolKind: ProtocolKind, source: String) -> [String] {
        switch protocolKind {
        case .crossDataset:
            return papersDatasets.filter { $0 != source }
        case .domainGeneralization:
            return ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
        case .fewShot, .baseToNovel, .longTailed:
            return []
        }
    }

    /// `targets` in the order of the papers' tables (ImageNet-V2, -Sketch, -A, -R; then the 11
    /// datasets in CoOp's order), any others after them as given, so that records list their
    /// evaluations, and reports their columns, alike whatever order a plan names them in.
    public static func papersOrder(_ targets: [String]) -> [String] {
        let order = defaultTargets(protocolKind: .domainGeneralization, source: "imagenet") + papersDatasets
        func rank(_ t: String) -> Int { order.firstIndex(of: t) ?? order.count }
        return targets.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
    }

    /// The 11 datasets of the CoOp papers' tables.
    public static let papersDatasets = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                                        "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]

    /// Checks the fields a grid cannot run without; messages (`PlanError`) name the field and the value.
    public func validate() throws {
        func nonEmpty<T>(_ list: [T], _ field: String) throws {
            if list.isEmpty { throw PlanError("the plan's \(field) list is empty; give \(field): in the plan or --\(field)") }
        }
        try nonEmpty(datasets, "datasets"); try nonEmpty(methods, "methods"); try nonEmpty(shots, "shots")
        try nonEmpty(seeds, "seeds"); try nonEmpty(imbalance, "imbalance")
        if protocolKind == .longTailed {
            for k in shots where k < 0 { throw PlanError("shots must be 0 (every training image) or a cap of at least 1 per class (got \(k))") }
            for d in datasets where !(DatasetName(rawValue: d)?.isLongTailed ?? false) {
                throw PlanError("the long-tailed protocol trains on a long-tailed dataset (\(DatasetName.longTailed.map(\.rawValue).joined(separator: ", "))); '\(d)' is not one. For class imbalance on another dataset use the few-shot protocol's imbalance (tau)")
            }
            if imbalanceProfile != nil {
                throw PlanError("imbalance_profile (--imbalance-profile) applies to imbalanced draws of the other protocols; the long-tailed protocol's datasets are long-tailed as they are")
            }
            if imbalance != [1] {
                throw PlanError("the long-tailed protocol takes no imbalance tau (got \(imbalance.map(formatNumber).joined(separator: ", "))): its datasets are long-tailed as they are")
            }
        } else {
            // Candle's profile may thin whole training splits (shots 0: every image, the head keeping the largest class).
            let least = imbalanceProfile == .candle ? 0 : 1
            for k in shots where k < least {
                throw PlanError(least == 0 ? "shots must be 0 (every training image) or at least 1 (got \(k))" : "shots must be at least 1 (got \(k))")
            }
            if let rule = shotRule {
                throw PlanError("shot_rule \(rule.rawValue) (--shot-rule) applies to the long-tailed protocol only: drop it, or run protocol long-tailed. The \(protocolKind.rawValue) protocol's many / medium / few-shot groups follow the tau protocol's rule (\(ShotGroups.rule))")
            }
        }
        for s in seeds where s < 0 { throw PlanError("seeds must be non-negative (got \(s))") }
        for t in imbalance where !(t > 0 && t <= 1) { throw PlanError("imbalance tau must lie in (0, 1] (got \(t))") }
        for m in methods where m != "zeroshot" && m != "linear-probe" {
            do { _ = try Method.named(m) } catch { throw PlanError("\(error)") }
        }
        // Overrides of methods the grid does not run are kept for other grids (a recipe plan serves
        // many), but a name that is no method at all is an error.
        for name in overrides.keys.sorted() where !methods.contains(name) && PlanKeys.termWeights(of: name) == nil {
            let known = Method.bases.keys.sorted() + ["zeroshot", "linear-probe"] + methods
            throw PlanError("the plan overrides '\(name)', which is not a method\(PlanKeys.suggestion(name, known)) (its methods: \(methods.joined(separator: ", ")))")
        }
        for o in [all] + Array(overrides.values) {
            if let e = o.epochs, e < 1 || e > TrainConfig.maxEpochs { throw PlanError("epochs must lie in 1...\(TrainConfig.maxEpochs) (got \(e))") }
            if let b = o.batchSize, b < 1 { throw PlanError("batch size must be at least 1 (got \(b))") }
            if let v = o.views, v < 1 { throw PlanError("views must be at least 1 (got \(v))") }
            if let lr = o.lr, !(lr > 0 && lr.isFinite) { throw PlanError("learning rate must be positive and finite (got \(lr))") }
            if let n = o.ncEvery, n < 0 { throw PlanError("nc_every must be non-negative (got \(n))") }
        }
        for (name, o) in overrides.sorted(by: { $0.key < $1.key }) {
            let terms = TermSettings.terms(of: name) ?? []
            for (key, w) in (o.termWeights ?? [:]).sorted(by: { $0.key < $1.key }) {
                // An older plan's `tau` is a parameter (DAPT's temperature), held to its range.
                let legacy = TermSettings.legacyParameter(key, in: terms)
                let declared = legacy.flatMap { TermSettings.declaration(term: $0.term, parameter: $0.parameter) } ?? TermParameter.weight
                if let problem = declared.problem(w) { throw PlanError("overrides of \(name): term_weights \(key) \(problem)") }
            }
            for (term, values) in (o.termParameters ?? [:]).sorted(by: { $0.key < $1.key }) {
                for (parameter, v) in values.sorted(by: { $0.key < $1.key }) {
                    if let problem = TermSettings.unknown(method: name, term: term, parameter: parameter) {
                        throw PlanError("overrides of \(name): \(problem) in term_parameters")
                    }
                    if let problem = TermSettings.declaration(term: term, parameter: parameter)?.problem(v) {
                        throw PlanError("overrides of \(name): term_parameters \(term).\(parameter) \(problem)")
                    }
                }
            }
        }
        if let name {
            // The default results folder is results/<name>: a name is one folder, never a path.
            guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.contains("\\"), !name.contains("\0"),
                  name.count <= 100 else {
                throw PlanError("the plan's name '\(name.prefix(100))' must be a plain folder name (no '/', not '.' or '..', at most 100 characters): the results go to results/<name> unless --out says otherwise")
            }
        }
        // The grid is a product of its lists: bounded before anything is built (10^7 cells took 2.2 GB
        // and a minute to list).
        var count = 1
        for n in [datasets.count, imbalance.count, shots.count, seeds.count, methods.count] {
            let (p, o) = count.multipliedReportingOverflow(by: n)
            guard !o, p <= Self.maxCells else {
                throw PlanError("the plan's grid has \(datasets.count) datasets x \(imbalance.count) taus x \(shots.count) shots x \(seeds.count) seeds x \(methods.count) methods, more than \(Self.maxCells) cells; split it into several plans")
            }
            count = p
        }
        // Term weights only for the terms the method has (what a plan's lines were checked for).
        for (name, o) in overrides.sorted(by: { $0.key < $1.key }) {
            guard let weights = o.termWeights, !weights.isEmpty, let terms = PlanKeys.termWeights(of: name) else { continue }
            for key in weights.keys.sorted() where !terms.contains(key) {
                throw PlanError("overrides of \(name): no loss term '\(key)' in term_weights\(PlanKeys.suggestion(key, terms)) (\(terms.isEmpty ? "it has no loss terms besides cross-entropy" : "its terms: " + terms.joined(separator: ", ")))")
            }
        }
    }

    /// Most cells a grid may have (a paper's full grid: 11 datasets x 5 shots x 3 seeds x 10
    /// methods x 3 taus is 4,950).
    public static let maxCells = 100_000

    /// The grid's cells, numbered from 0 in this order: dataset, tau, shots, seed, method (so the
    /// features of one draw are made once and reused by every method that follows).
    public func cells() throws -> [RunSpec] {
        try validate()
        var specs: [RunSpec] = []
        for dataset in datasets {
            let targets = Self.papersOrder(self.targets ?? Self.defaultTargets(protocolKind: protocolKind, source: dataset))
            for tau in imbalance {
                for k in shots {
                    for seed in seeds {
                        for method in methods {
                            var recipe = Recipes.recipe(method: method, dataset: dataset, shots: k, protocolKind: protocolKind)
                            let trains = recipe.epochs > 0
                            recipe = all.apply(to: recipe, trains: trains)
                            if let o = overrides[method] { recipe = o.apply(to: recipe, trains: trains) }
                            // Image prompts augment every image at every iteration: no cached views to make,
                            // and their cells stay one cell whether or not a plan says so.
                            if (try? Method.named(method))?.needsImages == true { recipe.views = 1; recipe.augment = .views }
                            if recipe.augment == .perIteration { recipe.views = 1 }
                            specs.append(RunSpec(protocolKind: protocolKind, dataset: dataset, targets: targets, shots: k,
                                                 seed: seed, imbalance: tau, method: method, recipe: recipe,
                                                 shotRule: protocolKind == .longTailed ? shotRule ?? .lift : nil,
                                                 imbalanceProfile: imbalanceProfile == .candle && tau != 1 ? .candle : nil))
                        }
                    }
                }
            }
        }
        return specs
    }
}

func describe(_ e: DecodingError) -> String {
    func path(_ c: [CodingKey]) -> String { c.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") }
    switch e {
    case .keyNotFound(let key, let ctx): return "missing field '\(path(ctx.codingPath + [key]))'"
    case .typeMismatch(_, let ctx): return "field '\(path(ctx.codingPath))': \(ctx.debugDescription)"
    case .dataCorrupted(let ctx): return "\(path(ctx.codingPath)) \(ctx.debugDescription)"
    case .valueNotFound(_, let ctx): return "field '\(path(ctx.codingPath))' has no value"
    @unknown default: return "\(e)"
    }
}

/// The papers' grids by name (`--plan NAME`), as YAML so they read like a user's plan file.
public enum BuiltInPlans {
    public static let all: [String: String] = [
        "demo": """
            # The README's first command: a small protocol on the built-in Fashion-MNIST.
            protocol: few-shot
            datasets: [fashion_mnist]
            methods: [zeroshot, coop, coop+npt]
            shots: [1, 4, 16]
            seeds: [1, 2, 3]
            imbalance: [1, 0.06]
            epochs: 50
            nc_every: 10
            """,
        "coop-few-shot": """
            # CoOp's few-shot table (Zhou et al., IJCV 2022, Fig. 3): 11 datasets, 1-16 shots, 3 seeds.
            protocol: few-shot
            datasets: [imagenet, caltech101, oxford_pets, stanford_cars, oxford_flowers, food101, fgvc_aircraft, sun397, dtd, eurosat, ucf101]
            methods: [zeroshot, linear-probe, coop]
            shots: [1, 2, 4, 8, 16]
            seeds: [1, 2, 3]
            """,
        "base-to-novel": """
            # The base-to-novel table of CoCoOp / KgCoOp / MaPLe: 16 shots of the base classes.
            protocol: base-to-novel
            datasets: [imagenet, caltech101, oxford_pets, stanford_cars, oxford_flowers, food101, fgvc_aircraft, sun397, dtd, eurosat, ucf101]
            methods: [zeroshot, coop, kgcoop, coop+npt, kgcoop+npt]
            shots: [16]
            seeds: [1, 2, 3]
            """,
        "npt-imbalance": """
            # NPT's class-imbalance study: base-to-novel with tau = 1, 0.25, 0.06 (head 16 shots).
            protocol: base-to-novel
            datasets: [imagenet, caltech101, oxford_pets, stanford_cars, oxford_flowers, food101, fgvc_aircraft, sun397, dtd, eurosat, ucf101]
            methods: [coop, coop+npt, kgcoop, kgcoop+npt]
            shots: [16]
            seeds: [1, 2, 3]
            imbalance: [1, 0.25, 0.06]
            """,
        "cross-dataset": """
            # Cross-dataset transfer: ImageNet (all classes, 16 shots) to the other 10 datasets.
            protocol: cross-dataset
            datasets: [imagenet]
            methods: [zeroshot, coop, kgcoop, coop+npt]
            shots: [16]
            seeds: [1, 2, 3]
            """,
        "domain-generalization": """
            # Domain generalisation: ImageNet to ImageNet-V2, -Sketch, -A, -R.
            protocol: domain-generalization
            datasets: [imagenet]
            methods: [zeroshot, coop, kgcoop, coop+npt]
            shots: [16]
            seeds: [1, 2, 3]
            """,
    ]

    public static func plan(named name: String) throws -> GridPlan {
        guard let text = all[name] else {
            throw PlanError("no built-in plan '\(name)'; built-in plans: \(all.keys.sorted().joined(separator: ", "))")
        }
        var plan = try GridPlan.read(yaml: text, source: "built-in plan '\(name)'")
        plan.name = name
        return plan
    }
}
