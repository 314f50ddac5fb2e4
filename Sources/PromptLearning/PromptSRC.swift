import CLIP
import Foundation
import TensorCore

/// PromptSRC's settings beyond the text prompt (`configs/trainers/PromptSRC/*.yaml`).
public struct PromptSRCConfig: Codable, Equatable, Sendable {
    /// Text prompt depth: the context enters before block 0, free deep prompts replace it before
    /// blocks 1..<textDepth (`PROMPT_DEPTH_TEXT`, 9; 3 in cross-dataset).
    public var textDepth: Int
    /// Vision prompt depth (`PROMPT_DEPTH_VISION`, 9; 3 in cross-dataset).
    public var visionDepth: Int
    /// Vision prompt tokens per block (`N_CTX_VISION`, 4).
    public var visionTokens: Int
    /// Gaussian prompt aggregation (`GPA_MEAN`, `GPA_STD`); nil: the last epoch's prompts.
    public var aggregation: GaussianPromptAggregation?

    public init(textDepth: Int = 9, visionDepth: Int = 9, visionTokens: Int = 4,
                aggregation: GaussianPromptAggregation? = GaussianPromptAggregation(mean: 15, std: 1)) {
        self.textDepth = textDepth; self.visionDepth = visionDepth; self.visionTokens = visionTokens
        self.aggregation = aggregation
    }
}

/// PromptSRC's Gaussian prompt aggregation (GPA, `trainers/promptsrc.py`): after epoch e (1...N)
/// the trained tensors scaled by w_e are added to a running aggregate, w_e = N(e; mean, std)
/// normalised over 1...N; after the last epoch the aggregate replaces the prompts, so it is what
/// is evaluated and saved. The reference aggregates the model's whole state dict (the frozen
/// weights too, which it then loads back unchanged up to fp16 rounding of sum_e w_e x = x): the
/// trained tensors alone are aggregated here. Checkpoints hold the aggregate (`aggregate.<name>`)
/// so a resumed run continues it bit for bit.
public struct GaussianPromptAggregation: Codable, Hashable, Sendable {
    public var mean: Double
    public var std: Double

    public init(mean: Double, std: Double) { self.mean = mean; self.std = std }

    /// w_1...w_N, normalised (numpy float64 as the reference; each is cast to Float when it scales a tensor).
    public func weights(epochs: Int) -> [Double] {
        let g = (1...max(1, epochs)).map { e -> Double in
            (1 / (std * (2 * Double.pi).squareRoot())) * exp(-0.5 * pow((Double(e) - mean) / std, 2))
        }
        let sum = g.reduce(0, +)
        return g.map { $0 / sum }
    }

    /// The aggregate after epoch `epoch` (0-based) of `epochs`: `aggregate` + w_e x, each tensor
    /// scaled by w_e as a Float (the reference's fp32 tensor times a float64 scalar).
    public func accumulate(_ aggregate: ParameterSet?, _ x: ParameterSet, epoch: Int, epochs: Int) -> ParameterSet {
        let w = Float(weights(epochs: epochs)[epoch])
        var next = ParameterSet()
        for n in x.names {
            let scaled = x[n]! * w
            next[n] = aggregate?[n].map { $0 + scaled } ?? scaled
        }
        return next
    }

    /// Why these settings cannot aggregate, or nil.
    public var problem: String? {
        guard mean.isFinite, std.isFinite, std > 0 else {
            return "the Gaussian prompt aggregation needs a finite mean and a standard deviation above 0 (got mean \(mean), std \(std))"
        }
        return nil
    }
}

