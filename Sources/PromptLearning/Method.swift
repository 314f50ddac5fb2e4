import Foundation

/// One weighted loss term of a method: the key of its type in `LossTerms.table`, its weight and
/// the values of the parameters the type declares (every one present; the declared default where
/// none was given). Serialised as before the table existed, `{"interClassDispersion": {"tau": 2,
/// "weight": 0.01}}` (the type's `codingName`), so prompt checkpoints read and write unchanged.
public struct LossTerm: Codable, Equatable, Sendable {
    /// Short key used in progress lines, logs, golden files, plans and `--term`.
    public var key: String
    public var weight: Float
    /// Parameter name -> value, for every parameter the term's type declares.
    public var parameters: [String: Float]

    /// The term `key` (a row of `LossTerms.table`) with `weight` and the declared defaults of the
    /// parameters `parameters` leaves out. A key no row has, or a parameter its type does not
    /// declare, is a programming error (plans and options are checked before they get here).
    public init(_ key: String, weight: Float, parameters: [String: Float] = [:]) {
        guard let type = LossTerms.type(key) else { preconditionFailure("no loss term '\(key)' in LossTerms.table") }
        for name in parameters.keys where !type.parameters.contains(where: { $0.name == name }) {
            preconditionFailure("loss term '\(key)' has no parameter '\(name)'")
        }
        self.key = key
        self.weight = weight
        self.parameters = Dictionary(uniqueKeysWithValues: type.parameters.map { ($0.name, parameters[$0.name] ?? $0.defaultValue) })
    }

    /// The term's type (its row of `LossTerms.table`).
    public var type: any ObjectiveTerm.Type { LossTerms.type(key)! }

    /// The same term with another weight.
    public func withWeight(_ w: Float) -> LossTerm {
        var t = self
        t.weight = w
        return t
    }

    private struct Name: CodingKey {
        var stringValue: String
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let outer = try decoder.container(keyedBy: Name.self)
        guard outer.allKeys.count == 1, let name = outer.allKeys.first else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "a loss term is one key, the term's name (got \(outer.allKeys.map(\.stringValue)))"))
        }
        let row = LossTerms.table.first(where: { $0.codingName == name.stringValue }).map { (key: $0.key, parameters: $0.parameters) }
        guard let row else {
            let known = LossTerms.table.map { $0.codingName }.joined(separator: ", ")
            throw DecodingError.dataCorruptedError(forKey: name, in: outer, debugDescription: "unknown loss term '\(name.stringValue)' (known: \(known))")
        }
        let inner = try outer.nestedContainer(keyedBy: Name.self, forKey: name)
        let declared = Set(row.parameters.map(\.name))
        for k in inner.allKeys where k.stringValue != "weight" && !declared.contains(k.stringValue) {
            throw DecodingError.dataCorruptedError(forKey: k, in: inner, debugDescription: "loss term '\(row.key)' has no parameter '\(k.stringValue)'")
        }
        key = row.key
        weight = try inner.decode(Float.self, forKey: Name("weight"))
        var values: [String: Float] = [:]
        for p in row.parameters { values[p.name] = try inner.decodeIfPresent(Float.self, forKey: Name(p.name)) ?? p.defaultValue }
        parameters = values
    }

    public func encode(to encoder: Encoder) throws {
        var outer = encoder.container(keyedBy: Name.self)
        let (codingName, declared) = (type.codingName, type.parameters)
        var inner = outer.nestedContainer(keyedBy: Name.self, forKey: Name(codingName))
        try inner.encode(weight, forKey: Name("weight"))
        for p in declared { try inner.encode(parameters[p.name] ?? p.defaultValue, forKey: Name(p.name)) }
    }
}

/// NPT's anchor settings (a documented reconstruction: see docs/METHODS-NOTES.md).
public struct AnchorOptions: Codable, Equatable, Sendable {
    public var rotation: AnchorRotation
    public var seed: UInt64
    public init(rotation: AnchorRotation = .aligned, seed: UInt64 = 0) { self.rotation = rotation; self.seed = seed }
}

