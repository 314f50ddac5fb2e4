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
    return evaluate(scores: matmul(f, t, transB: true), labels: labels, classNames: classNames)
}

/// images: N x E (any scale), labels: N in 0..<K, classified by `classifier`: shared text features,
/// or text features made for each image (in chunks of `chunk` images).
public func evaluate(images: Tensor, labels: [Int], classifier: PromptClassifier, classNames: [String],
                     chunk: Int = 64) -> EvaluationResult {
    evaluate(scores: classify(images: images, classifier: classifier, chunk: chunk).scores, labels: labels, classNames: classNames)
}

/// Cosine scores N x K of images (any scale) against a classifier, and the class text features the
/// neural-collapse measures use: the shared ones, or for a classifier made per image the mean over
/// the images of each class's L2-normalised per-image text feature (CoCoOp's classifier "on average
/// over the set"), K x E. A per-image classifier runs on `chunk` images at a time.
public func classify(images: Tensor, classifier: PromptClassifier, chunk: Int = 64) -> (scores: Tensor, text: Tensor) {
    let f = L2Normalize.forward(images).0
    switch classifier {
    case .shared(let text):
        return (matmul(f, L2Normalize.forward(text).0, transB: true), text)
    case .perImage(let make):
        let (n, e) = (f.rows, f.lastDim)
        var scores: [Float] = []
        var mean: [Double] = []
        var k = 0
        for start in stride(from: 0, to: n, by: chunk) {
            let rows = f.slice(rows: start..<min(n, start + chunk))
            let text = make(rows)
            k = text.shape[1]
            if mean.isEmpty { mean = [Double](repeating: 0, count: k * e) }
            let t = L2Normalize.forward(text.reshaped([rows.rows * k, e])).0
            for b in 0..<rows.rows {
                for c in 0..<k {
                    var dot: Float = 0
                    for x in 0..<e {
                        dot += rows[b * e + x] * t[(b * k + c) * e + x]
                        mean[c * e + x] += Double(t[(b * k + c) * e + x])
                    }
                    scores.append(dot)
                }
            }
        }
        return (Tensor(shape: [n, k], data: scores), Tensor(shape: [k, e], data: mean.map { Float($0 / Double(max(1, n))) }))
    }
}

/// Accuracy and macro-F1 from scores N x K (the highest score is the prediction).
public func evaluate(scores: Tensor, labels: [Int], classNames: [String]) -> EvaluationResult {
    let k = scores.lastDim
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
