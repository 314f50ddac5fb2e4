import CLIP
import Foundation
import TensorCore
import TensorIO

/// A prompt learner's checkpoint as the reference code writes it: Dassl's `save_checkpoint`, i.e.
/// `torch.save({"state_dict": OrderedDict, "epoch": N, "optimizer": ..., "scheduler": ...,
/// "val_result": ...}, "<output>/prompt_learner/model.pth.tar-N")`, with the state dict of
///
///     CoOp    (trainers/coop.py)    ctx [M, D] or [K, M, D] (CSC), token_prefix [K, 1, D], token_suffix [K, 77-1-M, D]
///     KgCoOp  (trainers/kgcoop.py)  the same, plus bias_vectors [1, 512] and meta_net.linear1.{weight,bias},
///                                   which its forward never uses
///     DAPT    (trainers/dapt.py)    txt_ctx [M, D], vis_ctx [1, N, W], token_prefix, token_suffix
///
/// D is the text width, W the image tower's; fp16 (CoOp's default precision) or fp32 storages.
/// All key names of the reference appear here only.
public struct ReferencePrompt: Equatable, Sendable {
    /// Which reference trainer's state-dict layout the file has.
    public enum Layout: String, Codable, Sendable {
        case coop, kgcoop, dapt
    }

    public var layout: Layout
    /// Dassl's "epoch" (epochs done), when the file has one.
    public var epoch: Int?
    /// `ctx` / `txt_ctx`: M x D, or K x M x D for class-specific contexts. nil: no text context.
    public var context: Tensor?
    /// `vis_ctx` without its leading batch axis: N x W. nil: no visual prompt.
    public var visualPrompt: Tensor?
    /// The frozen token embeddings around the context, when the file holds them: K x 1 x D, K x (T-1-M) x D.
    public var tokenPrefix: Tensor?
    public var tokenSuffix: Tensor?
    /// Tensors read but not used at inference (KgCoOp's `bias_vectors`, `meta_net.*`).
    public var unused: [String] = []

    public init(layout: Layout, epoch: Int?, context: Tensor?, visualPrompt: Tensor?, tokenPrefix: Tensor? = nil,
                tokenSuffix: Tensor? = nil, unused: [String] = []) {
        self.layout = layout; self.epoch = epoch; self.context = context; self.visualPrompt = visualPrompt
        self.tokenPrefix = tokenPrefix; self.tokenSuffix = tokenSuffix; self.unused = unused
    }

    static let kgcoopUnused: Set<String> = ["bias_vectors", "meta_net.linear1.weight", "meta_net.linear1.bias"]

