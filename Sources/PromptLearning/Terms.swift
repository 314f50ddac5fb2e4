import Foundation
import TensorCore

/// A fixed input a loss term needs, computed once per run by the trainer.
public enum TermInput: String, Hashable, Sendable {
    /// K x D normalised zero-shot text features of the hand template.
    case zeroShot
    /// K x D NPT anchors (rows e_k).
    case anchors
    /// K x D class prototypes of the normalised image features (not re-normalised).
    case prototypes
    /// K x D normalised mean of the frozen tower's text features over a list of templates
    /// (PromptSRC's 60 ImageNet templates, `ImageNetTemplates.all`).
    case templateEnsemble
    /// B x D normalised features of the batch's images through the frozen, unprompted image tower.
    /// Unlike the others a per-batch input: the trainer computes it for every batch (no gradient)
    /// and sets `TermInputs.frozenImages` before the objective.
    case frozenImages
    /// K cluster labels of the classes: CPT's seeded K-means on the zero-shot features (options
    /// from the `tetf` term's parameters).
    case clusters
    /// K training-image counts per class (images, not cached views).
    case classCounts
}

/// What every term sees on one batch.
public struct TermArguments {
    /// K x D normalised text features.
    public var text: Tensor
    /// B x D normalised image features of the batch.
    public var images: Tensor
    public var labels: [Int]
    public var inputs: TermInputs
    /// CLIP's logit scale (exp of the learned log-scale), for terms on the logits.
    public var logitScale: Float = 100
}

/// A term's unweighted value and its gradients: to the normalised text features and, for the
/// terms that read them, to the normalised image features.
public struct TermResult {
    public var value: Double
    public var dText: Tensor?
    public var dImages: Tensor?
    public init(value: Double, dText: Tensor? = nil, dImages: Tensor? = nil) {
        self.value = value; self.dText = dText; self.dImages = dImages
    }
}

/// A number a loss term reads besides its weight (DAPT's RBF temperature `tau`), declared by the
/// term's type: its name (in `term_parameters` and `--term KEY.NAME=VALUE`), default and valid range.
public struct TermParameter: Sendable, Equatable {
    public var name: String
    public var defaultValue: Float
    /// Valid values: finite, at least (or, when `minimumExclusive`, above) `minimum`, at most `maximum`.
    public var minimum: Float
    public var minimumExclusive: Bool
    public var maximum: Float
    public var help: String
    /// The key `term_weights` took for this parameter before `term_parameters` existed (DAPT's
    /// `tau`): still read there, as this parameter.
    public var legacyWeightKey: String?

    public init(_ name: String, default defaultValue: Float, minimum: Float = 0, minimumExclusive: Bool = false,
                maximum: Float = .greatestFiniteMagnitude, help: String, legacyWeightKey: String? = nil) {
        self.name = name; self.defaultValue = defaultValue; self.minimum = minimum; self.minimumExclusive = minimumExclusive
        self.maximum = maximum; self.help = help; self.legacyWeightKey = legacyWeightKey
    }

    /// What a valid value is, in words ("a finite number above 0").
    public var rangeText: String {
        let low = minimumExclusive ? "above \(plain(minimum))" : "of at least \(plain(minimum))"
        return maximum == .greatestFiniteMagnitude ? "a finite number \(low)" : "a finite number \(low) and at most \(plain(maximum))"
    }

    /// Why `value` is no valid value of this parameter, or nil.
    public func problem(_ value: Double) -> String? {
        let ok = value.isFinite && (minimumExclusive ? value > Double(minimum) : value >= Double(minimum)) && value <= Double(maximum)
        return ok ? nil : "must be \(rangeText) (got \(value))"
    }

    /// A term's weight: finite and at least 0.
    public static let weight = TermParameter("weight", default: 1, help: "the term's weight in the loss")

    private func plain(_ x: Float) -> String { x == x.rounded() && abs(x) < 1e9 ? String(Int(x)) : "\(x)" }
}

