import CLIP
import Foundation
import TensorCore

/// MaPLe's settings beyond the text prompt: how many blocks of each tower its prompts reach.
public struct MaPLeConfig: Codable, Equatable, Sendable {
    /// J: the shallow prompts enter before block 0, deep prompts replace them before blocks 1..<J
    /// (9 in MaPLe's few-shot and base-to-novel configs, 3 in cross-dataset / domain generalisation).
    /// As in the reference, deep prompts for blocks a tower does not have are made but never used.
    public var promptDepth: Int

    public init(promptDepth: Int = 9) { self.promptDepth = promptDepth }
}

/// MaPLe (muzairkhattak/multimodal-prompt-learning `trainers/maple.py`, `clip/model.py`): deep
/// multimodal prompts whose image half is a function of the text half.
///
/// - Text: M learned context vectors (2, from the embeddings of the first M words of "a photo of a")
///   after SOS; the rest of the init phrase ("of a") stays fixed before the class name, as the
///   reference's prompt "a photo of a {class}." with rows 1...M replaced.
/// - Image: `proj` (Linear D -> W) of the context, appended after the patch tokens before `ln_pre`
///   (no positional embedding).
/// - Deep prompts: in blocks i = 1..<J, free text prompts (M x D, N(0, 0.02)) replace rows 1...M of
///   the text tower, and their projections (one Linear D -> W per block, all copies of one
///   default-initialised Linear, as the reference's `_get_clones`) replace the last M image rows.
///
/// Learned (PyTorch's out x in layout): `text.context` [M, D], `maple.proj.weight` [W, D],
/// `maple.proj.bias` [W], and for i in 1..<J `maple.deep_text.<i>` [M, D],
/// `maple.deep_proj.<i>.weight` [W, D], `maple.deep_proj.<i>.bias` [W]. Cross-entropy only.
/// A depth past a tower's blocks behaves as the reference's: the prompts of the blocks missing
/// are parameters that nothing reads, so they get no gradient (PyTorch's SGD skips a parameter
/// without one: no weight decay, no momentum) and keep their initial values.
///
/// Exactly the reference's computation, with less work: SOS, the context and the fixed words after
/// it are the same rows for every class, so the text tower computes them once as a shared prefix
/// (the deep text prompts replace rows of that prefix, the same for every class), and each class's
/// rows stop at its EOT. The shallow image prompt is shared by the batch, so `ln_pre` normalises it once.
public final class MaPLeArchitecture: PromptArchitecture {
    public static let projWeight = "maple.proj.weight", projBias = "maple.proj.bias"
    public static func deepText(_ i: Int) -> String { "maple.deep_text.\(i)" }
    public static func deepProjWeight(_ i: Int) -> String { "maple.deep_proj.\(i).weight" }
    public static func deepProjBias(_ i: Int) -> String { "maple.deep_proj.\(i).bias" }

    /// The learned tensors of prompt depth `depth`, in the reference's `named_parameters` order.
    public static func parameterNames(depth: Int) -> [String] {
        let deep = Array(1..<max(1, depth))
        return [ParameterName.textContext, projWeight, projBias] + deep.map(deepText)
            + deep.flatMap { [deepProjWeight($0), deepProjBias($0)] }
    }

    public let method: Method
    public let classNames: [String]
    public let initialParameters: ParameterSet
    public var promptsImageTower: Bool { !textOnly }
    /// Its text side alone (`eval --text-only`): the classifier as trained, images through the
    /// unprompted tower. Not for training.
    public var textOnly = false
    public let depth: Int
    /// The blocks deep prompts replace rows before in each tower: 1..<min(J, its blocks).
    let textDeepBlocks: Range<Int>, imageDeepBlocks: Range<Int>
    /// The text prompt (shared with PromptSRC).
    let prompt: PhrasePromptText
    var text: TextTower { prompt.text }
    let image: ImageTower
    /// M context vectors.
    var contextLength: Int { prompt.contextLength }
    /// Token ids of every class's whole prompt, cut after its EOT (the reference's tokenized prompts).
    public var tokens: [[Int]] { prompt.tokens }