    /// Whether the file is a zip archive (a `torch.save` file since PyTorch 1.6): by content, not by name.
    public static func looksLikeTorchArchive(path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 4)).map(Array.init) == [0x50, 0x4b, 0x03, 0x04]
    }

    /// Reads a reference checkpoint: Dassl's dict (or a bare prompt-learner state dict).
    public static func read(path: String) throws -> ReferencePrompt {
        func fail(_ kind: PromptError.Kind, _ why: String) -> PromptError { PromptError(kind, "\(path): \(why)") }
        let archive = try TorchArchive(path: path)
        let root = archive.root
        let stateValue: PickleValue
        if let s = root["state_dict"] { stateValue = s } else { stateValue = root }
        guard case .dict(let state) = stateValue else {
            throw fail(.notAPromptCheckpoint, "not a prompt-learner checkpoint: its \(root["state_dict"] == nil ? "pickled root" : "'state_dict'") is a \(stateValue.typeDescription), not a state dict (CoOp, KgCoOp and DAPT write torch.save({\"state_dict\": ..., \"epoch\": N, ...}))")
        }
        var tensors: [String: TensorReference] = [:]
        for (key, value) in state.stringKeyedEntries {
            let name = key.hasPrefix("module.") ? String(key.dropFirst(7)) : key   // as Dassl's save_checkpoint strips it
            guard let t = value.tensor else { throw fail(.notAPromptCheckpoint, "state_dict entry '\(key)' is a \(value.typeDescription), not a tensor") }
            tensors[name] = t
        }
        func load(_ name: String) throws -> Tensor? {
            guard let ref = tensors[name] else { return nil }
            let t = try archive.tensor(ref, name: "state_dict.\(name)")
            if let bad = t.data.firstIndex(where: { !$0.isFinite }) {
                throw fail(.nonFiniteInput, "tensor '\(name)' \(t.shape) holds a non-finite value (\(t.data[bad]) at element \(bad)); this prompt cannot be used: train it again or take an earlier epoch's checkpoint")
            }
            return t
        }
        let layout: Layout
        let names = Set(tensors.keys)
        if names.contains("txt_ctx") || names.contains("vis_ctx") {
            layout = .dapt
        } else if names.contains("ctx") {
            if names.contains("meta_net.linear2.weight") {
                throw fail(.notSupported, "holds CoCoOp's meta-net (meta_net.linear2.weight), which conditions the context on each image; PromptTune evaluates CoOp, KgCoOp and DAPT prompts, not CoCoOp's")
            }
            layout = names.isDisjoint(with: kgcoopUnused) ? .coop : .kgcoop
        } else {
            throw fail(.notAPromptCheckpoint, "its state dict has no prompt context (ctx for CoOp and KgCoOp, txt_ctx / vis_ctx for DAPT); it holds \(names.sorted().prefix(8).joined(separator: ", ")): not a prompt_learner checkpoint of CoOp, KgCoOp or DAPT")
        }
        let known: Set<String> = layout == .dapt ? ["txt_ctx", "vis_ctx", "token_prefix", "token_suffix"]
            : Set(["ctx", "token_prefix", "token_suffix"]).union(layout == .kgcoop ? kgcoopUnused : Set<String>())
        let unknown = names.subtracting(known).sorted()
        guard unknown.isEmpty else {
            throw fail(.notAPromptCheckpoint, "its state dict holds tensors no \(layout.rawValue) prompt learner has (\(unknown.prefix(8).joined(separator: ", "))); PromptTune reads the prompt_learner checkpoints of CoOp, KgCoOp and DAPT only")
        }
        let contextName = layout == .dapt ? "txt_ctx" : "ctx"
        let context = try load(contextName)
        if let c = context, !(c.shape.count == 2 || (c.shape.count == 3 && layout != .dapt)) || c.shape.contains(0) {
            throw fail(.shapeMismatch, "tensor '\(contextName)' has shape \(context!.shape); expected [M, D]\(layout == .dapt ? "" : " or [K, M, D] (class-specific)")")
        }
        var visual: Tensor? = nil
        if let v = try load("vis_ctx") {
            guard v.shape.count == 3, v.shape[0] == 1, v.shape[1] >= 1, v.shape[2] >= 1 else {
                throw fail(.shapeMismatch, "tensor 'vis_ctx' has shape \(v.shape); DAPT's is [1, N, W] (N visual prompt tokens of the image tower's width W)")
            }
            visual = v.reshaped([v.shape[1], v.shape[2]])
        }
        let prefix = try load("token_prefix"), suffix = try load("token_suffix")
        for (n, t) in [("token_prefix", prefix), ("token_suffix", suffix)] {
            if let t, t.shape.count != 3 { throw fail(.shapeMismatch, "tensor '\(n)' has shape \(t.shape); expected [K, positions, D]") }
        }
        return ReferencePrompt(layout: layout, epoch: root["epoch"]?.int, context: context, visualPrompt: visual,
                               tokenPrefix: prefix, tokenSuffix: suffix,
                               unused: names.intersection(kgcoopUnused).sorted())
    }

    /// M, the context length, or nil without a text context.
    public var contextLength: Int? { context.map { $0.shape[$0.shape.count - 2] } }
    public var classSpecific: Bool { context?.shape.count == 3 }

    /// The method to evaluate the prompt with: CoOp's prompt layout (class name at the end, as the
    /// reference's default CLASS_TOKEN_POSITION), M and CSC from the context's shape.
    public var method: Method {
        var m: Method
        switch layout {
        case .coop: m = Method.coop
        case .kgcoop: m = (try? Method.named("kgcoop")) ?? Method.coop
        case .dapt: m = (try? Method.named("dapt")) ?? Method.coop
        }
        m.prompt.initText = nil
        if let len = contextLength { m.prompt.contextLength = len }
        m.prompt.classSpecific = classSpecific
        m.prompt.position = .end
        if context == nil { m.learnsText = false }
        if let v = visualPrompt { m.visualPrompt = VisualPromptConfig(tokens: v.rows) } else { m.visualPrompt = nil }
        return m
    }

    /// Checks the prompt against `model` and the class names it is to classify: widths, M, the class
    /// count of class-specific contexts, and that the frozen embeddings it carries are this model's
    /// (its `token_prefix` is the SOS token's embedding). `path` names the file in errors.
    public func validate(model: CLIPModel, classNames: [String], path: String) throws {
        func fail(_ kind: PromptError.Kind, _ why: String) -> PromptError { PromptError(kind, "\(path): \(why)") }
        let d = model.text.width, t = model.text.contextLength
        let contextName = layout == .dapt ? "txt_ctx" : "ctx"
        if let c = context {
            guard c.lastDim == d else {
                throw fail(.modelMismatch, "tensor '\(contextName)' \(c.shape) has width \(c.lastDim) but the model's text width is \(d): the prompt was trained with another CLIP; give that model with --model")
            }
            let m = c.shape[c.shape.count - 2]
            guard m <= t - 4 else {
                throw fail(.modelMismatch, "tensor '\(contextName)' \(c.shape) has \(m) context vectors; a \(t)-token prompt holds at most \(t - 4)")
            }
            if c.shape.count == 3 && c.shape[0] != classNames.count {
                throw fail(.classMismatch, "tensor '\(contextName)' \(c.shape) holds class-specific contexts for \(c.shape[0]) classes but \(classNames.count) class names are to be classified; a class-specific prompt is evaluated on the classes (and class order) it was trained on")
            }
            if let s = tokenSuffix, s.shape[1] != t - 1 - m || s.lastDim != d {
                throw fail(.damagedCheckpoint, "tensor 'token_suffix' \(s.shape) does not fit a \(t)-token prompt with \(m) context vectors of width \(d) (expected [K, \(t - 1 - m), \(d)]): the file is inconsistent")
            }
        }
        if let v = visualPrompt, v.lastDim != model.image.width {
            throw fail(.modelMismatch, "tensor 'vis_ctx' [1, \(v.rows), \(v.lastDim)] has width \(v.lastDim) but the model's image tower is \(model.image.width) wide: the prompt was trained with another CLIP; give that model with --model")
        }
        if let p = tokenPrefix {
            guard p.shape.count == 3, p.shape[1] == 1, p.lastDim == d else {
                throw fail(.shapeMismatch, "tensor 'token_prefix' \(p.shape) is not [K, 1, \(d)] (the SOS token's embedding per class)")
            }
            // The SOS row is the same for every class: compare it with this model's, at fp16 precision.
            let sos = model.text.tokenEmbedding.gatherRows([CLIPTokenizer.sot])
            var worst = 0.0
            for k in 0..<p.shape[0] {
                for x in 0..<d {
                    let a = Double(p[k * d + x]), b = Double(sos[x])
                    worst = max(worst, abs(a - b) / (1e-3 * abs(b) + 1e-5))
                }
            }
            if worst > 1 {
                throw fail(.modelMismatch, "tensor 'token_prefix' (the SOS token's embedding) differs from this model's: the prompt was trained with another CLIP than the one given; give that model with --model")
            }
        }
    }

    /// Writes Dassl's checkpoint dict (a torch zip archive, pickle protocol 2, loadable with
    /// `torch.load(path, weights_only=True)`): `state_dict` an OrderedDict with the layout's keys,
    /// `epoch`, and `optimizer`, `scheduler`, `val_result` as None (CoOp's `load_model` reads only
    /// `state_dict` and `epoch`; Dassl's resume needs its own optimizer state and is not supported).
    public func write(to url: URL) throws {
        var writer = TorchSaveWriter()
        let state = PickleDict(ordered: true)
        if let c = context { state.set(.string(layout == .dapt ? "txt_ctx" : "ctx"), try writer.add(c)) }
        if let v = visualPrompt { state.set(.string("vis_ctx"), try writer.add(v.reshaped([1, v.rows, v.lastDim]))) }
        if let p = tokenPrefix { state.set(.string("token_prefix"), try writer.add(p)) }
        if let s = tokenSuffix { state.set(.string("token_suffix"), try writer.add(s)) }
        let root = PickleDict()
        root.set(.string("state_dict"), .dict(state))
        root.set(.string("epoch"), epoch.map { .int($0) } ?? .none)
        root.set(.string("optimizer"), .none)
        root.set(.string("scheduler"), .none)
        root.set(.string("val_result"), .none)
        try writer.write(root: .dict(root), to: url)
    }

    /// CoOp's frozen token embeddings of the prompts "X ... X <name>." (M times X) for `classNames`,
    /// as its PromptLearner registers them: the SOS row (K x 1 x D) and every row after the
    /// context up to the text length, padding included (K x (T-1-M) x D).
    public static func frozenEmbeddings(model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String],
                                        contextLength m: Int) -> (prefix: Tensor, suffix: Tensor) {
        let t = model.text.contextLength, d = model.text.width, k = classNames.count
        let x = Array(repeating: "X", count: m).joined(separator: " ")
        let prompts = classNames.map { "\(x) \($0.replacingOccurrences(of: "_", with: " "))." }
        let rows = tokenizer.tokenize(prompts, contextLength: t)
        var prefix = [Float](), suffix = [Float]()
        prefix.reserveCapacity(k * d); suffix.reserveCapacity(k * (t - 1 - m) * d)
        for r in rows {
            let e = model.text.tokenEmbedding.gatherRows(r.map(Int.init))   // T, D
            prefix += e.data[0..<d]
            suffix += e.data[((1 + m) * d)..<(t * d)]
        }
        return (Tensor(shape: [k, 1, d], data: prefix), Tensor(shape: [k, t - 1 - m, d], data: suffix))
    }
}

