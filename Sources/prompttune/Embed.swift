import ArgumentParser
import CLIP
import Experiments
import Foundation
import Imaging
import PromptLearning
import TensorCore

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unit-norm CLIP embeddings of texts and images, as one JSON object.",
        discussion: #"Prints {"text": [[...]], "image": [[...]], "logit_scale": S} with embeddings in input order."#)

    @OptionGroup var model: ModelOptions
    @Option(name: .customLong("text"), help: "A text to embed (repeatable).") var texts: [String] = []
    @Option(name: .customLong("image"), help: "A PNG or JPEG image to embed (repeatable).") var images: [String] = []
    @Option(help: "A trained prompt (prompt.ptprompt, prompt.safetensors, or CoOp's, KgCoOp's or DAPT's prompt_learner/model.pth.tar-N): each --text is then a class name embedded through the prompt's context, and each --image goes through its image prompts (DAPT's and VPT's visual prompt, MaPLe's projected prompts), if it has any.")
    var prompt: String?
    @Option(parsing: .unconditional, help: "Threads for OpenBLAS (1...\(OptionLimits.maxThreads)).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Inputs of the towers' layer products (and the image tower's attention products): fp32 (exact) or bf16 (fp32 accumulation; needs AVX-512 BF16 or AMX).")
    var precision: Precision = .fp32
    @OptionGroup var imageOptions: ImageOptions

    func validate() throws {
        if texts.isEmpty && images.isEmpty { throw ValidationError("give at least one --text or --image") }
        try OptionLimits.threads(threads)
    }

    func run() throws {
        Compute.threads = threads
        let backend = try computeBackend(precision)
        try imageOptions.apply()
        // Decode images first so a bad file fails before the model is loaded.
        let decoded = try images.map { try decodeImage(path: $0) }
        let clip = try CLIPModel.load(path: model.model).on(backend)
        let result: (text: [[Double]], image: [[Double]])
        if let prompt {
            result = try embed(clip, prompt: try TrainedPrompt.read(path: prompt), modelPath: model.model, classNames: texts, images: decoded)
        } else {
            result = try embed(clip, texts: texts, images: decoded)
        }
        let numbers = result.text.joined().allSatisfy(\.isFinite) && result.image.joined().allSatisfy(\.isFinite) && clip.logitScale.isFinite
        if !numbers {
            // Only on failure: read the weights again to name the tensors at fault.
            if let e = nonFiniteWeightsError(path: model.model, tensors: try loadCLIPWeights(path: model.model).tensors) { throw e }
            throw PresentedError(message: "\(model.model): the embeddings are not finite although every weight is; an input may be degenerate")
        }
        print(try jsonText(["text": result.text, "image": result.image, "logit_scale": Double(clip.logitScale)]))
    }
}

/// Unit-norm embeddings through a trained prompt: the prompt's text features of `classNames`
/// (the plain texts for a prompt without a text context) and the images through its visual prompt.
func embed(_ clip: CLIPModel, prompt: TrainedPrompt, modelPath: String, classNames: [String], images: [RGBImage]) throws -> (text: [[Double]], image: [[Double]]) {
    let digest = try modelDigest(modelPath)
    var text: [[Double]] = [], image: [[Double]] = []
    if !classNames.isEmpty {
        if prompt.context != nil {
            text = rows(try prompt.textFeatures(model: clip, modelPath: modelPath, modelDigest: digest, classNames: classNames,
                                                tokenizer: try CLIPTokenizer(), textOnly: true))
        } else {
            text = try embed(clip, texts: classNames, images: []).text
        }
    }
    if !images.isEmpty, prompt.method.needsImages, prompt.visualPrompt == nil {
        // Image prompts made from the learned tensors (MaPLe): through the prompt's architecture,
        // whose image encoding does not depend on the class names (any name list makes it).
        let names = classNames.isEmpty ? (prompt.classNames ?? ["object"]) : classNames
        let a = try prompt.architecture(model: clip, modelPath: modelPath, modelDigest: digest, classNames: names, tokenizer: try CLIPTokenizer())
        let r = clip.config.imageResolution
        let pixels = images.flatMap { clipPreprocess($0, resolution: r).data }
        return (text, rows(a.encodeImages(prompt.parameters, pixels: Tensor(shape: [images.count, 3, r, r], data: pixels), workspace: nil)))
    }
    if !images.isEmpty {
        guard let visual = try prompt.visualTokens(model: clip, modelPath: modelPath, modelDigest: digest) else {
            return (text, try embed(clip, texts: [], images: images).image)
        }
        let r = clip.config.imageResolution
        let pixels = images.flatMap { clipPreprocess($0, resolution: r).data }
        image = rows(clip.image.forward(pixels: Tensor(shape: [images.count, 3, r, r], data: pixels), extraTokens: visual).0)
    }
    return (text, image)
}

private func rows(_ t: Tensor) -> [[Double]] {
    let n = L2Normalize.forward(t).0
    return (0..<n.rows).map { r in (0..<n.lastDim).map { Double(n[r * n.lastDim + $0]) } }
}

/// Unit-norm embeddings, one row per input, as Double for JSON.
func embed(_ clip: CLIPModel, texts: [String], images: [RGBImage]) throws -> (text: [[Double]], image: [[Double]]) {
    func rows(_ t: Tensor) -> [[Double]] {
        let n = L2Normalize.forward(t).0
        return (0..<n.rows).map { r in (0..<n.lastDim).map { Double(n[r * n.lastDim + $0]) } }
    }
    var text: [[Double]] = [], image: [[Double]] = []
    if !texts.isEmpty {
        let tokenizer = try CLIPTokenizer()
        let ids = tokenizer.tokenize(texts, contextLength: clip.config.contextLength).map { $0.map(Int.init) }
        text = rows(clip.encodeText(ids))
    }
    if !images.isEmpty {
        let r = clip.config.imageResolution
        let pixels = images.flatMap { clipPreprocess($0, resolution: r).data }
        image = rows(clip.encodeImage(Tensor(shape: [images.count, 3, r, r], data: pixels)))
    }
    return (text, image)
}
