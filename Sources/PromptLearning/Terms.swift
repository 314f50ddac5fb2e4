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
}

/// What every term sees on one batch.
public struct TermArguments {
    /// K x D normalised text features.
    public var text: Tensor
    /// B x D normalised image features of the batch.
    public var images: Tensor
    public var labels: [Int]
    public var inputs: TermInputs
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

/// One loss term a method adds to the cross-entropy. A new term is one type conforming to this
/// protocol plus its case in `LossTerm` (the serialised description) and in `LossTerm.term`.
public protocol ObjectiveTerm: Sendable {
    /// The run-level inputs the term reads.
    var needs: Set<TermInput> { get }
    /// Whether the term reads the image features (then it has an image gradient).
    var readsImages: Bool { get }
    func evaluate(_ a: TermArguments) -> TermResult
}

extension ObjectiveTerm {
    public var readsImages: Bool { false }
}

public struct KnowledgeConsistencyTerm: ObjectiveTerm {
    public var needs: Set<TermInput> { [.zeroShot] }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = knowledgeConsistency(text: a.text, zeroShot: a.inputs.zeroShot!)
        return TermResult(value: v, dText: g)
    }
}

public struct InterClassDispersionTerm: ObjectiveTerm {
    public var tau: Float
    public var needs: Set<TermInput> { [] }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = interClassDispersion(text: a.text, tau: tau)
        return TermResult(value: v, dText: g)
    }
}

public struct LanguageCollapseTerm: ObjectiveTerm {
    public var needs: Set<TermInput> { [.anchors] }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = languageCollapse(text: a.text, anchors: a.inputs.anchors!)
        return TermResult(value: v, dText: g)
    }
}

public struct ModalityIsomorphismTerm: ObjectiveTerm {
    public var needs: Set<TermInput> { [.prototypes] }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = modalityIsomorphism(text: a.text, prototypes: a.inputs.prototypes!)
        return TermResult(value: v, dText: g)
    }
}

/// DAPT's intra-class term on the image side.
public struct IntraClassDispersionTerm: ObjectiveTerm {
    public var needs: Set<TermInput> { [.prototypes] }
    public var readsImages: Bool { true }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = intraClassDispersion(images: a.images, labels: a.labels, prototypes: a.inputs.prototypes!)
        return TermResult(value: v, dImages: g)
    }
}

/// NPT's image side: image features pulled onto the anchors of their labels.
public struct ImageAnchorCollapseTerm: ObjectiveTerm {
    public var needs: Set<TermInput> { [.anchors] }
    public var readsImages: Bool { true }
    public func evaluate(_ a: TermArguments) -> TermResult {
        let (v, g) = imageAnchorCollapse(images: a.images, labels: a.labels, anchors: a.inputs.anchors!)
        return TermResult(value: v, dImages: g)
    }
}

extension LossTerm {
    /// The registration: the term type each serialised case stands for.
    public var term: any ObjectiveTerm {
        switch self {
        case .knowledgeConsistency: return KnowledgeConsistencyTerm()
        case .interClassDispersion(_, let tau): return InterClassDispersionTerm(tau: tau)
        case .languageCollapse: return LanguageCollapseTerm()
        case .modalityIsomorphism: return ModalityIsomorphismTerm()
        case .intraClassDispersion: return IntraClassDispersionTerm()
        case .imageAnchorCollapse: return ImageAnchorCollapseTerm()
        }
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