/// A trained prompt from any file `eval`, `analyze`, `embed` and `export` take: PromptTune's
/// checkpoint (`prompt.safetensors`, or an earlier version's `.ptprompt`) or a reference checkpoint
/// (`prompt_learner/model.pth.tar-N` of CoOp, KgCoOp or DAPT), told apart by content. Its
/// parameters are the method's named tensors, whatever the file called them.
public struct TrainedPrompt: Sendable {
    public var path: String
    public var method: Method
    public var parameters: ParameterSet
    /// The hand template the run used for zero-shot features (PromptTune's files).
    public var template: String?
    /// The model digest the prompt was trained with ("" when the file does not say).
    public var modelDigest: String
    /// The class names it was trained on, when recorded (PromptTune's own files).
    public var classNames: [String]?
    /// Set for a reference checkpoint.
    public var reference: ReferencePrompt?
    public var epochsDone: Int?

    /// The text context (M x D or K x M x D); nil when the prompt learns no text (VPT).
    public var context: Tensor? { parameters[ParameterName.textContext] }
    public var visualPrompt: Tensor? { parameters[ParameterName.visualPrompt] }

    public static func read(path: String) throws -> TrainedPrompt {
        if FileManager.default.isReadableFile(atPath: path), nonRegularFileKind(path) == nil, ReferencePrompt.looksLikeTorchArchive(path: path) {
            let r = try ReferencePrompt.read(path: path)
            var p = ParameterSet()
            if let c = r.context { p[ParameterName.textContext] = c }
            if let v = r.visualPrompt { p[ParameterName.visualPrompt] = v }
            return TrainedPrompt(path: path, method: r.method, parameters: p, template: nil, modelDigest: "", classNames: nil,
                                 reference: r, epochsDone: r.epoch)
        }
        let c: ParameterCheckpoint
        do { c = try ParameterCheckpoint.read(path: path) } catch let e as FileError where e.kind == .wrongFormat {
            throw FileError(.wrongFormat, path: path, "\(e.message); give a prompt.safetensors from `train` or `run`, an earlier version's prompt.ptprompt, or a CoOp / KgCoOp / DAPT prompt_learner/model.pth.tar-N")
        }
        return TrainedPrompt(path: path, method: c.header.config.method, parameters: c.parameters, template: c.header.config.template,
                             modelDigest: c.header.modelDigest, classNames: c.header.classNames, reference: nil,
                             epochsDone: c.header.epochsDone)
    }