/// One loss term a method adds to the cross-entropy: its key, serialised name, parameters, inputs,
/// validation and kernel, in one type. A new term is this type plus its row in `LossTerms.table`
/// (and, to be on by default, in a method's `terms`); plans (`term_weights`, `term_parameters`),
/// `--term KEY.PARAM=VALUE`, checkpoints and the trainer take it from there.
public protocol ObjectiveTerm: Sendable {
    /// Short key: progress lines, logs, golden files, plans and `--term` ("kg", "inter").
    static var key: String { get }
    /// The name checkpoints store the term under (`{"interClassDispersion": {...}}`).
    static var codingName: String { get }
    /// The parameters it reads besides its weight (none by default).
    static var parameters: [TermParameter] { get }
    /// The run-level inputs the term reads.
    static var needs: Set<TermInput> { get }
    /// Whether the term reads the image features (then it has an image gradient and needs
    /// trainable image prompts).
    static var readsImages: Bool { get }
    /// Why a weight and parameter values cannot train, beyond each value's declared range (nil by default).
    static func problem(weight: Float, parameters: [String: Float]) -> String?
    /// The kernel with every declared parameter's value.
    init(parameters: [String: Float])
    func evaluate(_ a: TermArguments) -> TermResult
}

extension ObjectiveTerm {
    public static var parameters: [TermParameter] { [] }
    public static var readsImages: Bool { false }
    public static func problem(weight: Float, parameters: [String: Float]) -> String? { nil }
}

/// The loss terms PromptTune knows, by key: one row per term type.
public enum LossTerms {
    /// The built-in terms.
    public static let builtIn: [any ObjectiveTerm.Type] = [
        KnowledgeConsistencyTerm.self,
        HSICTerm.self,
        InterClassDispersionTerm.self,
        LanguageCollapseTerm.self,
        ModalityIsomorphismTerm.self,
        IntraClassDispersionTerm.self,
        ImageAnchorCollapseTerm.self,
        TextConsistencyL1Term.self,
        ImageConsistencyL1Term.self,
        LogitDistillationTerm.self,
        WithinClusterETFTerm.self,
        ClassBalancedCompactnessTerm.self,
        FrozenTextL1Term.self,
    ]

    private static let lock = NSLock()
    nonisolated(unsafe) private static var added: [any ObjectiveTerm.Type] = []

    /// Adds a term type from outside this module (an extension, a test). A key or coding name
    /// already in the table is refused.
    public static func register(_ type: any ObjectiveTerm.Type) {
        lock.lock(); defer { lock.unlock() }
        if (builtIn + added).contains(where: { $0.key == type.key || $0.codingName == type.codingName }) {
            if added.contains(where: { $0 == type }) { return }
            preconditionFailure("loss term '\(type.key)' (\(type.codingName)) is already in LossTerms.table")
        }
        added.append(type)
    }

    /// Every term: the built-in ones, then the registered ones.
    public static var table: [any ObjectiveTerm.Type] {
        lock.lock(); defer { lock.unlock() }
        return builtIn + added
    }

    public static func type(_ key: String) -> (any ObjectiveTerm.Type)? { table.first { $0.key == key } }
}

extension LossTerm {
    /// The kernel this term stands for, with its parameter values.
    public var term: any ObjectiveTerm { type.init(parameters: parameters) }

    /// Why this term cannot train (a weight or parameter out of its declared range, or the type's
    /// own check), or nil.
    public var problem: String? {
        if let p = TermParameter.weight.problem(Double(weight)) { return "the weight of loss term '\(key)' \(p)" }
        for d in type.parameters {
            if let p = d.problem(Double(parameters[d.name] ?? d.defaultValue)) { return "parameter \(d.name) of loss term '\(key)' \(p)" }
        }
        return type.problem(weight: weight, parameters: parameters)
    }
}

/// KgCoOp: w * (1 - mean_k cos(t_k, t_k^zs)).
public struct KnowledgeConsistencyTerm: ObjectiveTerm {
    public static let key = "kg", codingName = "knowledgeConsistency"
    public static var needs: Set<TermInput> { [.zeroShot] }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = knowledgeConsistency(text: a.text, zeroShot: a.inputs.zeroShot!)
        return TermResult(value: v, dText: g)
    }
}

