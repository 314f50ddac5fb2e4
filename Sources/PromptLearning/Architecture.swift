import CLIP
import Foundation
import TensorCore

/// A method's prompt architecture: what it learns and how those tensors turn images and class
/// names into features. Training (`PromptTuner`), evaluation, `analyze`, the grid runner and the
/// report all go through this one type, so none of them asks which tensors a method has.
///
/// An architecture is made for one list of class names (`ArchitectureKind.make`); its parameters
/// are drawn at construction from the run's generator (or given, for resumes, replays and
/// evaluation) and passed back into `forward`, `classifier` and `encodeImages`, so the optimiser
/// and checkpoints own them, not the architecture.
public protocol PromptArchitecture: AnyObject {
    var method: Method { get }
    var classNames: [String] { get }
    /// The learned tensors as training starts, by name (drawn at construction, or the given ones).
    var initialParameters: ParameterSet { get }
    /// Whether image features come through a prompted image tower, so that training and
    /// evaluation need the images themselves, not cached features.
    var promptsImageTower: Bool { get }
    /// One training forward on a batch: text and image features and the backward to every parameter.
    func forward(_ parameters: ParameterSet, images: ImageBatch, workspace: Workspace) -> PromptForward
    /// The evaluation classifier of these class names.
    func classifier(_ parameters: ParameterSet) -> PromptClassifier
    /// Image features (B x E, not normalised) of pixels B x 3 x R x R through the tower as this
    /// architecture prompts it (the frozen tower where it adds nothing there).
    func encodeImages(_ parameters: ParameterSet, pixels: Tensor, workspace: Workspace?) -> Tensor
}

/// The images of a step: cached final features (rows L2-normalised), or pixels for the tower.
public enum ImageBatch {
    case features(Tensor)
    case pixels(Tensor)
}

/// What classifies images: text features shared by every image (K x E), or text features made for
/// each image from its own feature (CoCoOp's prompts are conditioned on the image).
public enum PromptClassifier {
    /// K x E, not normalised.
    case shared(Tensor)
    /// B x E L2-normalised image features -> B x K x E text features, not normalised.
    case perImage((Tensor) -> Tensor)
}

/// The result of `PromptArchitecture.forward`.
public struct PromptForward {
    /// K x E text features shared by the batch, or B x K x E (one set per image); not normalised.
    public var text: Tensor
    /// B x E image features, L2-normalised.
    public var images: Tensor
    /// Whether `images` depend on the parameters (the objective then returns their gradient).
    public var imagesTrainable: Bool
    /// The gradient of every parameter from the gradients of `text` (its shape) and, when
    /// `imagesTrainable`, of `images`. Call it once: it releases the forward's caches.
    public var backward: (_ dText: Tensor, _ dImages: Tensor?) -> ParameterSet

    public init(text: Tensor, images: Tensor, imagesTrainable: Bool,
                backward: @escaping (_ dText: Tensor, _ dImages: Tensor?) -> ParameterSet) {
        self.text = text; self.images = images; self.imagesTrainable = imagesTrainable; self.backward = backward
    }
}

/// The architectures PromptTune has, by the name a method's header records. A new architecture is
/// one type conforming to `PromptArchitecture`, one case here and one row in `make`.
public enum ArchitectureKind: String, Codable, Sendable, CaseIterable {
    /// CoOp's learned text context (KgCoOp, NPT, DAPT's text half): `ContextPromptArchitecture`.
    case context
    /// Shallow visual prompt tokens with the hand template's text (VPT): `VisualPromptArchitecture`.
    case visual
    /// Both (DAPT): `ContextAndVisualPromptArchitecture`.
    case contextAndVisual = "context+visual"
    /// CoOp's context shifted per image by a meta-net of its feature (CoCoOp): `CoCoOpArchitecture`.
    case cocoop
    /// Deep text prompts and their projections into the image tower (MaPLe): `MaPLeArchitecture`.
    case maple
    /// Independent deep prompts in both towers (PromptSRC's IVLP): `PromptSRCArchitecture`.
    case promptsrc

