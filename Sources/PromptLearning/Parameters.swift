import Foundation
import TensorCore

/// The trainable tensors of a run, by name, in a fixed order (the order they were added).
///
/// Every learned piece of a method is one named tensor: the text context (`text.context`), the
/// visual prompt tokens (`visual.prompt`), later a meta-net's weights. Gradients are a
/// `ParameterSet` with the same names and shapes, and the optimiser keeps its state under the
/// same names, so adding a learned piece touches neither the optimiser nor the checkpoints.
public struct ParameterSet: Equatable, Sendable {
    public private(set) var names: [String] = []
    private var tensors: [String: Tensor] = [:]

    public init() {}

    public init(_ pairs: [(String, Tensor)]) {
        for (n, t) in pairs { self[n] = t }
    }

    /// Reading an absent name gives nil; assigning nil removes it; assigning a new name appends it.
    public subscript(name: String) -> Tensor? {
        get { tensors[name] }
        set {
            if let newValue {
                if tensors[name] == nil { names.append(name) }
                tensors[name] = newValue
            } else if tensors.removeValue(forKey: name) != nil {
                names.removeAll { $0 == name }
            }
        }
    }

    public var isEmpty: Bool { names.isEmpty }
    public var count: Int { names.count }
    public var elementCount: Int { names.reduce(0) { $0 + tensors[$1]!.count } }
    public var shapes: [String: [Int]] { tensors.mapValues(\.shape) }
    public var allFinite: Bool { tensors.values.allSatisfy { $0.data.allSatisfy(\.isFinite) } }

    /// Zero tensors with the same names and shapes.
    public var zeros: ParameterSet { ParameterSet(names.map { ($0, Tensor(zeros: tensors[$0]!.shape)) }) }

    /// Largest |a - b| over every tensor, relative to the largest |b| of that tensor (worst name).
    public func worstRelativeDifference(to other: ParameterSet) -> (name: String, value: Float) {
        var worst = ("", Float(0))
        for n in names {
            guard let a = tensors[n], let b = other[n], a.shape == b.shape else { return (n, .infinity) }
            var diff: Float = 0, scale: Float = 0
            for i in 0..<a.count { diff = max(diff, abs(a[i] - b[i])); scale = max(scale, abs(b[i])) }
            let r = diff / max(scale, 1e-30)
            if r > worst.1 { worst = (n, r) }
        }
        return worst
    }
}

/// The names PromptTune gives its learned tensors (checkpoints, traces, golden files).
public enum ParameterName {
    /// M x D (shared) or K x M x D (class-specific) text context.
    public static let textContext = "text.context"
    /// N x W visual prompt tokens inserted after the image tower's ln_pre.
    public static let visualPrompt = "visual.prompt"
}

/// SGD with momentum over named parameters: PyTorch's step (see `sgdStep`; `sgdStepHalf` for
/// fp16-reference training), one momentum buffer per name, created at the parameter's first step.
public struct SGDState: Equatable, Sendable {
    public var momentum = ParameterSet()
    public init() {}

    public mutating func step(_ params: inout ParameterSet, gradients: ParameterSet, lr: Double, config: OptimizerConfig,
                              precision: TrainingPrecision = .fp32) {
        for name in params.names {
            guard let g = gradients[name] else { continue }
            var p = params[name]!
            var buffer = momentum[name]
            switch precision {
            case .fp32: sgdStep(&p, gradient: g, momentumBuffer: &buffer, lr: lr, config: config)
            case .fp16Reference: sgdStepHalf(&p, gradient: g, momentumBuffer: &buffer, lr: lr, config: config)
            }
            params[name] = p
            momentum[name] = buffer
        }
    }
}