/// PromptSRC's prompts (muzairkhattak/PromptSRC `trainers/promptsrc.py`, `clip/model.py`
/// `ResidualAttentionBlock_IVLP`, `VisionTransformer`): independent deep prompts in both towers (IVLP).
///
/// - Text: M context vectors (4, the embeddings of "a photo of a") after SOS; in blocks
///   1..<textDepth free prompts (M x D, N(0, 0.02)) replace rows 1...M.
/// - Image: V tokens (4 x W, N(0, 0.02)) appended after the patch tokens (after the positional
///   embedding, none of their own) before `ln_pre`; in blocks 1..<visionDepth free prompts
///   (V x W, N(0, 0.02)) replace the last V rows. Nothing connects the towers' prompts.
///
/// Learned, in the reference's `named_parameters` order: `text.context` [M, D], `promptsrc.visual`
/// [V, W], `promptsrc.deep_visual.<i>` [V, W], `promptsrc.deep_text.<i>` [M, D]. The reference
/// makes deep prompts only for blocks its towers have; PromptTune makes them to the configured
/// depth whatever the model (the names then do not depend on the model) and those of missing
/// blocks act nowhere and get no gradient, so SGD leaves them as drawn.
///
/// Its loss (CE + the self-regularising terms `src_text`, `src_image`, `src_kl`) is the method's
/// term list (`Terms.swift`); the frozen teachers are term inputs the trainer computes
/// (`TermInput.templateEnsemble` once per run, `TermInput.frozenImages` per batch).
/// The text path is MaPLe's (shared prefix, each class cut after its EOT).
public final class PromptSRCArchitecture: PromptArchitecture {
    public static let visual = "promptsrc.visual"
    public static func deepText(_ i: Int) -> String { "promptsrc.deep_text.\(i)" }
    public static func deepVisual(_ i: Int) -> String { "promptsrc.deep_visual.\(i)" }

    /// The learned tensors, in the reference's `named_parameters` order.
    public static func parameterNames(_ c: PromptSRCConfig) -> [String] {
        [ParameterName.textContext, visual] + (1..<max(1, c.visionDepth)).map(deepVisual)
            + (1..<max(1, c.textDepth)).map(deepText)
    }

    public let method: Method
    public let classNames: [String]
    public let initialParameters: ParameterSet
    public var promptsImageTower: Bool { !textOnly }
    /// Its text side alone (`eval --text-only`): the classifier as trained, images through the
    /// unprompted tower. Not for training.
    public var textOnly = false
    public let config: PromptSRCConfig
    let textDeepBlocks: Range<Int>, imageDeepBlocks: Range<Int>
    /// The text prompt (MaPLe's).
    let prompt: PhrasePromptText
    var text: TextTower { prompt.text }
    let image: ImageTower
    var contextLength: Int { prompt.contextLength }
    public var tokens: [[Int]] { prompt.tokens }

