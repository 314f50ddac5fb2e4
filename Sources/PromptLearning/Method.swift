import Foundation

/// One weighted loss term a method adds to the cross-entropy.
public enum LossTerm: Codable, Equatable, Sendable {
    /// KgCoOp: w * (1 - mean_k cos(t_k, t_k^zs)).
    case knowledgeConsistency(weight: Float)
    /// DAPT's text side: beta_t * mean_{i<j} exp(-tau ||t_i - t_j||^2).
    case interClassDispersion(weight: Float, tau: Float)
    /// NPT: lambda_lc * mean_k (1 - t_k . e_k).
    case languageCollapse(weight: Float)
    /// NPT: lambda_mi * mean_k (1 - cos(t_k, p_k)).
    case modalityIsomorphism(weight: Float)

    /// Short key used in progress lines, logs and golden files.
    public var key: String {
        switch self {
        case .knowledgeConsistency: return "kg"
        case .interClassDispersion: return "inter"
        case .languageCollapse: return "lc"
        case .modalityIsomorphism: return "mi"
        }
    }

    public var weight: Float {
        switch self {
        case .knowledgeConsistency(let w), .interClassDispersion(let w, _), .languageCollapse(let w), .modalityIsomorphism(let w): return w
        }
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

    public init(name: String, prompt: PromptConfig, terms: [LossTerm] = [], anchors: AnchorOptions? = nil,
                handTemplates: [String: String] = [:]) {
        self.name = name; self.prompt = prompt; self.terms = terms; self.anchors = anchors
        self.handTemplates = handTemplates
    }

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
                                      terms: [.knowledgeConsistency(weight: 8)],
                                      handTemplates: ["dtd": "a photo of a {}, a type of texture."])
    /// DAPT's text prompt and inter-class dispersion; its visual prompt and intra-class term need
    /// image-side prompts (a later milestone). beta_t defaults to DAPT's most common 0.01. DAPT's
    /// `trainers/dapt.py` (mlvlab/DAPT) has no hand templates of its own, so none are set.
    public static let daptText = Method(name: "dapt-text", prompt: PromptConfig(contextLength: 16),
                                        terms: [.interClassDispersion(weight: 0.01, tau: 2)])

    /// NPT's default weights (our reconstruction's defaults).
    public static let nptTerms: [LossTerm] = [.languageCollapse(weight: 1), .modalityIsomorphism(weight: 1)]

    public static let bases: [String: Method] = ["coop": coop, "coop-csc": coopCSC, "kgcoop": kgcoop, "dapt-text": daptText]

    /// "coop", "kgcoop", "npt" (= coop+npt), "coop+npt", "kgcoop+npt", "coop-csc+npt", "dapt-text+npt".
    public static func named(_ spec: String) throws -> Method {
        let parts = spec.lowercased().split(separator: "+").map(String.init)
        let known = (bases.keys.sorted() + ["npt"]).joined(separator: ", ")
        guard let first = parts.first else { throw PromptError("empty method name; choose from \(known), optionally joined with +npt") }
        var method: Method
        var rest = parts.dropFirst()
        if first == "npt" {
            method = coop
            rest = parts[...]
        } else if let base = bases[first] {
            method = base
        } else {
            throw PromptError("unknown method '\(first)'; choose from \(known), optionally joined with +npt (e.g. coop+npt)")
        }
        for extra in rest {
            guard extra == "npt" else { throw PromptError("'\(extra)' cannot be added to a method; only +npt composes (e.g. kgcoop+npt)") }
            guard method.anchors == nil else { throw PromptError("npt given twice in '\(spec)'") }
            method.terms += nptTerms
            method.anchors = AnchorOptions()
        }
        method.name = spec.lowercased() == "npt" ? "coop+npt" : spec.lowercased()
        return method
    }

    private enum CodingKeys: String, CodingKey { case name, prompt, terms, anchors, handTemplates }

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
    }

    public var needsZeroShot: Bool {
        terms.contains { if case .knowledgeConsistency = $0 { return true }; return false } || anchors?.rotation == .aligned
    }
    public var needsPrototypes: Bool { terms.contains { if case .modalityIsomorphism = $0 { return true }; return false } }
}