/// DeKg: w2 * HSIC(T, T_zs) between the normalised learned and zero-shot text features
/// (cnunlp/DeKg `trainers/loss.py`; `hsic`).
public struct HSICTerm: ObjectiveTerm {
    public static let key = "hsic", codingName = "hsicIndependence"
    public static var needs: Set<TermInput> { [.zeroShot] }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = hsic(text: a.text, zeroShot: a.inputs.zeroShot!)
        return TermResult(value: v, dText: g)
    }
}

/// DAPT's text side: beta_t * mean_{i<j} exp(-tau ||t_i - t_j||^2).
public struct InterClassDispersionTerm: ObjectiveTerm {
    public static let key = "inter", codingName = "interClassDispersion"
    public static let parameters = [TermParameter("tau", default: 2, minimumExclusive: true, help: "DAPT's RBF temperature",
                                                  legacyWeightKey: "tau")]
    public static var needs: Set<TermInput> { [] }
    public var tau: Float
    public init(parameters: [String: Float]) { tau = parameters["tau"]! }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = interClassDispersion(text: a.text, tau: tau)
        return TermResult(value: v, dText: g)
    }
}

/// NPT: lambda_lc * mean_k (1 - t_k . e_k).
public struct LanguageCollapseTerm: ObjectiveTerm {
    public static let key = "lc", codingName = "languageCollapse"
    public static var needs: Set<TermInput> { [.anchors] }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = languageCollapse(text: a.text, anchors: a.inputs.anchors!)
        return TermResult(value: v, dText: g)
    }
}

/// NPT: lambda_mi * mean_k (1 - cos(t_k, p_k)).
public struct ModalityIsomorphismTerm: ObjectiveTerm {
    public static let key = "mi", codingName = "modalityIsomorphism"
    public static var needs: Set<TermInput> { [.prototypes] }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = modalityIsomorphism(text: a.text, prototypes: a.inputs.prototypes!)
        return TermResult(value: v, dText: g)
    }
}

/// DAPT's image side: beta_v * mean over B x D of (f_b - p_{y_b})^2.
public struct IntraClassDispersionTerm: ObjectiveTerm {
    public static let key = "intra", codingName = "intraClassDispersion"
    public static var needs: Set<TermInput> { [.prototypes] }
    public static var readsImages: Bool { true }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = intraClassDispersion(images: a.images, labels: a.labels, prototypes: a.inputs.prototypes!)
        return TermResult(value: v, dImages: g)
    }
}

/// NPT's image side (methods with trainable image prompts): lambda_ia * mean_b (1 - f_b . e_{y_b}).
public struct ImageAnchorCollapseTerm: ObjectiveTerm {
    public static let key = "ia", codingName = "imageAnchorCollapse"
    public static var needs: Set<TermInput> { [.anchors] }
    public static var readsImages: Bool { true }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = imageAnchorCollapse(images: a.images, labels: a.labels, anchors: a.inputs.anchors!)
        return TermResult(value: v, dImages: g)
    }
}

/// DAPT's intra-class dispersion: mean over the B x D elements of (f_b - p_{y_b})^2
/// (`F.mse_loss(image_features, prototype[label])`), f normalised image features.
public func intraClassDispersion(images f: Tensor, labels: [Int], prototypes p: Tensor) -> (value: Double, dImages: Tensor) {
    let (b, d) = (f.rows, f.lastDim)
    let n = Double(b * d)
    var value = 0.0
    var grad = Tensor(zeros: f.shape)
    for i in 0..<b {
        let y = labels[i]
        for x in 0..<d {
            let diff = Double(f[i * d + x]) - Double(p[y * d + x])
            value += diff * diff / n
            grad[i * d + x] = Float(2 * diff / n)
        }
    }
    return (value, grad)
}

/// NPT's image-anchor term: mean_b (1 - f_b . e_{y_b}), f normalised image features, e anchors.
public func imageAnchorCollapse(images f: Tensor, labels: [Int], anchors e: Tensor) -> (value: Double, dImages: Tensor) {
    let (b, d) = (f.rows, f.lastDim)
    var sum = 0.0
    var grad = Tensor(zeros: f.shape)
    for i in 0..<b {
        let y = labels[i]
        for x in 0..<d {
            sum += Double(f[i * d + x]) * Double(e[y * d + x])
            grad[i * d + x] = -e[y * d + x] / Float(b)
        }
    }
    return (1 - sum / Double(b), grad)
}

