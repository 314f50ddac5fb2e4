import Datasets
import Foundation
import PromptLearning

/// The papers' evaluation protocols (METHODS.md section 4).
public enum ProtocolKind: String, Codable, CaseIterable, Sendable {
    /// Train on K shots of every class; test on the dataset's test split.
    case fewShot = "few-shot"
    /// Train on 16 shots of the base half of the classes; test on base (base names) and novel (novel names).
    case baseToNovel = "base-to-novel"
    /// Train on a source dataset with all its classes; test on other datasets with their names.
    case crossDataset = "cross-dataset"
    /// Train on ImageNet; test on ImageNet-V2, -Sketch, -A and -R (-A/-R with their 200-class subsets).
    case domainGeneralization = "domain-generalization"
    /// Train on a long-tailed dataset's long-tailed train split (every image, or at most `shots` per
    /// class); test on its balanced test split, with many / medium / few-shot accuracy by a named
    /// ``ShotRule`` (LIFT's by default).
    case longTailed = "long-tailed"
}

/// The training settings of a run. Defaults come from the recipe table (`Recipes`), per method,
/// dataset and shots; a grid or a plan file may override any of them.
public struct Recipe: Codable, Equatable, Hashable, Sendable {
    public var epochs: Int
    public var learningRate: Double
    public var batchSize: Int
    /// Cached augmented views per training image standing in for CoOp's fresh augmentation every
    /// iteration (docs/EXPERIMENTS.md says what they cost).
    public var views: Int
    /// NPT / DAPT / KgCoOp weights that differ from the method's defaults (term key -> weight),
    /// e.g. DAPT's per-dataset beta_t as "inter".
    public var termWeights: [String: Double]
    /// Loss-term parameters that differ from the terms' declared defaults (term key -> parameter ->
    /// value), e.g. DAPT's temperature as ["inter": ["tau": 1]]. Written only when not empty, so the
    /// specs (and identities) of cells without any stay as before.
    public var termParameters: [String: [String: Double]]
    /// Record the neural-collapse measures every this many epochs (0: only at the end).
    public var ncEvery: Int
    /// How the training images are augmented: `views` cached views (the default), or afresh at every
    /// iteration as CoOp does (methods with image prompts always are, and keep `views` here).
    public var augment: Augmentation
    /// MaPLe's prompt depth where the protocol's config sets one other than the method's (3 in
    /// cross-dataset and domain generalisation); nil for every other method.
    public var promptDepth: Int?
    /// PromptSRC's Gaussian prompt aggregation where the protocol's config sets one other than the
    /// method's (15/1): cross-dataset and domain generalisation 6/10, few-shot 30/30 or 45/5 by
    /// dataset; nil for every other method and in base-to-novel.
    public var aggregation: GaussianPromptAggregation?

    public init(epochs: Int, learningRate: Double, batchSize: Int, views: Int, termWeights: [String: Double] = [:],
                termParameters: [String: [String: Double]] = [:], ncEvery: Int = 0, augment: Augmentation = .views,
                promptDepth: Int? = nil, aggregation: GaussianPromptAggregation? = nil) {
        self.epochs = epochs; self.learningRate = learningRate; self.batchSize = batchSize; self.views = views
        self.termWeights = termWeights; self.termParameters = termParameters; self.ncEvery = ncEvery; self.augment = augment
        self.promptDepth = promptDepth
        self.aggregation = aggregation
    }

    enum CodingKeys: String, CodingKey {
        case epochs, learningRate = "lr", batchSize = "batch_size", views, termWeights = "term_weights"
        case termParameters = "term_parameters", ncEvery = "nc_every", augment, promptDepth = "prompt_depth"
        case aggregation = "gpa"
    }

    /// `term_parameters`, `augment` and `prompt_depth` are written only when they are not the default, so the specs
    /// and records of cells without them read and compare as before they existed.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        epochs = try c.decode(Int.self, forKey: .epochs)
        learningRate = try c.decode(Double.self, forKey: .learningRate)
        batchSize = try c.decode(Int.self, forKey: .batchSize)
        views = try c.decode(Int.self, forKey: .views)
        termWeights = try c.decode([String: Double].self, forKey: .termWeights)
        termParameters = try c.decodeIfPresent([String: [String: Double]].self, forKey: .termParameters) ?? [:]
        ncEvery = try c.decode(Int.self, forKey: .ncEvery)
        augment = try c.decodeIfPresent(Augmentation.self, forKey: .augment) ?? .views
        promptDepth = try c.decodeIfPresent(Int.self, forKey: .promptDepth)
        aggregation = try c.decodeIfPresent(GaussianPromptAggregation.self, forKey: .aggregation)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(epochs, forKey: .epochs)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(views, forKey: .views)
        try c.encode(termWeights, forKey: .termWeights)
        if !termParameters.isEmpty { try c.encode(termParameters, forKey: .termParameters) }
        try c.encode(ncEvery, forKey: .ncEvery)
        if augment != .views { try c.encode(augment, forKey: .augment) }
        try c.encodeIfPresent(promptDepth, forKey: .promptDepth)
        try c.encodeIfPresent(aggregation, forKey: .aggregation)
    }
}

