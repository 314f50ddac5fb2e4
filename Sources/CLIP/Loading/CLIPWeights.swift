import Foundation
import TensorCore
import TensorIO

/// A CLIP checkpoint's weights under OpenAI's state-dict names (`visual.conv1.weight`,
/// `transformer.resblocks.0.attn.in_proj_weight`, `text_projection`, `logit_scale`, ...), all Float32,
/// with the architecture inferred from their shapes.
public struct CLIPWeights {
    public var config: CLIPConfig
    public var format: CheckpointFormat
    /// Exactly the tensors `expectedCLIPTensorShapes(config)` lists, with those shapes
    /// (`logit_scale` is a scalar, shape []).
    public var tensors: [String: Tensor]
    /// The file or directory they were read from.
    public var path: String
    /// The activation a Hugging Face config.json names (`quick_gelu` for OpenAI's models, `gelu` for
    /// some LAION conversions); nil when the checkpoint does not say (OpenAI formats use QuickGELU).
    public var hiddenAct: String?

    public init(config: CLIPConfig, format: CheckpointFormat, tensors: [String: Tensor], path: String, hiddenAct: String? = nil) {
        self.config = config; self.format = format; self.tensors = tensors; self.path = path; self.hiddenAct = hiddenAct
    }

    /// The tensor called `name`, or an error naming it.
    public func tensor(_ name: String) throws -> Tensor {
        guard let t = tensors[name] else {
            throw FileError(.missingEntry, path: path, "tensor '\(name)' is not among the loaded CLIP weights.")
        }
        return t
    }
}

