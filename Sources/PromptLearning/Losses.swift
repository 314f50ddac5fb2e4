import Foundation
import TensorCore

// Loss terms as small pure functions: each returns its value and its gradient with respect to
// its tensor input (text features unless said otherwise). Values are accumulated in Double.

/// Mean cross-entropy of logits B x K against labels, and dLoss/dLogits.
public func crossEntropy(logits: Tensor, labels: [Int]) -> (value: Double, dLogits: Tensor) {
    let (b, k) = (logits.shape[0], logits.shape[1])
    precondition(labels.count == b, "crossEntropy: \(labels.count) labels for \(b) rows")
    var loss = 0.0
    var grad = Tensor(zeros: logits.shape)
    for i in 0..<b {
        let row = (0..<k).map { Double(logits[i * k + $0]) }
        let mx = row.max() ?? 0
        let z = row.reduce(0) { $0 + exp($1 - mx) }
        loss += (mx + log(z) - row[labels[i]]) / Double(b)
        for j in 0..<k {
            grad[i * k + j] = Float((exp(row[j] - mx) / z - (j == labels[i] ? 1 : 0)) / Double(b))
        }
    }
    return (loss, grad)
}

/// Cosine of each row pair of a and b (N x D), with the gradient of sum_n w_n cos_n w.r.t. a.
func rowCosines(_ a: Tensor, _ b: Tensor, weights w: [Double]) -> (cos: [Double], dA: Tensor) {
    let (n, d) = (a.rows, a.lastDim)
    var cos = [Double](repeating: 0, count: n)
    var dA = Tensor(zeros: a.shape)
    for i in 0..<n {
        var ab = 0.0, aa = 0.0, bb = 0.0
        for x in 0..<d {
            let (u, v) = (Double(a[i * d + x]), Double(b[i * d + x]))
            ab += u * v; aa += u * u; bb += v * v
        }
        let (na, nb) = (max(aa.squareRoot(), 1e-12), max(bb.squareRoot(), 1e-12))
        cos[i] = ab / (na * nb)
        for x in 0..<d {
            let g = Double(b[i * d + x]) / (na * nb) - cos[i] * Double(a[i * d + x]) / (na * na)
            dA[i * d + x] = Float(w[i] * g)
        }
    }
    return (cos, dA)
}

/// KgCoOp's consistency: 1 - mean_k cos(t_k, z_k) with z the zero-shot features of the hand template.
public func knowledgeConsistency(text t: Tensor, zeroShot z: Tensor) -> (value: Double, dText: Tensor) {
    let k = t.rows
    let (cos, grad) = rowCosines(t, z, weights: Array(repeating: -1 / Double(k), count: k))
    return (1 - cos.reduce(0, +) / Double(k), grad)
}

/// NPT's language-modality collapse: mean_k (1 - t_k . e_k), t normalised text features, e anchors.
public func languageCollapse(text t: Tensor, anchors e: Tensor) -> (value: Double, dText: Tensor) {
    let (k, d) = (t.rows, t.lastDim)
    var sum = 0.0
    for i in 0..<(k * d) { sum += Double(t[i]) * Double(e[i]) }
    return (1 - sum / Double(k), e * (-1 / Float(k)))
}

/// NPT's multi-modality isomorphism: mean_k (1 - cos(t_k, p_k)) with p_k the class prototypes.
public func modalityIsomorphism(text t: Tensor, prototypes p: Tensor) -> (value: Double, dText: Tensor) {
    let k = t.rows
    let (cos, grad) = rowCosines(t, p, weights: Array(repeating: -1 / Double(k), count: k))
    return (1 - cos.reduce(0, +) / Double(k), grad)
}

/// DAPT's inter-class dispersion of text features: mean over pairs i < j of exp(-tau ||t_i - t_j||^2).
public func interClassDispersion(text t: Tensor, tau: Float) -> (value: Double, dText: Tensor) {
    let (k, d) = (t.rows, t.lastDim)
    guard k > 1 else { return (0, Tensor(zeros: t.shape)) }
    let pairs = Double(k * (k - 1) / 2)
    var value = 0.0
    var grad = [Double](repeating: 0, count: k * d)
    for i in 0..<k {
        for j in (i + 1)..<k {
            var sq = 0.0
            for x in 0..<d { let diff = Double(t[i * d + x]) - Double(t[j * d + x]); sq += diff * diff }
            let e = exp(-Double(tau) * sq)
            value += e / pairs
            let coef = -2 * Double(tau) * e / pairs
            for x in 0..<d {
                let diff = Double(t[i * d + x]) - Double(t[j * d + x])
                grad[i * d + x] += coef * diff
                grad[j * d + x] -= coef * diff
            }
        }
    }
    return (value, Tensor(shape: t.shape, data: grad.map(Float.init)))
}

/// Scaled cosine logits of normalised image features f (B x D) against normalised text t (K x D).
public func clipLogits(image f: Tensor, text t: Tensor, scale: Float) -> Tensor {
    matmul(f, t, transB: true) * scale
}

/// DeKg's HSIC (cnunlp/DeKg `trainers/loss.py` `HSICLoss`, the biased estimator without the
/// 1/(K-1)^2 factor): each K x D matrix is divided by its Frobenius norm, A = T/||T||_F,
/// B = Z/||Z||_F, and HSIC = tr(H A A^T H B B^T) with H = I - 11^T/K. DeKg passes the row-normalised
/// learned and zero-shot text features. With C = H B B^T H (symmetric), HSIC = <A, C A> and
/// dHSIC/dA = 2 C A; through the Frobenius scaling dT = (dA - A <A, dA>) / ||T||_F.
public func hsic(text t: Tensor, zeroShot z: Tensor) -> (value: Double, dText: Tensor) {
    precondition(t.shape == z.shape && t.rank == 2, "hsic: text \(t.shape) and zero-shot \(z.shape) must be the same K x D")
    let (k, d) = (t.rows, t.lastDim)
    func frobenius(_ x: Tensor) -> Double { max(x.data.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot(), 1e-12) }
    let (nt, nz) = (frobenius(t), frobenius(z))
    let a = t * Float(1 / nt)
    // Bc = H B: the scaled zero-shot rows minus their mean row; C = Bc Bc^T.
    var mean = [Double](repeating: 0, count: d)
    for i in 0..<k { for x in 0..<d { mean[x] += Double(z[i * d + x]) / nz / Double(k) } }
    var bc = Tensor(zeros: [k, d])
    for i in 0..<k { for x in 0..<d { bc[i * d + x] = Float(Double(z[i * d + x]) / nz - mean[x]) } }
    let c = matmul(bc, bc, transB: true)          // K x K
    let ca = matmul(c, a)                          // K x D
    var value = 0.0
    for i in 0..<(k * d) { value += Double(a[i]) * Double(ca[i]) }
    // dA = 2 C A; <A, dA> = 2 value.
    var grad = Tensor(zeros: t.shape)
    for i in 0..<(k * d) { grad[i] = Float((2 * Double(ca[i]) - Double(a[i]) * 2 * value) / nt) }
    return (value, grad)
}
