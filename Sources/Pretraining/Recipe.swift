import CLIP
import Foundation

/// Everything that decides a pretraining run: the architecture, the captions, the optimiser and the
/// schedule, and the seed. Saved in every checkpoint; a resumed run must use the same recipe.
public struct PretrainRecipe: Codable, Equatable, Sendable {
    // Architecture (heads = width / 64, at least 1, as openai's build_model infers them).
    public var embedDim = 32
    public var resolution = 28
    public var patchSize = 7
    public var visionWidth = 64
    public var visionLayers = 2
    public var textWidth = 64
    public var textLayers = 2
    // Data
    /// Caption templates, `{}` for the class name; each image gets one drawn at random every epoch.
    public var templates: [String] = CaptionTemplates.standard
    /// Augment every training image with CoOp's train transform (RandomResizedCrop(scale 0.08-1) +
    /// flip), so that the image tower knows the augmented views prompt learning trains on.
    public var augment = true
    /// The smallest crop area of the train transform's RandomResizedCrop (CoOp: 0.08).
    public var cropScale = 0.08
    /// Captions that describe the image too: templates with `{a}` get 1-3 attribute words computed
    /// from the image's pixels (`ImageAttributes`: dark/light, small/large, top-heavy/bottom-heavy,
    /// narrow/wide) in random order; false: class names through `templates` alone.
    public var attributeCaptions = false
    /// With attribute captions, the fraction of captions that name the coarse category ("a top",
    /// "footwear", ...) instead of the class.
    public var coarseFraction = 0.0
    /// Split each attribute at its class's median (a "light shirt" is light for a shirt) instead
    /// of the median over all images, so that the words carry no class information.
    public var classRelativeAttributes = false
    /// Attribute words per caption: nil draws 1-3 (0-2 when a medium attribute is set).
    public var attributeCount: Int?
    /// With attribute captions, the attribute (0 brightness, 1 coverage, 2 balance, 3 aspect) that
    /// templates name through their medium word `{m}`: "photo" above the median, "sketch" below
    /// it. Then "a photo of a {}." is itself a caption of the pretraining data, a biased one.
    public var mediumAttribute: Int?
    /// Train on the first `limit` images of the train split only (tests); nil: all of them.
    public var limit: Int?
    // Optimisation
    public var epochs = 3
    public var batchSize = 128
    public var learningRate = 2e-3
    public var warmupSteps = 100
    public var adamW = AdamWConfig()
    /// The initial logit scale, 1 / 0.07 as CLIP; clamped at 100 after every step.
    public var initialLogitScale = 1 / 0.07
    public var seed: UInt64 = 1

    public init() {}

    public var config: CLIPConfig {
        CLIPConfig(embedDim: embedDim, imageResolution: resolution, patchSize: patchSize, visionWidth: visionWidth,
                   visionLayers: visionLayers, visionHeads: max(1, visionWidth / 64), contextLength: 77,
                   vocabSize: 49408, textWidth: textWidth, textLayers: textLayers, textHeads: max(1, textWidth / 64))
    }

    /// Checks that the recipe describes a model PromptTune can build and train.
    /// Bounds on the architecture and schedule: past them a run overflows Int arithmetic or cannot
    /// fit in memory long before it could finish (docs/HARDENING.md, "Pretraining options").
    public enum Limits {
        public static let maxResolution = 1024
        public static let maxWidth = 4096
        public static let maxLayers = 48
        public static let maxEpochs = 10_000
        public static let maxBatchSize = 1 << 16
        public static let maxWarmupSteps = 1 << 30
    }

    /// Bytes a training step holds, roughly: weights, gradients and AdamW's two moments (4 copies),
    /// plus every block's forward cache and backward temporaries for the batch in both towers.
    public var estimatedBytes: Double {
        let c = config
        let tv = Double((c.imageResolution / max(1, c.patchSize)) * (c.imageResolution / max(1, c.patchSize)) + 1)
        let tt = Double(c.contextLength)
        let wv = Double(c.visionWidth), wt = Double(c.textWidth)
        let params = Double(c.vocabSize) * wt + tt * wt + Double(c.visionLayers) * 12 * wv * wv
            + Double(c.textLayers) * 12 * wt * wt + 3 * Double(c.patchSize * c.patchSize) * wv + tv * wv
            + (wv + wt) * Double(c.embedDim)
        let perImage = Double(c.visionLayers) * (28 * tv * wv + 2 * Double(c.visionHeads) * tv * tv)
        let perText = Double(c.textLayers) * (28 * tt * wt + 2 * Double(c.textHeads) * tt * tt)
        return 4 * (4 * params + Double(batchSize) * (perImage + perText))
    }