    /// The architecture of `method` for `classNames`, its parameters the `given` ones (each checked
    /// against the model; a name the method does not learn is refused) or drawn from `rng`.
    /// `template` is the hand template of the zero-shot text features an architecture may use.
    public func make(method: Method, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], template: String,
                     given: ParameterSet? = nil, rng: inout SeededGenerator) throws -> any PromptArchitecture {
        if promptsImageTower && !model.image.isViT { throw PromptError.needsViT(method: method.name, model: model.config) }
        if let given {
            let learned = Set(parameterNames(method))
            if let extra = given.names.first(where: { !learned.contains($0) }) {
                throw PromptError(.shapeMismatch, "parameter '\(extra)' is not learned by method \(method.name) (it learns \(parameterNames(method).joined(separator: ", ")))")
            }
        }
        switch self {
        case .context:
            return try ContextPromptArchitecture(method: method, model: model, tokenizer: tokenizer, classNames: classNames,
                                                 given: given, rng: &rng)
        case .visual:
            return try VisualPromptArchitecture(method: method, model: model, tokenizer: tokenizer, classNames: classNames,
                                                template: template, given: given, rng: &rng)
        case .contextAndVisual:
            return try ContextAndVisualPromptArchitecture(method: method, model: model, tokenizer: tokenizer, classNames: classNames,
                                                          given: given, rng: &rng)
        case .cocoop:
            return try CoCoOpArchitecture(method: method, model: model, tokenizer: tokenizer, classNames: classNames, given: given, rng: &rng)
        case .maple:
            return try MaPLeArchitecture(method: method, model: model, tokenizer: tokenizer, classNames: classNames, given: given, rng: &rng)
        case .promptsrc:
            return try PromptSRCArchitecture(method: method, model: model, tokenizer: tokenizer, classNames: classNames, given: given,
                                             rng: &rng)
        }
    }

    /// Whether the architecture puts prompts into the image tower (training then needs the images).
    public var promptsImageTower: Bool { self == .visual || self == .contextAndVisual || self == .maple || self == .promptsrc }

    /// Whether the classifier is made per image (its text features depend on the image).
    public var classifiesPerImage: Bool { self == .cocoop }

    /// The names of the tensors `method` learns under this architecture, in checkpoint order.
    public func parameterNames(_ method: Method) -> [String] {
        switch self {
        case .context: return [ParameterName.textContext]
        case .visual: return [ParameterName.visualPrompt]
        case .contextAndVisual: return [ParameterName.textContext, ParameterName.visualPrompt]
        case .cocoop: return CoCoOpArchitecture.parameterNames
        case .maple: return MaPLeArchitecture.parameterNames(depth: method.maple?.promptDepth ?? MaPLeConfig().promptDepth)
        case .promptsrc: return PromptSRCArchitecture.parameterNames(method.promptsrc ?? PromptSRCConfig())
        }
    }

    /// The shape each parameter must have for `method` on a model whose text width is
    /// `textWidth` and image width `imageWidth`, with `classes` classes (class-specific contexts).
    public func expectedShapes(_ method: Method, classes: Int, textWidth: Int?, imageWidth: Int?) -> [String: [Int?]] {
        var shapes: [String: [Int?]] = [:]
        let m = method.prompt.contextLength
        for name in parameterNames(method) {
            switch name {
            case ParameterName.textContext:
                shapes[name] = method.prompt.classSpecific ? [classes, m, textWidth] : [m, textWidth]
            case ParameterName.visualPrompt:
                shapes[name] = [method.visualPrompt?.tokens, imageWidth]
            case CoCoOpArchitecture.meta1Weight, CoCoOpArchitecture.meta2Weight:
                shapes[name] = [nil, nil]
            case CoCoOpArchitecture.meta1Bias, CoCoOpArchitecture.meta2Bias:
                shapes[name] = [nil]
            case PromptSRCArchitecture.visual:
                shapes[name] = [(method.promptsrc ?? PromptSRCConfig()).visionTokens, imageWidth]
            default:
                if self == .promptsrc {
                    // PromptSRC: deep text prompts M x D, deep visual prompts V x W.
                    if name.hasPrefix("promptsrc.deep_text.") {
                        shapes[name] = [m, textWidth]
                    } else if name.hasPrefix("promptsrc.deep_visual.") {
                        shapes[name] = [(method.promptsrc ?? PromptSRCConfig()).visionTokens, imageWidth]
                    }
                    break
                }
                guard self == .maple else { break }
                // MaPLe: deep text prompts M x D; the projections D -> W (out x in) and their biases.
                if name.hasPrefix("maple.deep_text.") {
                    shapes[name] = [m, textWidth]
                } else if name.hasSuffix(".weight") {
                    shapes[name] = [imageWidth, textWidth]
                } else if name.hasSuffix(".bias") {
                    shapes[name] = [imageWidth]
                }
            }
        }
        return shapes
    }
}