    /// The prompt's architecture for `classNames` under `model`, after checking it belongs to the
    /// model (digest, widths, a reference file's frozen embeddings) and to the names (a
    /// class-specific context only for the classes it was trained on). `textOnly` keeps the text
    /// context of a prompt that also prompts the image tower (DAPT), so that it can act on features
    /// of the unprompted tower. `template`: the hand template where the file records none.
    public func architecture(model: CLIPModel, modelPath: String, modelDigest digest: String, classNames: [String],
                             tokenizer: CLIPTokenizer, template fallback: String = "a photo of a {}.",
                             textOnly: Bool = false) throws -> any PromptArchitecture {
        if !modelDigest.isEmpty && modelDigest != digest {
            throw PromptError(.modelMismatch, "\(path) was trained with another model than \(modelPath); give that model with --model")
        }
        if let r = reference { try r.validate(model: model, classNames: classNames, path: path) }
        if method.prompt.classSpecific, reference == nil, let trained = self.classNames, trained != classNames {
            throw PromptError(.classMismatch, "this prompt has class-specific contexts for its \(trained.count) training classes; it cannot be evaluated on other class names (use a shared-context method for base-to-novel or cross-dataset)")
        }
        _ = try visualTokens(model: model, modelPath: modelPath, modelDigest: digest)
        var m = method, p = parameters
        if textOnly && (m.architecture == .maple || m.architecture == .promptsrc) {
            // MaPLe's image prompts are functions of its text prompts, PromptSRC's deep text prompts act
            // inside the text tower: the text side is the trained classifier, with the images through
            // the unprompted tower.
            let a = try m.makeArchitecture(model: model, tokenizer: tokenizer, classNames: classNames, template: template ?? fallback, parameters: p)
            (a as? MaPLeArchitecture)?.textOnly = true
            (a as? PromptSRCArchitecture)?.textOnly = true
            return a
        }
        if textOnly && m.needsImages {
            guard p[ParameterName.textContext] != nil else {
                throw PromptError(.notSupported, "\(path) has no text context (method \(method.name) keeps the hand template's text features); --text-only has nothing to evaluate")
            }
            m.visualPrompt = nil
            m.learnsText = true
            p[ParameterName.visualPrompt] = nil
        }
        return try m.makeArchitecture(model: model, tokenizer: tokenizer, classNames: classNames, template: template ?? fallback, parameters: p)
    }