/// Reads a CLIP checkpoint (a ViT, or a ResNet: RN50, RN101, RN50x4, ...) in any of the supported formats: an OpenAI TorchScript `.pt`, a
/// `torch.save` state dict, an open_clip `.safetensors`, or a Hugging Face model directory (or its
/// `model.safetensors`). The format is detected from the content, the names are mapped to OpenAI's
/// (see `sanitize`), the architecture is inferred from the shapes as openai's `build_model` does
/// (heads from config.json when there is one, else width / 64), and every expected tensor is checked
/// for presence and shape before anything is converted. Extra tensors are ignored.
///
/// Throws `FileError`: file-level problems (a missing or truncated file, an unknown format) and
/// CLIP-level ones (a missing tensor, a wrong shape, an unsupported architecture, bad weights).
public func loadCLIPWeights(path: String) throws -> CLIPWeights {
    var opened = try openCheckpoint(path: path)
    let sanitized = sanitize(opened.tensors)
    if opened.hfConfig == nil, sanitized.usesHuggingFaceNames, let sibling = opened.siblingConfigPath {
        opened.hfConfig = try HFConfigFile.read(sibling)
    }
    let format = checkpointFormat(opened, sanitized)
    let describe = "\(path) (\(format))"
    // Problems with the weights name the file and its format ("model.pt (OpenAI TorchScript)").
    func refuse(_ kind: FileError.Kind, _ why: String) -> FileError { FileError(kind, path: path, "\(describe): \(why)") }
    let recipes = sanitized.recipes

    // Architectures PromptTune does not implement.
    let names = Array(recipes.keys)
    if opened.tensors.keys.contains(where: { $0.contains("visual.trunk.") || $0.hasPrefix("text.transformer.") }) {
        throw FileError(.unsupported, path: path,
                        "an open_clip model with a timm image tower or a Hugging Face text tower: only OpenAI-style ViT CLIP models are supported.")
    }

    // Architecture.
    let shapes = recipes.compactMapValues(\.shape)
    var (config, provenance) = try inferArchitecture(shapes: shapes, names: names, path: path, subject: describe) { name in
        missingTensorNote(name, sanitized: sanitized)
    }
    if let hf = opened.hfConfig { try apply(hf, to: &config, weightsPath: describe) }
    for (tower, width, heads) in [("vision", config.visionWidth, config.visionHeads), ("text", config.textWidth, config.textHeads)]
    where heads <= 0 || width % heads != 0 {
        throw FileError(.invalidConfig, path: path, "the \(tower) width \(width) is not divisible by \(heads) attention heads.")
    }

    // Every expected tensor, with its shape.
    let expected = expectedCLIPTensorShapes(config)
    var missing: [String] = []
    var wrong: [String] = []
    for (name, shape) in expected {
        guard let recipe = recipes[name] else {
            missing.append("tensor '\(name)' is missing\(missingTensorNote(name, sanitized: sanitized))")
            continue
        }
        if case .incomplete(let parts) = recipe {
            missing.append("tensor '\(name)' is missing: the checkpoint lacks \(parts.map { "'\($0)'" }.joined(separator: ", "))")
            continue
        }
        guard let found = recipe.shape else {
            wrong.append("tensor '\(name)' cannot be assembled from \(recipe.origin): the parts' shapes do not fit together")
            continue
        }
        if found != shape {
            wrong.append("tensor '\(name)' has shape \(found), expected \(shape)\(recipe.isDirect ? "" : " (from \(recipe.origin))")")
        }
    }
    if !missing.isEmpty || !wrong.isEmpty {
        let problems = missing + wrong
        let list = problems.count == 1 ? problems[0] : "\(problems.count) problems:\n  - " + problems.prefix(20).joined(separator: "\n  - ")
            + (problems.count > 20 ? "\n  - ... and \(problems.count - 20) more" : "")
        throw refuse(missing.isEmpty ? .badShape : .missingEntry,
                     "\(list).\nExpected shapes follow from the architecture inferred from the checkpoint (\(provenance)). "
                     + "The checkpoint is incomplete, damaged, or not a CLIP model of this architecture; download it again or check its origin.")
    }

    // Convert.
    var tensors: [String: Tensor] = [:]
    tensors.reserveCapacity(expected.count)
    for (name, _) in expected {
        guard let recipe = recipes[name] else { continue }
        do {
            tensors[name] = try recipe.materialize()
        } catch let e as FileError where e.path.isEmpty {
            // A recipe's own problem (its errors carry no path); the file's are already named.
            throw refuse(e.kind, "tensor '\(name)': \(e.message)")
        }
    }
    // Non-finite weights give NaN features and a silently wrong number downstream: name them.
    let nonFinite = tensors.filter { !$0.value.data.allSatisfy(\.isFinite) }.keys.sorted()
    if let first = nonFinite.first {
        throw refuse(.nonFinite,
                     "tensor '\(first)' holds NaN or infinite values"
                     + (nonFinite.count > 1 ? " (and \(nonFinite.count - 1) more: \(nonFinite.dropFirst().prefix(5).joined(separator: ", "))\(nonFinite.count > 6 ? ", ..." : ""))" : "")
                     + "; the checkpoint is damaged: download it again or check its origin.")
    }
    try checkWeightRanges(tensors, refuse: refuse)
    let hiddenAct = (opened.hfConfig?.vision["hidden_act"] as? String) ?? (opened.hfConfig?.text["hidden_act"] as? String)
    return CLIPWeights(config: config, format: format, tensors: tensors, path: path,
                       hiddenAct: opened.hfConfig == nil ? nil : (hiddenAct ?? "quick_gelu"))
}

/// " (the checkpoint would store it as 'vision_model.post_layernorm.weight')" for renamed formats, else "".
private func missingTensorNote(_ name: String, sanitized: SanitizedTensors) -> String {
    let stored = checkpointNames(forOpenAIName: name, in: sanitized)
    if stored == [name] { return "" }
    return " (the checkpoint would store it as \(stored.map { "'\($0)'" }.joined(separator: " + ")))"
}

/// The architecture of a CLIP model (ViT or ResNet) from its OpenAI-named tensor shapes, as openai's
/// `build_model` infers it (heads = width / 64).
public func inferCLIPConfig(shapes: [String: [Int]], source: String = "checkpoint") throws -> CLIPConfig {
    try inferArchitecture(shapes: shapes, names: Array(shapes.keys), path: source, subject: source) { _ in "" }.config
}

/// Largest dimension the loader accepts from a file (guards the arithmetic on inferred sizes).
private let maxDimension = 1 << 24