extension Method {
    /// Builds this method's architecture (`ArchitectureKind.make`).
    public func makeArchitecture(model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], template: String,
                                 given: ParameterSet? = nil, rng: inout SeededGenerator) throws -> any PromptArchitecture {
        try architecture.make(method: self, model: model, tokenizer: tokenizer, classNames: classNames, template: template,
                              given: given, rng: &rng)
    }

    /// The architecture for evaluating `parameters` (no draws: every parameter is given).
    public func makeArchitecture(model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], template: String,
                                 parameters: ParameterSet) throws -> any PromptArchitecture {
        let missing = architecture.parameterNames(self).filter { parameters[$0] == nil }
        guard missing.isEmpty else {
            throw PromptError(.shapeMismatch, "method \(name) learns \(missing.joined(separator: ", ")), which the prompt does not hold")
        }
        var rng = SeededGenerator(seed: 0)
        return try makeArchitecture(model: model, tokenizer: tokenizer, classNames: classNames, template: template,
                                    given: parameters, rng: &rng)
    }
}

// MARK: The pieces the built-in architectures are made of

/// The learned text context through the text tower (CoOp's prompt learner and encoder).
struct TextContextPiece {
    let learner: PromptLearner
    let encoder: PromptEncoder

    init(method: Method, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], given: Tensor?,
         rng: inout SeededGenerator) throws {
        if method.prompt.classSpecific, let given, given.rank == 3, given.shape[0] != classNames.count {
            throw PromptError(.classMismatch, "this prompt has class-specific contexts for \(given.shape[0]) classes; it cannot be evaluated on \(classNames.count) class names (use a shared-context method for base-to-novel)")
        }
        learner = try PromptLearner(config: method.prompt, classNames: classNames, text: model.text, tokenizer: tokenizer,
                                    context: given, rng: &rng)
        encoder = PromptEncoder(text: model.text)
    }

    /// Text features K x E and the backward to the context (releasing the caches into `workspace`).
    func forward(_ context: Tensor, workspace: Workspace) -> (Tensor, (Tensor) -> Tensor) {
        var (features, trace) = encoder.forward(learner, context: context, workspace: workspace)
        return (features, { [encoder, learner] dText in
            encoder.backward(dText, releasing: &trace, learner: learner, workspace: workspace)
        })
    }

    func features(_ context: Tensor) -> Tensor {
        encoder.forward(learner, context: context, keepCaches: false).0
    }
}

/// The image side: cached features as they are, or pixels through the tower with optional shallow
/// visual prompt tokens after `ln_pre` (VPT, DAPT), normalised.
struct ImagePiece {
    let tower: ImageTower

    /// B x E normalised features and, with `tokens`, the backward from their gradient to the tokens.
    func forward(_ images: ImageBatch, tokens: Tensor?, workspace: Workspace) -> (Tensor, ((Tensor) -> Tensor)?) {
        switch images {
        case .features(let f):
            precondition(tokens == nil, "visual prompt tokens need pixels, not cached features")
            return (f, nil)
        case .pixels(let pixels):
            let (raw, trace) = tower.forward(pixels: pixels, extraTokens: tokens, keepCaches: tokens != nil, workspace: workspace,
                                             keepLinearInputs: false)
            let (unrounded, cache) = L2Normalize.forward(raw)
            var normalised = unrounded
            tower.activationRounding.apply(&normalised)  // an fp16 tower's features are normalised in fp16
            guard tokens != nil else { return (normalised, nil) }
            var tr = trace
            return (normalised, { [tower] dImages in
                var dRaw = Tensor(zeros: dImages.shape)
                L2Normalize.backward(dImages, cache: cache, dx: &dRaw)
                return tower.backwardToExtraTokens(dRaw, releasing: &tr, workspace: workspace)
            })
        }
    }

    func encode(_ pixels: Tensor, tokens: Tensor?, workspace: Workspace?) -> Tensor {
        tower.forward(pixels: pixels, extraTokens: tokens, workspace: workspace).0
    }

    /// The visual prompt tokens given (checked) or drawn (VPT's initialisation).
    static func tokens(_ config: VisualPromptConfig, tower: ImageTower, given: Tensor?, rng: inout SeededGenerator) throws -> Tensor {
        if let given {
            guard given.shape == [config.tokens, tower.width] else {
                throw PromptError(.shapeMismatch, "the visual prompt has shape \(given.shape), expected [\(config.tokens), \(tower.width)] (\(config.tokens) tokens of the image tower's width \(tower.width))")
            }
            return given
        }
        return config.initialTokens(tower: tower, rng: &rng)
    }
}