/// A method: which prompt it learns and which weighted terms it adds to cross-entropy. NPT is a
/// set of terms (plus anchors) that composes with any base method: `coop+npt`, `kgcoop+npt`, ...
public struct Method: Codable, Equatable, Sendable {
    public var name: String
    public var prompt: PromptConfig
    public var terms: [LossTerm]
    /// Set when a term needs NPT's anchors.
    public var anchors: AnchorOptions?
    /// Hand templates (`{}` = class name) this method's reference code uses for its zero-shot text
    /// features where they differ from the dataset's own (CoOp's `CUSTOM_TEMPLATES`, the
    /// `template` of the Datasets module's `DatasetName`), keyed by the dataset's raw name there
    /// (`"dtd"`, `"oxford_pets"`, ...). Empty for methods that use the dataset's template.
    public var handTemplates: [String: String]
    /// Visual prompt tokens trained through the frozen image tower (DAPT, VPT); nil: none, and the
    /// method can train from cached image features.
    public var visualPrompt: VisualPromptConfig?
    /// Whether the text context is learned. VPT keeps the text side fixed at the zero-shot features
    /// of the hand template.
    public var learnsText: Bool
    /// MaPLe's prompt depth; nil for every other method.
    public var maple: MaPLeConfig?
    /// PromptSRC's prompt depths and vision tokens; nil for every other method.
    public var promptsrc: PromptSRCConfig?
    /// The prompt architecture (what is learned and how it acts), for methods whose architecture
    /// the visual prompt and `learnsText` do not imply (nil: implied).
    var explicitArchitecture: ArchitectureKind?
    /// The prompt architecture (what is learned and how it acts).
    public var architecture: ArchitectureKind {
        explicitArchitecture ?? Method.impliedArchitecture(visualPrompt: visualPrompt, learnsText: learnsText)
    }

    public init(name: String, prompt: PromptConfig, terms: [LossTerm] = [], anchors: AnchorOptions? = nil,
                handTemplates: [String: String] = [:], visualPrompt: VisualPromptConfig? = nil, learnsText: Bool = true,
                architecture: ArchitectureKind? = nil, maple: MaPLeConfig? = nil, promptsrc: PromptSRCConfig? = nil) {
        self.maple = maple
        self.promptsrc = promptsrc
        self.name = name; self.prompt = prompt; self.terms = terms; self.anchors = anchors
        self.handTemplates = handTemplates; self.visualPrompt = visualPrompt; self.learnsText = learnsText
        let implied = Method.impliedArchitecture(visualPrompt: visualPrompt, learnsText: learnsText)
        self.explicitArchitecture = architecture == implied ? nil : architecture
    }

    /// The architecture of methods recorded before the field existed: from their visual prompt and
    /// whether they learn the text.
    static func impliedArchitecture(visualPrompt: VisualPromptConfig?, learnsText: Bool) -> ArchitectureKind {
        visualPrompt == nil ? .context : (learnsText ? .contextAndVisual : .visual)
    }

    /// Whether training needs the images themselves (decoded and augmented every iteration)
    /// rather than cached final image features.
    public var needsImages: Bool { architecture.promptsImageTower }

    /// The hand template for zero-shot features on `dataset` (a raw dataset name, as in the
    /// `dataset` provenance of a features file): this method's own where it has one, else `fallback`
    /// (the dataset's template).
    public func handTemplate(dataset: String, default fallback: String) -> String {
        handTemplates[dataset] ?? fallback
    }

    public static let coop = Method(name: "coop", prompt: PromptConfig(contextLength: 16))
    public static let coopCSC = Method(name: "coop-csc", prompt: PromptConfig(contextLength: 16, classSpecific: true))
    /// KgCoOp's templates (`trainers/kgcoop.py` `CUSTOM_TEMPLATES` in htyao89/KgCoOp) differ from
    /// CoOp's only for DTD: "a photo of a {}, a type of texture." where CoOp has "{} texture.".
    public static let kgcoop = Method(name: "kgcoop", prompt: PromptConfig(contextLength: 4, initText: "a photo of a"),
                                      terms: [LossTerm("kg", weight: 8)],
                                      handTemplates: ["dtd": "a photo of a {}, a type of texture."])
    /// DeKg (cnunlp/DeKg `trainers/DeKg.py`, `trainers/loss.py`, commit b8f2f1c): KgCoOp's prompt,
    /// templates (its `CUSTOM_TEMPLATES` equal KgCoOp's) and consistency term, plus w2 * HSIC of
    /// the Frobenius-normalised learned and zero-shot text features. The trainer reads w1 from
    /// `TRAINER.COOP.W` and w2 from `LOSS.WEIGHT`; its `scripts/run.sh` passes 8 and 6.
    public static let dekg = Method(name: "dekg", prompt: PromptConfig(contextLength: 4, initText: "a photo of a"),
                                    terms: [LossTerm("kg", weight: 8), LossTerm("hsic", weight: 6)],
                                    handTemplates: ["dtd": "a photo of a {}, a type of texture."])
    /// DAPT's text prompt and inter-class dispersion; its visual prompt and intra-class term need
    /// image-side prompts (a later milestone). beta_t defaults to DAPT's most common 0.01. DAPT's
    /// `trainers/dapt.py` (mlvlab/DAPT) has no hand templates of its own, so none are set.
    public static let daptText = Method(name: "dapt-text", prompt: PromptConfig(contextLength: 16),
                                        terms: [LossTerm("inter", weight: 0.01)])