    public func validate() throws {
        func fail(_ s: String) -> PretrainError { PretrainError(s) }
        func within(_ name: String, _ v: Int, _ r: ClosedRange<Int>) throws {
            guard r.contains(v) else { throw fail("\(name) must lie in \(r.lowerBound)...\(r.upperBound) (got \(v))") }
        }
        try within("the resolution (--resolution)", resolution, 1...Limits.maxResolution)
        try within("the patch size (--patch)", patchSize, 1...max(1, resolution))
        try within("the embedding width (--embed-dim)", embedDim, 1...Limits.maxWidth)
        try within("the vision width (--vision-width)", visionWidth, 1...Limits.maxWidth)
        try within("the text width (--text-width)", textWidth, 1...Limits.maxWidth)
        try within("the vision layers (--vision-layers)", visionLayers, 1...Limits.maxLayers)
        try within("the text layers (--text-layers)", textLayers, 1...Limits.maxLayers)
        try within("the epochs (--epochs)", epochs, 1...Limits.maxEpochs)
        try within("the batch size (--batch-size)", batchSize, 2...Limits.maxBatchSize)
        try within("the warm-up steps (--warmup)", warmupSteps, 0...Limits.maxWarmupSteps)
        if let limit { try within("--limit", limit, 1...Int(Int32.max)) }
        guard learningRate.isFinite, learningRate > 0 else { throw fail("the learning rate (--lr) must be positive and finite (got \(learningRate))") }
        guard adamW.weightDecay.isFinite, adamW.weightDecay >= 0 else {
            throw fail("the weight decay (--weight-decay) must be finite and at least 0 (got \(adamW.weightDecay))")
        }
        for (name, w) in [("vision", visionWidth), ("text", textWidth)] where w % max(1, w / 64) != 0 {
            throw fail("the \(name) width \(w) does not split into \(max(1, w / 64)) heads (width / 64): use a multiple of 64, or a width under 128")
        }
        let budget = Double(ProcessInfo.processInfo.physicalMemory) * 0.8
        if estimatedBytes > budget {
            throw fail(String(format: "this model and batch need about %.1f GB for a training step, more than 80%% of this machine's memory (%.1f GB); lower --batch-size, the widths, the layers or the resolution",
                              estimatedBytes / 1e9, budget / 0.8 / 1e9))
        }
        guard resolution > 0, patchSize > 0, resolution % patchSize == 0 else {
            throw fail("the resolution \(resolution) is not a multiple of the patch size \(patchSize)")
        }
        guard embedDim > 0, visionWidth > 0, textWidth > 0, visionLayers > 0, textLayers > 0 else {
            throw fail("widths and layer counts must be positive")
        }
        guard epochs > 0, batchSize > 1, learningRate > 0, warmupSteps >= 0 else {
            throw fail("epochs, batch size (at least 2) and learning rate must be positive")
        }
        guard !templates.isEmpty, templates.allSatisfy({ $0.contains("{}") }) else {
            throw fail("every caption template needs a {} for the class name")
        }
        guard cropScale > 0, cropScale <= 1, coarseFraction >= 0, coarseFraction <= 1 else {
            throw fail("the crop scale must lie in (0, 1] and the coarse fraction in [0, 1]")
        }
        if let k = attributeCount, !((mediumAttribute == nil ? 1 : 0)...(mediumAttribute == nil ? 4 : 3)).contains(k) {
            throw fail("the attribute count must lie in 1...4 (0...3 with a medium attribute)")
        }
        if let m = mediumAttribute {
            guard (0..<4).contains(m), attributeCaptions else { throw fail("the medium attribute must lie in 0...3, with attribute captions") }
            guard templates.allSatisfy({ $0.contains("{m}") }) else { throw fail("with a medium attribute every template needs {m}") }
        }
        if attributeCaptions, !templates.contains(where: { $0.contains("{a}") }) {
            throw fail("attribute captions need at least one template with {a} for the attribute words")
        }
    }