// MARK: PromptSRC's self-regularising terms (trainers/promptsrc.py `forward_backward`)

/// Mean over the elements of |x - y| and its gradient sign(x - y) / count (PyTorch's `l1_loss`
/// with reduction 'mean'; the sign of 0 is 0 as in its backward).
func meanAbsoluteDifference(_ x: Tensor, _ y: Tensor) -> (Double, Tensor) {
    precondition(x.shape == y.shape, "L1 between \(x.shape) and \(y.shape)")
    let n = x.count
    var sum = 0.0
    var g = Tensor(zeros: x.shape)
    let scale = 1 / Float(n)
    for i in 0..<n {
        let d = x[i] - y[i]
        sum += Double(abs(d))
        g[i] = d > 0 ? scale : (d < 0 ? -scale : 0)
    }
    return (sum / Double(n), g)
}

/// PromptSRC's L_SCL_text: mean over K x D of |t - t_zs|, t_zs the normalised template ensemble
/// of the frozen text tower. Weight 25 (`TEXT_LOSS_WEIGHT`).
public struct TextConsistencyL1Term: ObjectiveTerm {
    public static let key = "src_text", codingName = "promptSRCText"
    public static var needs: Set<TermInput> { [.templateEnsemble] }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = meanAbsoluteDifference(a.text, a.inputs.templateEnsemble!)
        return TermResult(value: v, dText: g)
    }
}

/// PromptSRC's L_SCL_image: mean over B x D of |f - f_zs|, f_zs the batch's normalised features
/// through the frozen, unprompted image tower. Weight 10 (`IMAGE_LOSS_WEIGHT`).
public struct ImageConsistencyL1Term: ObjectiveTerm {
    public static let key = "src_image", codingName = "promptSRCImage"
    public static var needs: Set<TermInput> { [.frozenImages] }
    public static var readsImages: Bool { true }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = meanAbsoluteDifference(a.images, a.inputs.frozenImages!)
        return TermResult(value: v, dImages: g)
    }
}

/// PromptSRC's L_SCL_logits, as its code computes it: `F.kl_div(log_softmax(z), log_softmax(z_zs),
/// reduction='sum', log_target=True) / z.numel()` = sum q (log q - log p) / (B K), the KL from the
/// prompted distribution p = softmax(z) to the zero-shot one q = softmax(z_zs), with
/// z = s f t^T and z_zs = s f_zs t_zs^T (the frozen image features and the template ensemble).
/// The gradient to z is (p - q) / (B K) (each row of q sums to 1). Weight 1.
public struct LogitDistillationTerm: ObjectiveTerm {
    public static let key = "src_kl", codingName = "promptSRCLogits"
    public static var needs: Set<TermInput> { [.templateEnsemble, .frozenImages] }
    public static var readsImages: Bool { true }
    public init(parameters: [String: Float]) {}
    public func evaluate(_ a: TermArguments) -> TermResult {
        let s = a.logitScale
        let z = matmul(a.images, a.text, transB: true) * s                                            // B x K
        let z0 = matmul(a.inputs.frozenImages!, a.inputs.templateEnsemble!, transB: true) * s         // B x K
        let (b, k) = (z.shape[0], z.shape[1])
        let n = Double(b * k)
        var value = 0.0
        var dz = Tensor(zeros: [b, k])
        for i in 0..<b {
            let row = (i * k)..<((i + 1) * k)
            let lp = logSoftmax(row.map { Double(z[$0]) }), lq = logSoftmax(row.map { Double(z0[$0]) })
            for j in 0..<k {
                let q = exp(lq[j])
                value += q * (lq[j] - lp[j])
                dz[i * k + j] = Float((exp(lp[j]) - q) / n)
            }
        }
        let dText = matmul(dz, a.images, transA: true) * s
        let dImages = matmul(dz, a.text) * s
        return TermResult(value: value / n, dText: dText, dImages: dImages)
    }

    private func logSoftmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let lse = m + log(x.reduce(0) { $0 + exp($1 - m) })
        return x.map { $0 - lse }
    }
}