    /// NPT's default weights (our reconstruction's defaults).
    public static let nptTerms: [LossTerm] = [LossTerm("lc", weight: 1), LossTerm("mi", weight: 1)]

    /// CPT's terms and the paper's weights (a reconstruction: docs/METHODS-NOTES.md): the
    /// within-cluster ETF 0.25, class-balanced image-to-text compactness 0.15, the L1 anchor to the
    /// frozen text features 0.10.
    public static let cptTerms: [LossTerm] = [LossTerm("tetf", weight: 0.25), LossTerm("cc", weight: 0.15), LossTerm("rs", weight: 0.10)]

    /// DAPT (mlvlab/DAPT `trainers/dapt.py`): CoOp's text prompt (16 tokens, N(0, 0.02)), 16 visual
    /// tokens, CE + beta_v * L_intra + beta_t * L_inter. Defaults beta_v = 100, beta_t = 0.01 (the
    /// most common values of its per-dataset configs; `Recipes.dapt` holds each dataset's).
    public static let dapt = Method(name: "dapt", prompt: PromptConfig(contextLength: 16),
                                    terms: [LossTerm("intra", weight: 100), LossTerm("inter", weight: 0.01)],
                                    visualPrompt: VisualPromptConfig(tokens: 16))
    /// Visual prompts only (shallow VPT, 16 tokens), cross-entropy against the frozen zero-shot
    /// text features of the hand template.
    public static let vpt = Method(name: "vpt", prompt: PromptConfig(contextLength: 16),
                                   visualPrompt: VisualPromptConfig(tokens: 16), learnsText: false)

    /// CoCoOp (KaiyangZhou/CoOp `trainers/cocoop.py`, `configs/trainers/CoCoOp`): 4 context vectors
    /// from "a photo of a" shifted per image by a meta-net of the image feature; cross-entropy only.
    public static let cocoop = Method(name: "cocoop", prompt: PromptConfig(contextLength: 4, initText: "a photo of a"),
                                      architecture: .cocoop)

    /// MaPLe (muzairkhattak/multimodal-prompt-learning `trainers/maple.py`,
    /// `configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml`): 2 context vectors from the first two
    /// words of "a photo of a" (the prompt is "a photo of a {class}." with those two replaced), their
    /// projection into the image tower, deep prompts to depth 9; cross-entropy only.
    public static let maple = Method(name: "maple", prompt: PromptConfig(contextLength: 2, initText: "a photo of a"),
                                     architecture: .maple, maple: MaPLeConfig(promptDepth: 9))

    /// PromptSRC (muzairkhattak/PromptSRC `trainers/promptsrc.py`,
    /// `configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml`): 4 context vectors from
    /// "a photo of a", 4 vision tokens, independent deep prompts in both towers to depth 9; loss
    /// CE + 25 L1(text, template ensemble) + 10 L1(image, frozen image) + KL(zero-shot || prompted).
    public static let promptsrc = Method(name: "promptsrc", prompt: PromptConfig(contextLength: 4, initText: "a photo of a"),
                                         terms: [LossTerm("src_text", weight: 25), LossTerm("src_image", weight: 10),
                                                 LossTerm("src_kl", weight: 1)],
                                         architecture: .promptsrc, promptsrc: PromptSRCConfig())

    public static let builtInBases: [String: Method] = ["coop": coop, "coop-csc": coopCSC, "kgcoop": kgcoop, "dekg": dekg, "dapt-text": daptText,
                                                        "dapt": dapt, "vpt": vpt, "cocoop": cocoop, "maple": maple,
                                                        "promptsrc": promptsrc]

    private static let lock = NSLock()
    nonisolated(unsafe) private static var added: [String: Method] = [:]

    /// Adds a base method from outside this module (an extension, a test), under its name; a name
    /// already taken is refused. Its terms are rows of `LossTerms.table`, by key.
    public static func register(_ method: Method) {
        lock.lock(); defer { lock.unlock() }
        precondition(builtInBases[method.name] == nil && (added[method.name] == nil || added[method.name] == method),
                     "a method named '\(method.name)' exists already")
        added[method.name] = method
    }

    /// The methods `named(_:)` starts from: the built-in ones and the registered ones.
    public static var bases: [String: Method] {
        lock.lock(); defer { lock.unlock() }
        return builtInBases.merging(added) { a, _ in a }
    }

    /// The term sets that join any base method with `+`: NPT and CPT.
    public static let addOns = ["npt", "cpt"]

