/// Why an analysis could not run on the given inputs. Values, never command-line flags.
public enum AnalysisError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A matrix that had to be 2-D was not (`name` says which input).
    case notAMatrix(name: String, shape: [Int])
    /// Image and text features (or train and test features) have different widths.
    case dimensionMismatch(expected: Int, got: Int)
    /// The number of labels differs from the number of feature rows.
    case labelCount(labels: Int, rows: Int)
    /// A label outside 0..<classes, at position `index`.
    case labelOutOfRange(label: Int, index: Int, classes: Int)
    /// Fewer than two classes: there is no class geometry (or nothing to classify).
    case tooFewClasses(Int)
    /// A class with no images: its mean, and so every class-mean measure, is undefined.
    case emptyClass(Int)
    /// No rows to analyse or fit.
    case noData
    /// A hyper-parameter outside its domain (e.g. a non-positive inverse regularisation C).
    case invalidParameter(name: String, value: Double)

    public var description: String {
        switch self {
        case .notAMatrix(let name, let shape): return "\(name) must be a 2-D matrix, got shape \(shape)"
        case .dimensionMismatch(let e, let g): return "feature widths differ: \(e) and \(g)"
        case .labelCount(let l, let r): return "\(l) labels for \(r) feature rows"
        case .labelOutOfRange(let label, let i, let k): return "label \(label) at position \(i) is outside 0..<\(k)"
        case .tooFewClasses(let k): return "need at least 2 classes, got \(k)"
        case .emptyClass(let k): return "class \(k) has no images; its class mean is undefined (restrict the labels and text features to the classes present)"
        case .noData: return "no feature rows"
        case .invalidParameter(let name, let v): return "\(name) = \(v) is out of range"
        }
    }
}