    init(method: Method, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], given: ParameterSet?,
         rng: inout SeededGenerator) throws {
        let prompt = try PhrasePromptText(methodName: "PromptSRC", prompt: method.prompt, model: model, tokenizer: tokenizer,
                                          classNames: classNames)
        let c = method.promptsrc ?? PromptSRCConfig()
        guard c.textDepth >= 1, c.visionDepth >= 1 else {
            throw PromptError(.invalidSetting, "PromptSRC's prompt depths must be at least 1 (got text \(c.textDepth), vision \(c.visionDepth))")
        }
        guard c.visionTokens >= 1 else { throw PromptError(.invalidSetting, "PromptSRC needs at least 1 vision prompt token (got \(c.visionTokens))") }
        let (m, d, w, v) = (prompt.contextLength, model.text.width, model.image.width, c.visionTokens)
        self.method = method
        self.classNames = classNames
        config = c
        self.prompt = prompt
        textDeepBlocks = 1..<max(1, min(c.textDepth, model.text.transformer.blocks.count))
        imageDeepBlocks = 1..<max(1, min(c.visionDepth, model.image.transformer.blocks.count))
        image = model.image

        func take(_ name: String, _ shape: [Int], draw: (inout SeededGenerator) -> Tensor) throws -> Tensor {
            if let g = given?[name] {
                guard g.shape == shape else { throw PromptError(.shapeMismatch, "PromptSRC's '\(name)' has shape \(g.shape), expected \(shape) for this model") }
                return g
            }
            return draw(&rng)
        }
        var params = ParameterSet()
        params[ParameterName.textContext] = try take(ParameterName.textContext, [m, d]) { r in
            prompt.phraseContext ?? .randomNormal([m, d], std: 0.02, using: &r)
        }
        params[Self.visual] = try take(Self.visual, [v, w]) { .randomNormal([v, w], std: 0.02, using: &$0) }
        for i in 1..<max(1, c.visionDepth) {
            params[Self.deepVisual(i)] = try take(Self.deepVisual(i), [v, w]) { .randomNormal([v, w], std: 0.02, using: &$0) }
        }
        for i in 1..<max(1, c.textDepth) {
            params[Self.deepText(i)] = try take(Self.deepText(i), [m, d]) { .randomNormal([m, d], std: 0.02, using: &$0) }
        }
        initialParameters = ParameterSet(Self.parameterNames(c).map { ($0, params[$0]!) })
    }

    // MARK: Text

    func textForward(_ p: ParameterSet, keepCaches: Bool, workspace: Workspace?) -> (Tensor, TextTower.Trace) {
        let deep = Dictionary(uniqueKeysWithValues: textDeepBlocks.map { ($0, p[Self.deepText($0)]!) })
        return prompt.forward(context: p[ParameterName.textContext]!, deep: deep, keepCaches: keepCaches, workspace: workspace)
    }

    // MARK: Image

    func deepVisualPrompts(_ p: ParameterSet) -> [Int: Tensor] {
        Dictionary(uniqueKeysWithValues: imageDeepBlocks.map { ($0, p[Self.deepVisual($0)]!) })
    }

    public func forward(_ p: ParameterSet, images: ImageBatch, workspace: Workspace) -> PromptForward {
        precondition(!textOnly, "a text-only PromptSRC architecture evaluates; it does not train")
        guard case .pixels(let pixels) = images else {
            preconditionFailure("PromptSRC prompts the image tower: it trains from pixels, not cached features")
        }
        let m = contextLength
        var (textFeatures, textTrace) = textForward(p, keepCaches: true, workspace: workspace)
        var (raw, imageTrace) = image.forward(pixels: pixels, extraTokens: p[Self.visual]!, promptEntry: .appendedBeforeLnPre,
                                              deepPrompts: deepVisualPrompts(p), keepCaches: true, workspace: workspace,
                                              keepLinearInputs: false)
        let (unrounded, normCache) = L2Normalize.forward(raw)
        var normalised = unrounded
        image.activationRounding.apply(&normalised)
        return PromptForward(text: textFeatures, images: normalised, imagesTrainable: true) { [self] dText, dImages in
            var g = ParameterSet()
            var dTextDeep: [Int: Tensor] = [:]
            let dRows = text.backwardPacked(dText, releasing: &textTrace, deepPromptGrads: &dTextDeep, workspace: workspace)
            g[ParameterName.textContext] = text.backend.gatherRows(dRows, Array(1..<(1 + m)))
            workspace.recycle(dRows)
            var dRaw = Tensor(zeros: dImages!.shape)
            L2Normalize.backward(dImages!, cache: normCache, dx: &dRaw)
            var dImageDeep: [Int: Tensor] = [:]
            g[Self.visual] = image.backwardToExtraTokens(dRaw, releasing: &imageTrace, deepPromptGrads: &dImageDeep, workspace: workspace)
            for i in imageDeepBlocks { g[Self.deepVisual(i)] = dImageDeep[i] ?? Tensor(zeros: [config.visionTokens, image.width]) }
            for i in textDeepBlocks { g[Self.deepText(i)] = dTextDeep[i] ?? Tensor(zeros: [m, text.width]) }
            // In checkpoint order; prompts of blocks the towers do not have get none.
            return ParameterSet(Self.parameterNames(config).compactMap { n in g[n].map { (n, $0) } })
        }
    }

    /// Text features K x E (not normalised) with the deep text prompts.
    public func textFeatures(_ p: ParameterSet) -> Tensor { textForward(p, keepCaches: false, workspace: nil).0 }

    public func classifier(_ p: ParameterSet) -> PromptClassifier { .shared(textFeatures(p)) }

    public func encodeImages(_ p: ParameterSet, pixels: Tensor, workspace: Workspace?) -> Tensor {
        if textOnly { return image.forward(pixels: pixels, workspace: workspace).0 }
        return image.forward(pixels: pixels, extraTokens: p[Self.visual]!, promptEntry: .appendedBeforeLnPre,
                      deepPrompts: deepVisualPrompts(p), workspace: workspace).0
    }
}

