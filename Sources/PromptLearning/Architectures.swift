import CLIP
import Foundation
import TensorCore

/// CoOp's architecture: a learned text context (M x D shared, or K x M x D class-specific) around
/// each class name through the frozen text tower; images through the frozen image tower (or their
/// cached features). CoOp, CoOp-CSC, KgCoOp, dapt-text and their +npt variants.
public final class ContextPromptArchitecture: PromptArchitecture {
    public let method: Method
    public var classNames: [String] { text.learner.classNames }
    public let initialParameters: ParameterSet
    public var promptsImageTower: Bool { false }
    let text: TextContextPiece
    let image: ImagePiece

    init(method: Method, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], given: ParameterSet?,
         rng: inout SeededGenerator) throws {
        self.method = method
        text = try TextContextPiece(method: method, model: model, tokenizer: tokenizer, classNames: classNames,
                                    given: given?[ParameterName.textContext], rng: &rng)
        image = ImagePiece(tower: model.image)
        initialParameters = ParameterSet([(ParameterName.textContext, text.learner.context)])
    }

    public func forward(_ p: ParameterSet, images: ImageBatch, workspace: Workspace) -> PromptForward {
        let (t, textBackward) = text.forward(p[ParameterName.textContext]!, workspace: workspace)
        let (f, _) = image.forward(images, tokens: nil, workspace: workspace)
        return PromptForward(text: t, images: f, imagesTrainable: false) { dText, _ in
            ParameterSet([(ParameterName.textContext, textBackward(dText))])
        }
    }

    public func classifier(_ p: ParameterSet) -> PromptClassifier { .shared(text.features(p[ParameterName.textContext]!)) }

    public func encodeImages(_ p: ParameterSet, pixels: Tensor, workspace: Workspace?) -> Tensor {
        image.encode(pixels, tokens: nil, workspace: workspace)
    }
}

/// VPT's architecture: N visual prompt tokens inserted after the image tower's `ln_pre`; the text
/// side is fixed at the zero-shot features of the hand template.
public final class VisualPromptArchitecture: PromptArchitecture {
    public let method: Method
    public let classNames: [String]
    public let initialParameters: ParameterSet
    public var promptsImageTower: Bool { true }
    /// K x E L2-normalised zero-shot text features.
    let zeroShot: Tensor
    let image: ImagePiece

    init(method: Method, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], template: String, given: ParameterSet?,
         rng: inout SeededGenerator) throws {
        guard let v = method.visualPrompt else { throw PromptError(.notSupported, "method \(method.name) has no visual prompt") }
        self.method = method
        self.classNames = classNames
        // Earlier versions built (and discarded) a text prompt learner before drawing the tokens, which
        // drew a context from the generator; kept, so a seed gives the tokens it always gave.
        _ = try PromptLearner(config: method.prompt, classNames: classNames, text: model.text, tokenizer: tokenizer, rng: &rng)
        image = ImagePiece(tower: model.image)
        initialParameters = ParameterSet([(ParameterName.visualPrompt,
                                           try ImagePiece.tokens(v, tower: model.image, given: given?[ParameterName.visualPrompt], rng: &rng))])
        zeroShot = L2Normalize.forward(zeroShotTextFeatures(model: model, tokenizer: tokenizer, template: template, classNames: classNames)).0
    }

    public func forward(_ p: ParameterSet, images: ImageBatch, workspace: Workspace) -> PromptForward {
        let (f, imageBackward) = image.forward(images, tokens: p[ParameterName.visualPrompt]!, workspace: workspace)
        return PromptForward(text: zeroShot, images: f, imagesTrainable: true) { _, dImages in
            ParameterSet([(ParameterName.visualPrompt, imageBackward!(dImages!))])
        }
    }

    public func classifier(_ p: ParameterSet) -> PromptClassifier { .shared(zeroShot) }

    public func encodeImages(_ p: ParameterSet, pixels: Tensor, workspace: Workspace?) -> Tensor {
        image.encode(pixels, tokens: p[ParameterName.visualPrompt]!, workspace: workspace)
    }
}

/// DAPT's architecture: CoOp's text context and VPT's visual prompt tokens, trained together.
public final class ContextAndVisualPromptArchitecture: PromptArchitecture {
    public let method: Method
    public var classNames: [String] { text.learner.classNames }
    public let initialParameters: ParameterSet
    public var promptsImageTower: Bool { true }
    let text: TextContextPiece
    let image: ImagePiece

    init(method: Method, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], given: ParameterSet?,
         rng: inout SeededGenerator) throws {
        guard let v = method.visualPrompt else { throw PromptError(.notSupported, "method \(method.name) has no visual prompt") }
        self.method = method
        text = try TextContextPiece(method: method, model: model, tokenizer: tokenizer, classNames: classNames,
                                    given: given?[ParameterName.textContext], rng: &rng)
        image = ImagePiece(tower: model.image)
        initialParameters = ParameterSet([(ParameterName.textContext, text.learner.context),
                                          (ParameterName.visualPrompt,
                                           try ImagePiece.tokens(v, tower: model.image, given: given?[ParameterName.visualPrompt], rng: &rng))])
    }

    public func forward(_ p: ParameterSet, images: ImageBatch, workspace: Workspace) -> PromptForward {
        let (t, textBackward) = text.forward(p[ParameterName.textContext]!, workspace: workspace)
        let (f, imageBackward) = image.forward(images, tokens: p[ParameterName.visualPrompt]!, workspace: workspace)
        return PromptForward(text: t, images: f, imagesTrainable: true) { dText, dImages in
            ParameterSet([(ParameterName.textContext, textBackward(dText)),
                          (ParameterName.visualPrompt, imageBackward!(dImages!))])
        }
    }

    public func classifier(_ p: ParameterSet) -> PromptClassifier { .shared(text.features(p[ParameterName.textContext]!)) }

    public func encodeImages(_ p: ParameterSet, pixels: Tensor, workspace: Workspace?) -> Tensor {
        image.encode(pixels, tokens: p[ParameterName.visualPrompt]!, workspace: workspace)
    }
}
