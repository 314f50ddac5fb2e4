import Foundation
import TensorCore
import TensorIO

/// Accuracy and macro-F1 of classifying image features by their nearest text feature.
public struct EvaluationResult: Codable, Equatable, Sendable {
    public var count: Int
    public var accuracy: Double
    /// The mean of the per-class F1 over the classes present in the labels (Dassl's evaluator:
    /// sklearn's `f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))`). A class
    /// that is predicted but never a label does not enter the mean (its F1 would be 0); the images
    /// wrongly given to it still lower the recall, and so the F1, of their true classes.
    public var macroF1: Double
    /// Accuracy (recall) of each class present in the labels.
    public var perClassAccuracy: [String: Double]
}

/// images: N x E (any scale), labels: N in 0..<K, text: K x E.
public func evaluate(images: Tensor, labels: [Int], text: Tensor, classNames: [String]) -> EvaluationResult {
    let f = L2Normalize.forward(images).0, t = L2Normalize.forward(text).0
    let scores = matmul(f, t, transB: true)
    let k = t.rows
    var tp = [Int](repeating: 0, count: k), predicted = [Int](repeating: 0, count: k), actual = [Int](repeating: 0, count: k)
    for (i, y) in labels.enumerated() {
        var best = 0
        for j in 1..<k where scores[i * k + j] > scores[i * k + best] { best = j }
        predicted[best] += 1
        actual[y] += 1
        if best == y { tp[y] += 1 }
    }
    let correct = tp.reduce(0, +)
    // Macro-F1 over the classes present in the labels, as Dassl's evaluator computes it
    // (`labels=np.unique(y_true)`): F1_c = 2 TP_c / (|labelled c| + |predicted c|).
    var f1s: [Double] = []
    for c in 0..<k where actual[c] > 0 {
        f1s.append(2 * Double(tp[c]) / Double(actual[c] + predicted[c]))
    }
    var perClass: [String: Double] = [:]
    for c in 0..<k where actual[c] > 0 { perClass[classNames[c]] = Double(tp[c]) / Double(actual[c]) }
    return EvaluationResult(count: labels.count, accuracy: Double(correct) / Double(max(1, labels.count)),
                            macroF1: f1s.isEmpty ? 0 : f1s.reduce(0, +) / Double(f1s.count), perClassAccuracy: perClass)
}