/// Errors name `path` and start with `subject` (the path and the checkpoint's format).
private func inferArchitecture(shapes: [String: [Int]], names: [String], path: String, subject: String,
                               note: (String) -> String) throws -> (config: CLIPConfig, provenance: String) {
    func refuse(_ kind: FileError.Kind, _ why: String) -> FileError { FileError(kind, path: path, "\(subject): \(why)") }
    func shape(_ name: String, rank: Int, _ what: String) throws -> [Int] {
        guard let s = shapes[name] else {
            throw refuse(.missingEntry,
                         "tensor '\(name)' is missing\(note(name)); it is needed to infer \(what). "
                         + "The checkpoint is incomplete or not a CLIP model.")
        }
        guard s.count == rank, s.allSatisfy({ $0 > 0 && $0 <= maxDimension }) else {
            throw refuse(.badShape,
                         "tensor '\(name)' has shape \(s), expected a \(rank)-D shape of sizes between 1 and \(maxDimension) (it gives \(what)).")
        }
        return s
    }
    if names.contains(where: { $0.hasPrefix("visual.layer1.") || $0.hasPrefix("visual.attnpool.") }) {
        return try inferResNetArchitecture(shape: shape, names: names, refuse: refuse)
    }
    let conv = try shape("visual.conv1.weight", rank: 4, "the vision width and patch size")
    guard conv[1] == 3, conv[2] == conv[3] else {
        throw refuse(.badShape,
                     "tensor 'visual.conv1.weight' has shape \(conv), expected [width, 3, patch, patch].")
    }
    let visionWidth = conv[0], patch = conv[3]
    let visualPos = try shape("visual.positional_embedding", rank: 2, "the image resolution")
    let grid = Int(Double(visualPos[0] - 1).squareRoot().rounded())
    guard grid > 0, grid * grid + 1 == visualPos[0] else {
        throw refuse(.badShape,
                     "tensor 'visual.positional_embedding' has \(visualPos[0]) rows, expected grid*grid + 1 (a class token plus a square grid of patches).")
    }
    let textProjection = try shape("text_projection", rank: 2, "the embedding width")
    let positional = try shape("positional_embedding", rank: 2, "the context length")
    let tokens = try shape("token_embedding.weight", rank: 2, "the vocabulary size")
    let lnFinal = try shape("ln_final.weight", rank: 1, "the text width")
    let visionLayers = layerCount(in: names, prefix: "visual.transformer.resblocks.")
    let textLayers = layerCount(in: names, prefix: "transformer.resblocks.")
    guard visionLayers > 0 else {
        throw refuse(.missingEntry,
                     "no image transformer blocks: tensor 'visual.transformer.resblocks.0.attn.in_proj_weight' is missing\(note("visual.transformer.resblocks.0.attn.in_proj_weight")).")
    }
    guard textLayers > 0 else {
        throw refuse(.missingEntry,
                     "no text transformer blocks: tensor 'transformer.resblocks.0.attn.in_proj_weight' is missing\(note("transformer.resblocks.0.attn.in_proj_weight")).")
    }
    let textWidth = lnFinal[0]
    let config = CLIPConfig(embedDim: textProjection[1], imageResolution: patch * grid, patchSize: patch,
                            visionWidth: visionWidth, visionLayers: visionLayers, visionHeads: max(1, visionWidth / 64),
                            contextLength: positional[0], vocabSize: tokens[0], textWidth: textWidth,
                            textLayers: textLayers, textHeads: max(1, textWidth / 64))
    // What the model code needs beyond matching shapes: the shipped BPE tokenizer's ids must index
    // the token embedding, a prompt needs SOT, a token and EOT, and heads must divide the widths.
    guard config.vocabSize > CLIPTokenizer.eot else {
        throw refuse(.unsupported,
                     "tensor 'token_embedding.weight' has \(config.vocabSize) rows, but CLIP's BPE tokenizer (which PromptTune uses) produces ids up to \(CLIPTokenizer.eot); "
                     + "this checkpoint's vocabulary does not match it: use a CLIP checkpoint with the standard 49408-token vocabulary.")
    }
    guard config.contextLength >= 3 else {
        throw refuse(.unsupported,
                     "tensor 'positional_embedding' gives a context length of \(config.contextLength); a prompt needs at least 3 positions (SOT, a token, EOT). The checkpoint is damaged or not a CLIP text model.")
    }
    for (tower, width, heads) in [("vision", visionWidth, config.visionHeads), ("text", textWidth, config.textHeads)] where width % heads != 0 {
        throw refuse(.unsupported,
                     "the \(tower) width \(width) is not divisible by its \(heads) attention heads (width / 64, as openai's build_model infers them); the checkpoint is damaged or not an openai-style CLIP.")
    }
    let provenance = "embed dim \(config.embedDim) from text_projection \(textProjection); "
        + "vision width \(visionWidth) and patch \(patch) from visual.conv1.weight \(conv); "
        + "resolution \(config.imageResolution) from visual.positional_embedding \(visualPos); "
        + "\(visionLayers) vision and \(textLayers) text blocks; "
        + "context \(config.contextLength), vocab \(config.vocabSize), text width \(textWidth) from positional_embedding, "
        + "token_embedding.weight and ln_final.weight"
    return (config, provenance)
}