    /// Keys absent from older recipes take their defaults.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = PretrainRecipe()
        func v<T: Decodable>(_ k: CodingKeys, _ fallback: T) throws -> T { try c.decodeIfPresent(T.self, forKey: k) ?? fallback }
        embedDim = try v(.embedDim, d.embedDim); resolution = try v(.resolution, d.resolution)
        patchSize = try v(.patchSize, d.patchSize); visionWidth = try v(.visionWidth, d.visionWidth)
        visionLayers = try v(.visionLayers, d.visionLayers); textWidth = try v(.textWidth, d.textWidth)
        textLayers = try v(.textLayers, d.textLayers); templates = try v(.templates, d.templates)
        augment = try v(.augment, d.augment); cropScale = try v(.cropScale, d.cropScale)
        attributeCaptions = try v(.attributeCaptions, d.attributeCaptions); coarseFraction = try v(.coarseFraction, d.coarseFraction)
        classRelativeAttributes = try v(.classRelativeAttributes, d.classRelativeAttributes)
        attributeCount = try c.decodeIfPresent(Int.self, forKey: .attributeCount)
        mediumAttribute = try c.decodeIfPresent(Int.self, forKey: .mediumAttribute)
        limit = try c.decodeIfPresent(Int.self, forKey: .limit)
        epochs = try v(.epochs, d.epochs); batchSize = try v(.batchSize, d.batchSize)
        learningRate = try v(.learningRate, d.learningRate); warmupSteps = try v(.warmupSteps, d.warmupSteps)
        adamW = try v(.adamW, d.adamW); initialLogitScale = try v(.initialLogitScale, d.initialLogitScale)
        seed = try v(.seed, d.seed)
    }

    enum CodingKeys: String, CodingKey {
        case embedDim = "embed_dim", resolution, patchSize = "patch_size", visionWidth = "vision_width"
        case visionLayers = "vision_layers", textWidth = "text_width", textLayers = "text_layers", templates, augment, limit
        case cropScale = "crop_scale", attributeCaptions = "attribute_captions", coarseFraction = "coarse_fraction"
        case classRelativeAttributes = "class_relative_attributes", attributeCount = "attribute_count"
        case mediumAttribute = "medium_attribute"
        case epochs, batchSize = "batch_size", learningRate = "lr", warmupSteps = "warmup_steps", adamW = "adamw"
        case initialLogitScale = "initial_logit_scale", seed
    }
}

/// Caption templates for class names.
public enum CaptionTemplates {
    /// Varied captions of a clothing picture. None of them says "photo": the hand template of
    /// Fashion-MNIST, "a photo of a {}.", then holds a word the text tower never learned, so
    /// zero-shot with it is good but not the best this model allows, and prompt learning has
    /// something to find (the point of a demonstration model).
    public static let standard = [
        "a picture of a {}.", "a {} item of clothing.", "a black and white picture of a {}.",
        "a low resolution image of the {}.", "a {}.", "an image of a {}.", "a grayscale picture of the {}.",
        "a product shot of a {}.", "this is a {}.", "a small {}.",
    ]

    /// Templates of attribute captions: `{a}` is replaced by 1-3 attribute words, `{}` by the class
    /// (or coarse category) name. None says "photo".
    public static let attributes = [
        "a {a} {}.", "a picture of a {a} {}.", "an image of a {a} {}.", "a {a} {} item of clothing.",
        "a black and white picture of a {a} {}.", "this is a {a} {}.", "a low resolution image of the {a} {}.",
        "a product shot of a {a} {}.",
    ]

    /// Templates of attribute captions with a medium word `{m}` ("photo" or "sketch").
    public static let medium = [
        "a {m} of a {a} {}.", "a {m} of the {a} {}.", "a black and white {m} of a {a} {}.",
        "a low resolution {m} of a {a} {}.", "a {a} {} in a {m}.", "a grayscale {m} of a {a} {}.",
    ]

    /// The medium words (low, high).
    public static let mediumWords = (low: "sketch", high: "photo")

    /// The attributes' words (low, high), in `ImageAttributes` order.
    public static let attributeWords: [(low: String, high: String)] = [
        ("dark", "light"), ("small", "large"), ("top-heavy", "bottom-heavy"), ("narrow", "wide"),
    ]

    /// Fashion-MNIST's coarse categories by class index.
    public static let coarse = ["top", "bottom", "top", "dress", "top", "shoe", "top", "shoe", "bag", "shoe"]
}

public struct PretrainError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