/// The 60 ImageNet templates of CLIP's prompt-engineering notebook, PromptSRC's
/// `trainers/imagenet_templates.py` `IMAGENET_TEMPLATES`: its frozen text teacher averages the
/// (unnormalised) features of all of them.
public enum ImageNetTemplates {
    public static let all: [String] = [
        "a photo of a {}.",
        "a bad photo of a {}.",
        "a photo of many {}.",
        "a sculpture of a {}.",
        "a photo of the hard to see {}.",
        "a low resolution photo of the {}.",
        "a rendering of a {}.",
        "graffiti of a {}.",
        "a bad photo of the {}.",
        "a cropped photo of the {}.",
        "a tattoo of a {}.",
        "the embroidered {}.",
        "a photo of a hard to see {}.",
        "a bright photo of a {}.",
        "a photo of a clean {}.",
        "a photo of a dirty {}.",
        "a dark photo of the {}.",
        "a drawing of a {}.",
        "a photo of my {}.",
        "the plastic {}.",
        "a photo of the cool {}.",
        "a close-up photo of a {}.",
        "a black and white photo of the {}.",
        "a painting of the {}.",
        "a painting of a {}.",
        "a pixelated photo of the {}.",
        "a sculpture of the {}.",
        "a bright photo of the {}.",
        "a cropped photo of a {}.",
        "a plastic {}.",
        "a photo of the dirty {}.",
        "a jpeg corrupted photo of a {}.",
        "a blurry photo of the {}.",
        "a photo of the {}.",
        "a good photo of the {}.",
        "a rendering of the {}.",
        "a {} in a video game.",
        "a photo of one {}.",
        "a doodle of a {}.",
        "a close-up photo of the {}.",
        "the origami {}.",
        "the {} in a video game.",
        "a sketch of a {}.",
        "a doodle of the {}.",
        "a origami {}.",
        "a low resolution photo of a {}.",
        "the toy {}.",
        "a rendition of the {}.",
        "a photo of the clean {}.",
        "a photo of a large {}.",
        "a rendition of a {}.",
        "a photo of a nice {}.",
        "a photo of a weird {}.",
        "a blurry photo of a {}.",
        "a cartoon {}.",
        "art of a {}.",
        "a sketch of the {}.",
        "a embroidered {}.",
        "a pixelated photo of a {}.",
        "itap of the {}."
    ]
}

/// K x D: the mean over `templates` of each class's unnormalised text features through the frozen
/// tower, L2-normalised (PromptSRC's `fixed_embeddings`, normalised in its forward).
public func templateEnsembleTextFeatures(model: CLIPModel, tokenizer: CLIPTokenizer, templates: [String], classNames: [String]) -> Tensor {
    var sum = zeroShotTextFeatures(model: model, tokenizer: tokenizer, template: templates[0], classNames: classNames)
    for t in templates.dropFirst() { sum.accumulate(zeroShotTextFeatures(model: model, tokenizer: tokenizer, template: t, classNames: classNames)) }
    return L2Normalize.forward(sum * (1 / Float(templates.count))).0
}