    /// The prompt's text features for `classNames` under `model` (K x E, not normalised), for
    /// features of the unprompted image tower: a prompt that changes the image features is refused
    /// unless `textOnly`, which evaluates its text context alone.
    public func textFeatures(model: CLIPModel, modelPath: String, modelDigest digest: String, classNames: [String],
                             tokenizer: CLIPTokenizer, textOnly: Bool = false) throws -> Tensor {
        if let v = visualPrompt, !textOnly {
            let name = reference != nil ? "'vis_ctx'" : "'\(ParameterName.visualPrompt)'"
            throw PromptError(.notSupported, "\(path) holds a visual prompt (\(name), \(v.rows) tokens of width \(v.lastDim)) that changes the image features, but the features given were encoded by the unprompted image tower: its accuracy needs the images (give --dataset and --root instead of --features); pass --text-only to evaluate its text context alone on these features")
        }
        guard context != nil else {
            throw PromptError(.notSupported, "\(path) has no text context (method \(method.name) keeps the hand template's text features); nothing to evaluate on cached features")
        }
        if method.needsImages, !textOnly {
            throw PromptError(.notSupported, "\(path) is a \(method.name) prompt whose image prompts (\(parameters.names.filter { $0 != ParameterName.textContext }.joined(separator: ", "))) change the image features, but the features given were encoded by the unprompted image tower: its accuracy needs the images (give --dataset and --root instead of --features); pass --text-only to evaluate its text side alone on these features")
        }
        let a = try architecture(model: model, modelPath: modelPath, modelDigest: digest, classNames: classNames, tokenizer: tokenizer,
                                 textOnly: textOnly)
        guard case .shared(let t) = a.classifier(parameters) else {
            throw PromptError(.notSupported, "\(path): method \(method.name) makes a classifier per image; give the images (--dataset, --root)")
        }
        return t
    }

    /// The visual prompt tokens (N x W) checked against `model`'s image tower, or nil.
    public func visualTokens(model: CLIPModel, modelPath: String, modelDigest digest: String) throws -> Tensor? {
        guard let v = visualPrompt else { return nil }
        if !model.image.isViT { throw PromptError.needsViT(method: method.name, model: model.config) }
        if !modelDigest.isEmpty && modelDigest != digest {
            throw PromptError(.modelMismatch, "\(path) was trained with another model than \(modelPath); give that model with --model")
        }
        guard v.lastDim == model.image.width else {
            throw PromptError(.modelMismatch, "\(path): its visual prompt \(reference != nil ? "'vis_ctx' [1, \(v.rows), \(v.lastDim)]" : "'\(ParameterName.visualPrompt)' \(v.shape)") has width \(v.lastDim) but the model's image tower is \(model.image.width) wide: the prompt was trained with another CLIP; give that model with --model")
        }
        return v
    }
}