    init(method: Method, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], given: ParameterSet?,
         rng: inout SeededGenerator) throws {
        let prompt = try PhrasePromptText(methodName: "MaPLe", prompt: method.prompt, model: model, tokenizer: tokenizer,
                                          classNames: classNames)
        let depth = method.maple?.promptDepth ?? MaPLeConfig().promptDepth
        guard depth >= 1 else { throw PromptError(.invalidSetting, "MaPLe's prompt depth must be at least 1 (got \(depth))") }
        let (m, d, w) = (prompt.contextLength, model.text.width, model.image.width)
        self.method = method
        self.classNames = classNames
        self.depth = depth
        self.prompt = prompt
        textDeepBlocks = 1..<max(1, min(depth, model.text.transformer.blocks.count))
        imageDeepBlocks = 1..<max(1, min(depth, model.image.transformer.blocks.count))
        image = model.image

        func take(_ name: String, _ shape: [Int], draw: (inout SeededGenerator) -> Tensor) throws -> Tensor {
            if let g = given?[name] {
                guard g.shape == shape else { throw PromptError(.shapeMismatch, "MaPLe's '\(name)' has shape \(g.shape), expected \(shape) for this model") }
                return g
            }
            return draw(&rng)
        }
        // PyTorch's default Linear initialisation: weight and bias uniform in +-1/sqrt(fan_in).
        let bound = Float(1 / Double(d).squareRoot())
        var params = ParameterSet()
        params[ParameterName.textContext] = try take(ParameterName.textContext, [m, d]) { r in
            prompt.phraseContext ?? .randomNormal([m, d], std: 0.02, using: &r)
        }
        params[Self.projWeight] = try take(Self.projWeight, [w, d]) { .randomUniform([w, d], -bound, bound, using: &$0) }
        params[Self.projBias] = try take(Self.projBias, [w]) { .randomUniform([w], -bound, bound, using: &$0) }
        for i in 1..<depth {
            params[Self.deepText(i)] = try take(Self.deepText(i), [m, d]) { .randomNormal([m, d], std: 0.02, using: &$0) }
        }
        // One Linear drawn once and copied into every block (the reference's `_get_clones`).
        if depth > 1 {
            let weight = try take(Self.deepProjWeight(1), [w, d]) { .randomUniform([w, d], -bound, bound, using: &$0) }
            let bias = try take(Self.deepProjBias(1), [w]) { .randomUniform([w], -bound, bound, using: &$0) }
            for i in 1..<depth {
                params[Self.deepProjWeight(i)] = try take(Self.deepProjWeight(i), [w, d]) { _ in weight }
                params[Self.deepProjBias(i)] = try take(Self.deepProjBias(i), [w]) { _ in bias }
            }
        }
        initialParameters = ParameterSet(Self.parameterNames(depth: depth).map { ($0, params[$0]!) })
    }

    // MARK: Text

    /// The deep text prompts by block, M x D each.
    func deepTextPrompts(_ p: ParameterSet) -> [Int: Tensor] {
        Dictionary(uniqueKeysWithValues: textDeepBlocks.map { ($0, p[Self.deepText($0)]!) })
    }

    /// Text features K x E (not normalised) and the trace of the tower.
    func textForward(_ p: ParameterSet, keepCaches: Bool, workspace: Workspace?) -> (Tensor, TextTower.Trace) {
        prompt.forward(context: p[ParameterName.textContext]!, deep: deepTextPrompts(p), keepCaches: keepCaches, workspace: workspace)
    }

    // MARK: Image

    /// x W^T + b: [M, D] -> [M, W] (PyTorch's Linear).
    static func linear(_ x: Tensor, _ weight: Tensor, _ bias: Tensor) -> Tensor {
        var y = matmul(x, weight, transB: true)
        y.addRowVector(bias)
        return y
    }

    /// The shallow image prompt (`proj` of the context) and the deep image prompts by block.
    func imagePrompts(_ p: ParameterSet) -> (shallow: Tensor, deep: [Int: Tensor]) {
        let shallow = Self.linear(p[ParameterName.textContext]!, p[Self.projWeight]!, p[Self.projBias]!)
        var deep: [Int: Tensor] = [:]
        for i in imageDeepBlocks {
            deep[i] = Self.linear(p[Self.deepText(i)]!, p[Self.deepProjWeight(i)]!, p[Self.deepProjBias(i)]!)
        }
        return (shallow, deep)
    }

    public func forward(_ p: ParameterSet, images: ImageBatch, workspace: Workspace) -> PromptForward {
        precondition(!textOnly, "a text-only MaPLe architecture evaluates; it does not train")
        guard case .pixels(let pixels) = images else {
            preconditionFailure("MaPLe prompts the image tower: it trains from pixels, not cached features")
        }
        let m = contextLength
        var (textFeatures, textTrace) = textForward(p, keepCaches: true, workspace: workspace)
        let (shallow, deep) = imagePrompts(p)
        var (raw, imageTrace) = image.forward(pixels: pixels, extraTokens: shallow, promptEntry: .appendedBeforeLnPre,
                                              deepPrompts: deep, keepCaches: true, workspace: workspace, keepLinearInputs: false)
        let (unrounded, normCache) = L2Normalize.forward(raw)
        var normalised = unrounded
        image.activationRounding.apply(&normalised)
        return PromptForward(text: textFeatures, images: normalised, imagesTrainable: true) { [self] dText, dImages in
            var g = ParameterSet()
            // Text tower: the context rows of the shared prefix and every deep text prompt.
            var dTextDeep: [Int: Tensor] = [:]
            let dRows = text.backwardPacked(dText, releasing: &textTrace, deepPromptGrads: &dTextDeep, workspace: workspace)
            var dContext = text.backend.gatherRows(dRows, Array(1..<(1 + m)))
            workspace.recycle(dRows)
            // Image tower: the shallow prompt and the deep image prompts, chained through the projections.
            var dRaw = Tensor(zeros: dImages!.shape)
            L2Normalize.backward(dImages!, cache: normCache, dx: &dRaw)
            var dImageDeep: [Int: Tensor] = [:]
            let dShallow = image.backwardToExtraTokens(dRaw, releasing: &imageTrace, deepPromptGrads: &dImageDeep, workspace: workspace)
            let context = p[ParameterName.textContext]!
            dContext.accumulate(matmul(dShallow, p[Self.projWeight]!))
            g[ParameterName.textContext] = dContext
            g[Self.projWeight] = matmul(dShallow, context, transA: true)
            g[Self.projBias] = dShallow.columnSums()
            for i in 1..<max(1, depth) where textDeepBlocks.contains(i) || imageDeepBlocks.contains(i) {
                let x = p[Self.deepText(i)]!
                var dx = dTextDeep[i] ?? Tensor(zeros: x.shape)
                if imageDeepBlocks.contains(i) {
                    let dy = dImageDeep[i] ?? Tensor(zeros: [m, image.width])
                    dx.accumulate(matmul(dy, p[Self.deepProjWeight(i)]!))
                    g[Self.deepProjWeight(i)] = matmul(dy, x, transA: true)
                    g[Self.deepProjBias(i)] = dy.columnSums()
                }
                g[Self.deepText(i)] = dx
            }
            // In checkpoint order; prompts of blocks the towers do not have get none.
            return ParameterSet(Self.parameterNames(depth: depth).compactMap { n in g[n].map { (n, $0) } })
        }
    }

    /// Text features K x E (not normalised) of these class names with the deep text prompts.
    public func textFeatures(_ p: ParameterSet) -> Tensor { textForward(p, keepCaches: false, workspace: nil).0 }

    public func classifier(_ p: ParameterSet) -> PromptClassifier { .shared(textFeatures(p)) }

    public func encodeImages(_ p: ParameterSet, pixels: Tensor, workspace: Workspace?) -> Tensor {
        if textOnly { return image.forward(pixels: pixels, workspace: workspace).0 }
        let (shallow, deep) = imagePrompts(p)
        return image.forward(pixels: pixels, extraTokens: shallow, promptEntry: .appendedBeforeLnPre, deepPrompts: deep,
                             workspace: workspace).0
    }
}