/// Where a text method's training image features come from.
public enum Augmentation: String, Codable, CaseIterable, Equatable, Hashable, Sendable {
    /// `Recipe.views` augmented views per image, encoded once and cached (cheap; docs/EXPERIMENTS.md).
    case views
    /// CoOp's protocol: every step decodes its batch's images, draws a fresh RandomResizedCrop and
    /// flip of each (seeded per image and epoch) and encodes them with the frozen image tower.
    case perIteration = "per-iteration"
}

/// One cell of a grid: everything that decides its numbers.
///
/// One seed decides everything random in a run: the few-shot draw uses it as Dassl's seed (so
/// seed S draws CoOp's `split_fewshot/shot_K-seed_S.pkl`), the augmented views are seeded with it
/// per (image, view), and the trainer's generator (context initialisation, shuffling, view choice)
/// starts from it. Equal specs give equal records, bit for bit, on the same machine.
public struct RunSpec: Codable, Equatable, Hashable, Sendable {
    public var protocolKind: ProtocolKind
    /// The training dataset (DatasetName raw value).
    public var dataset: String
    /// Test datasets of cross-dataset and domain-generalisation runs (empty otherwise).
    public var targets: [String]
    public var shots: Int
    public var seed: Int
    /// Class-imbalance tau in (0, 1]; 1 = balanced.
    public var imbalance: Double
    /// `zeroshot`, `linear-probe`, or a prompt-tuning method (`coop`, `kgcoop+npt`, ...).
    public var method: String
    public var recipe: Recipe
    /// The long-tailed protocol's many / medium / few-shot rule; nil for the other protocols (whose
    /// groups, where any, follow ``ShotGroups/rule``). Written only when set, so other specs and
    /// their identities read as before.
    public var shotRule: ShotRule?
    /// How `imbalance` thins the training draw: nil for NPT's tau protocol, `.candle` for Candle's
    /// (classes ranked by count, its n_i rule). Written only when set.
    public var imbalanceProfile: ImbalanceProfile?

    public init(protocolKind: ProtocolKind, dataset: String, targets: [String] = [], shots: Int, seed: Int,
                imbalance: Double = 1, method: String, recipe: Recipe, shotRule: ShotRule? = nil,
                imbalanceProfile: ImbalanceProfile? = nil) {
        self.protocolKind = protocolKind; self.dataset = dataset; self.targets = targets; self.shots = shots
        self.seed = seed; self.imbalance = imbalance; self.method = method; self.recipe = recipe
        self.shotRule = shotRule; self.imbalanceProfile = imbalanceProfile
    }

    enum CodingKeys: String, CodingKey {
        case protocolKind = "protocol", dataset, targets, shots, seed, imbalance, method, recipe, shotRule = "shot_rule"
        case imbalanceProfile = "imbalance_profile"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        protocolKind = try c.decode(ProtocolKind.self, forKey: .protocolKind)
        dataset = try c.decode(String.self, forKey: .dataset)
        targets = try c.decode([String].self, forKey: .targets)
        shots = try c.decode(Int.self, forKey: .shots)
        seed = try c.decode(Int.self, forKey: .seed)
        imbalance = try c.decode(Double.self, forKey: .imbalance)
        method = try c.decode(String.self, forKey: .method)
        recipe = try c.decode(Recipe.self, forKey: .recipe)
        shotRule = try c.decodeIfPresent(ShotRule.self, forKey: .shotRule)
        imbalanceProfile = try c.decodeIfPresent(ImbalanceProfile.self, forKey: .imbalanceProfile)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(protocolKind, forKey: .protocolKind)
        try c.encode(dataset, forKey: .dataset)
        try c.encode(targets, forKey: .targets)
        try c.encode(shots, forKey: .shots)
        try c.encode(seed, forKey: .seed)
        try c.encode(imbalance, forKey: .imbalance)
        try c.encode(method, forKey: .method)
        try c.encode(recipe, forKey: .recipe)
        try c.encodeIfPresent(shotRule, forKey: .shotRule)
        try c.encodeIfPresent(imbalanceProfile, forKey: .imbalanceProfile)
    }

    /// Trains on the base half of the classes (base-to-novel).
    public var trainsOnBase: Bool { protocolKind == .baseToNovel }

    /// The method as reports name it: the method, marked "(per-iteration)" on CoOp's per-iteration
    /// augmentation, so that its rows and curves are never averaged with the cached-views runs'.
    public var reportMethod: String {
        recipe.augment == .perIteration ? "\(method) (\(Augmentation.perIteration.rawValue))" : method
    }

    /// A readable, unique folder name for the cell.
    public var identifier: String {
        var parts = [protocolKind.rawValue, dataset, method, shots == 0 ? "allshot" : "\(shots)shot", "seed\(seed)"]
        if imbalance != 1 { parts.append((imbalanceProfile == .candle ? "candle" : "tau") + formatNumber(imbalance)) }
        if recipe.augment == .perIteration { parts.append(Augmentation.perIteration.rawValue) }
        if let shotRule, shotRule != .lift { parts.append("rule-\(shotRule.rawValue)") }
        return parts.joined(separator: "_").replacingOccurrences(of: "/", with: "-")
    }
}

func formatNumber(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x)
}