/// A ResNet CLIP's architecture as openai's `build_model` infers it: blocks per layer from the
/// `visual.layer{1..4}.N.` names, width from layer1's first convolution, resolution 32 times the
/// attention pool's grid, heads width * 32 / 64; the text tower as for a ViT.
private func inferResNetArchitecture(shape: (String, Int, String) throws -> [Int], names: [String],
                                     refuse: (FileError.Kind, String) -> FileError) throws -> (config: CLIPConfig, provenance: String) {
    let layers = (1...4).map { l -> Int in
        let prefix = "visual.layer\(l)."
        return Set(names.filter { $0.hasPrefix(prefix) }.compactMap { Int($0.dropFirst(prefix.count).prefix { $0 != "." }) }).count
    }
    guard layers.allSatisfy({ $0 > 0 }) else {
        throw refuse(.missingEntry,
                     "a ResNet CLIP needs blocks in each of visual.layer1 ... visual.layer4, found \(layers) blocks; the checkpoint is incomplete or not an openai-style ResNet CLIP.")
    }
    let first = try shape("visual.layer1.0.conv1.weight", 4, "the ResNet width")
    let pool = try shape("visual.attnpool.positional_embedding", 2, "the image resolution")
    let grid = Int(Double(pool[0] - 1).squareRoot().rounded())
    guard grid > 0, grid * grid + 1 == pool[0] else {
        throw refuse(.badShape,
                     "tensor 'visual.attnpool.positional_embedding' has \(pool[0]) rows, expected grid*grid + 1 (the mean token plus a square grid).")
    }
    let width = first[0]
    guard width % 2 == 0 else {
        throw refuse(.unsupported, "tensor 'visual.layer1.0.conv1.weight' gives a ResNet width of \(width); openai's ModifiedResNet needs an even width.")
    }
    let textProjection = try shape("text_projection", 2, "the embedding width")
    let positional = try shape("positional_embedding", 2, "the context length")
    let tokens = try shape("token_embedding.weight", 2, "the vocabulary size")
    let lnFinal = try shape("ln_final.weight", 1, "the text width")
    let textLayers = layerCount(in: names, prefix: "transformer.resblocks.")
    guard textLayers > 0 else {
        throw refuse(.missingEntry, "no text transformer blocks: tensor 'transformer.resblocks.0.attn.in_proj_weight' is missing.")
    }
    let arch = ResNetArchitecture(layers: layers, width: width, resolution: grid * 32, heads: max(1, width * 32 / 64),
                                  embedDim: textProjection[1])
    let textWidth = lnFinal[0]
    let config = CLIPConfig(resnet: arch, contextLength: positional[0], vocabSize: tokens[0], textWidth: textWidth,
                            textLayers: textLayers, textHeads: max(1, textWidth / 64))
    guard config.vocabSize > CLIPTokenizer.eot else {
        throw refuse(.unsupported,
                     "tensor 'token_embedding.weight' has \(config.vocabSize) rows, but CLIP's BPE tokenizer (which PromptTune uses) produces ids up to \(CLIPTokenizer.eot): use a CLIP checkpoint with the standard 49408-token vocabulary.")
    }
    guard config.contextLength >= 3 else {
        throw refuse(.unsupported,
                     "tensor 'positional_embedding' gives a context length of \(config.contextLength); a prompt needs at least 3 positions (SOT, a token, EOT).")
    }
    guard textWidth % config.textHeads == 0 else {
        throw refuse(.unsupported, "the text width \(textWidth) is not divisible by its \(config.textHeads) attention heads (width / 64, as openai's build_model infers them).")
    }
    let provenance = "\(arch.name): blocks per layer \(layers) from the visual.layer1..4 names; width \(width) from visual.layer1.0.conv1.weight \(first); "
        + "resolution \(arch.resolution) from visual.attnpool.positional_embedding \(pool); attention-pool heads width * 32 / 64 = \(arch.heads); "
        + "embed dim \(arch.embedDim) from text_projection \(textProjection); \(textLayers) text blocks, context \(config.contextLength), "
        + "vocab \(config.vocabSize), text width \(textWidth)"
    return (config, provenance)
}

