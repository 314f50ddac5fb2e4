import Foundation
import TensorCore
import TensorIO

/// Accuracy and macro-F1 of classifying image features by their nearest text feature.
public struct EvaluationResult: Codable, Equatable, Sendable {
    public var count: Int
    public var accuracy: Double
    public var macroF1: Double
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
    // Macro-F1 over classes present in the labels or the predictions (sklearn's convention).
    var f1s: [Double] = []
    for c in 0..<k where actual[c] + predicted[c] > 0 {
        f1s.append(2 * Double(tp[c]) / Double(actual[c] + predicted[c]))
    }
    var perClass: [String: Double] = [:]
    for c in 0..<k where actual[c] > 0 { perClass[classNames[c]] = Double(tp[c]) / Double(actual[c]) }
    return EvaluationResult(count: labels.count, accuracy: Double(correct) / Double(max(1, labels.count)),
                            macroF1: f1s.isEmpty ? 0 : f1s.reduce(0, +) / Double(f1s.count), perClassAccuracy: perClass)
}