    /// "coop", "kgcoop", "npt" (= coop+npt), "cpt" (= coop+cpt), "coop+npt", "kgcoop+npt",
    /// "maple+cpt", "dekg+npt+cpt", ...
    public static func named(_ spec: String) throws -> Method {
        let parts = spec.lowercased().split(separator: "+").map(String.init)
        let known = (bases.keys.sorted() + addOns).joined(separator: ", ")
        guard let first = parts.first else { throw PromptError(.unknownMethod, "empty method name; choose from \(known), optionally joined with +npt or +cpt") }
        var method: Method
        var rest = parts.dropFirst()
        if addOns.contains(first) {
            method = coop
            rest = parts[...]
        } else if let base = bases[first] {
            method = base
        } else {
            throw PromptError(.unknownMethod, "unknown method '\(first)'; choose from \(known), optionally joined with +npt or +cpt (e.g. coop+npt, maple+cpt)")
        }
        var added: Set<String> = []
        for extra in rest {
            guard addOns.contains(extra) else {
                throw PromptError(.unknownMethod, "'\(extra)' cannot be added to a method; only +npt and +cpt compose (e.g. kgcoop+npt, maple+cpt)")
            }
            guard added.insert(extra).inserted else { throw PromptError(.unknownMethod, "\(extra) given twice in '\(spec)'") }
            switch extra {
            case "npt":
                // The text terms only where the text is learned; the image-anchor term where the image
                // path has trainable prompts.
                if method.learnsText { method.terms += nptTerms }
                if method.architecture.promptsImageTower { method.terms.append(LossTerm("ia", weight: 1)) }
                method.anchors = AnchorOptions()
            default:
                // Without learned text (VPT) only the compactness term has something to train.
                method.terms += method.learnsText ? cptTerms : cptTerms.filter { $0.key == "cc" }
            }
        }
        method.name = addOns.contains(spec.lowercased()) ? "coop+\(spec.lowercased())" : spec.lowercased()
        return method
    }

    private enum CodingKeys: String, CodingKey { case name, prompt, terms, anchors, handTemplates, visualPrompt, learnsText, architecture, maple, promptsrc }

    /// Decodes methods written before `handTemplates` existed (prompt checkpoints store the method
    /// in their header): without the key, the built-in templates of the base method the name
    /// starts with (`kgcoop` in `kgcoop+npt`), so that such a checkpoint still equals the method
    /// `named(_:)` builds today and resumes.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        prompt = try c.decode(PromptConfig.self, forKey: .prompt)
        terms = try c.decode([LossTerm].self, forKey: .terms)
        anchors = try c.decodeIfPresent(AnchorOptions.self, forKey: .anchors)
        handTemplates = try c.decodeIfPresent([String: String].self, forKey: .handTemplates)
            ?? Method.bases[String(name.split(separator: "+").first ?? "")]?.handTemplates ?? [:]
        visualPrompt = try c.decodeIfPresent(VisualPromptConfig.self, forKey: .visualPrompt)
        learnsText = try c.decodeIfPresent(Bool.self, forKey: .learnsText) ?? true
        maple = try c.decodeIfPresent(MaPLeConfig.self, forKey: .maple)
        promptsrc = try c.decodeIfPresent(PromptSRCConfig.self, forKey: .promptsrc)
        let stored = try c.decodeIfPresent(ArchitectureKind.self, forKey: .architecture)
        explicitArchitecture = stored == Method.impliedArchitecture(visualPrompt: visualPrompt, learnsText: learnsText) ? nil : stored
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(prompt, forKey: .prompt)
        try c.encode(terms, forKey: .terms)
        try c.encodeIfPresent(anchors, forKey: .anchors)
        try c.encode(handTemplates, forKey: .handTemplates)
        // Written only when they differ from a text method's, so text methods' headers stay as before.
        try c.encodeIfPresent(visualPrompt, forKey: .visualPrompt)
        if !learnsText { try c.encode(learnsText, forKey: .learnsText) }
        try c.encodeIfPresent(explicitArchitecture, forKey: .architecture)
        try c.encodeIfPresent(maple, forKey: .maple)
        try c.encodeIfPresent(promptsrc, forKey: .promptsrc)
    }

    /// The run-level inputs the method's terms read (VPT's fixed classifier reads the zero-shot features).
    public var termInputs: Set<TermInput> {
        var s = Set(terms.flatMap { $0.type.needs })
        if !learnsText || anchors?.rotation == .aligned || s.contains(.clusters) { s.insert(.zeroShot) }
        return s
    }

    /// The Gaussian prompt aggregation the method's trainer applies (PromptSRC), or nil.
    public var aggregation: GaussianPromptAggregation? { architecture == .promptsrc ? promptsrc?.aggregation : nil }

    public var needsZeroShot: Bool { termInputs.contains(.zeroShot) }
    public var needsPrototypes: Bool { termInputs.contains(.prototypes) }
}