/// Heads from a Hugging Face config.json, and a check that it agrees with the weights.
private func apply(_ hf: HFConfigFile, to config: inout CLIPConfig, weightsPath: String) throws {
    var conflicts: [String] = []
    func check(_ section: [String: Any], _ sectionName: String, _ key: String, _ value: Int) {
        if let v = hf.int(section, key), v != value {
            conflicts.append("\(sectionName)\(key) is \(v) but the weights have \(value)")
        }
    }
    check(hf.vision, "vision_config.", "hidden_size", config.visionWidth)
    check(hf.vision, "vision_config.", "num_hidden_layers", config.visionLayers)
    check(hf.vision, "vision_config.", "patch_size", config.patchSize)
    check(hf.vision, "vision_config.", "image_size", config.imageResolution)
    check(hf.text, "text_config.", "hidden_size", config.textWidth)
    check(hf.text, "text_config.", "num_hidden_layers", config.textLayers)
    check(hf.text, "text_config.", "vocab_size", config.vocabSize)
    check(hf.text, "text_config.", "max_position_embeddings", config.contextLength)
    check(hf.top, "", "projection_dim", config.embedDim)
    if !conflicts.isEmpty {
        throw FileError(.invalidConfig, path: hf.path,
                        "does not match the weights in \(weightsPath): \(conflicts.joined(separator: "; ")). "
                        + "Use the config.json that belongs to these weights.")
    }
    if let h = hf.int(hf.vision, "num_attention_heads") { config.visionHeads = h }
    if let h = hf.int(hf.text, "num_attention_heads") { config.textHeads = h }
}

/// Bounds on a loaded model's weights (docs/HARDENING.md, "Weight ranges"). CLIP checkpoints are
/// released in fp16, so no trained weight lies outside fp16's range; a finite weight far beyond it
/// (5e37, what one flipped exponent bit in an fp32 file gives) overflowed every feature's norm and
/// turned all embeddings into zeros. The logit scale is stored as a log: CLIP clamps exp(logit_scale)
/// to at most 100 in training, and a value whose exp leaves a sane range is a damaged file.
public enum WeightBounds {
    /// Largest magnitude of any weight: fp16's largest finite value.
    public static let maxMagnitude: Float = 65504
    /// exp(logit_scale) must lie in this range.
    public static let logitScale: ClosedRange<Double> = 1e-2...1e3
}

func checkWeightRanges(_ tensors: [String: Tensor], refuse: (FileError.Kind, String) -> FileError) throws {
    if let raw = tensors["logit_scale"]?.data.first {
        let scale = exp(Double(raw))
        if !WeightBounds.logitScale.contains(scale) {
            throw refuse(.outOfRange,
                         "tensor 'logit_scale' is \(raw), so the logit scale exp(\(raw)) = \(scale) lies outside \(WeightBounds.logitScale.lowerBound)...\(WeightBounds.logitScale.upperBound) (CLIP clamps it to at most 100); the checkpoint is damaged: download it again or check its origin.")
        }
    }
    var huge: [(String, Float)] = []
    for (name, t) in tensors where name != "logit_scale" {
        let m = t.data.reduce(Float(0)) { max($0, abs($1)) }
        if m > WeightBounds.maxMagnitude { huge.append((name, m)) }
    }
    huge.sort { $0.0 < $1.0 }
    if let (name, m) = huge.first {
        throw refuse(.outOfRange,
                     "tensor '\(name)' holds a weight of magnitude \(m), beyond \(WeightBounds.maxMagnitude) (fp16's range, where every released CLIP weight lies)"
                     + (huge.count > 1 ? " (and \(huge.count - 1) more tensors: \(huge.dropFirst().prefix(5).map(\.0).joined(separator: ", ")))" : "")
                     + "; the checkpoint is damaged: download it again or check its origin.")
    }
}
