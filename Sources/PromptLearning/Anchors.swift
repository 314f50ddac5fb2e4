import Foundation
import TensorCore

/// How NPT's simplex ETF is oriented in feature space.
public enum AnchorRotation: String, Codable, Sendable, CaseIterable {
    /// QR of a seeded Gaussian matrix (the neural-collapse literature's standard).
    case random
    /// The orthogonal Procrustes rotation that puts each vertex closest to its class's zero-shot
    /// text feature, so anchor k keeps class k's meaning (default).
    case aligned
}

/// NPT's anchors: K unit vectors in d dimensions with pairwise cosine -1/(K-1) (a simplex
/// equiangular tight frame), as rows of a K x d tensor. For K > d + 1 no such frame exists; a
/// nearly equiangular frame is found instead (see `nearlyEquiangularFrame`) and `warning` says so.
public struct Anchors: Sendable {
    public var vectors: Tensor  // K, d
    public var warning: String?
}

/// Orthonormal basis of the vectors orthogonal to the all-ones vector: K-1 rows of length K.
func centredBasis(_ k: Int) -> [Double] {
    var rows = [Double](repeating: 0, count: (k - 1) * k)
    for i in 0..<(k - 1) {
        for j in 0..<k { rows[i * k + j] = (i == j ? 1 : 0) - 1 / Double(k) }
    }
    return LinearAlgebra.orthonormalRows(rows, k - 1, k)
}

/// E = sqrt(K/(K-1)) W B with W (d x (K-1)) orthonormal columns; returns E^T (K x d) rows.
func simplexFrame(w: [Double], d: Int, k: Int) -> [Double] {
    let b = centredBasis(k)  // (K-1) x K
    let e = LinearAlgebra.multiply(w, b, d, k - 1, k)  // d x K
    let c = (Double(k) / Double(k - 1)).squareRoot()
    var rows = [Double](repeating: 0, count: k * d)
    for i in 0..<d { for j in 0..<k { rows[j * d + i] = c * e[i * k + j] } }
    return rows
}

/// The most classes NPT's anchors are made for. Beyond d + 1 classes the nearly equiangular frame
/// iterates on K x K cosine matrices (several live at once, 300 iterations): at 16,384 classes each
/// is 1 GiB and the run takes hours, so larger class lists (a features file listing 100,000 names)
/// are refused before anything is allocated.
public let maxAnchorClasses = 16_384

/// A byte count in plain units, for messages.
func formatBytes(_ n: Int) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var v = Double(n), u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) bytes" : String(format: "%.1f %@", v, units[u])
}

/// A simplex ETF for K classes in d dimensions.
/// - zeroShot: K x d normalised zero-shot text features (needed for `.aligned`).
public func simplexETF(classes k: Int, dimension d: Int, rotation: AnchorRotation, zeroShot: Tensor?,
                       seed: UInt64) -> Anchors {
    precondition(k >= 2 && k <= maxAnchorClasses, "an ETF needs 2...\(maxAnchorClasses) classes (the trainer checks this)")
    if k > d + 1 {
        var frame = nearlyEquiangularFrame(classes: k, dimension: d, seed: seed)
        if rotation == .aligned, let z = zeroShot { frame = procrustesAlign(frame, to: z) }
        return Anchors(vectors: frame, warning: "\(k) classes exceed d + 1 = \(d + 1): no simplex ETF exists, using a nearly equiangular frame (largest pairwise cosine \(String(format: "%.4f", largestCosine(frame))) instead of \(String(format: "%.4f", -1 / Double(k - 1))))")
    }
    let w: [Double]
    switch rotation {
    case .random:
        var rng = SeededGenerator(seed: seed)
        let g = (0..<(d * (k - 1))).map { _ in Double(rng.nextNormal()) }  // d x (K-1)
        // Orthonormal columns: Gram-Schmidt on the columns (rows of the transpose).
        var gt = [Double](repeating: 0, count: d * (k - 1))
        for i in 0..<d { for j in 0..<(k - 1) { gt[j * d + i] = g[i * (k - 1) + j] } }
        let q = LinearAlgebra.orthonormalRows(gt, k - 1, d)
        var wq = [Double](repeating: 0, count: d * (k - 1))
        for i in 0..<d { for j in 0..<(k - 1) { wq[i * (k - 1) + j] = q[j * d + i] } }
        w = wq
    case .aligned:
        guard let z = zeroShot else { preconditionFailure("aligned anchors need the zero-shot text features") }
        // Maximise tr(W^T A) with A = T0^T B^T (d x (K-1)): W = A (A^T A)^(-1/2).
        let t0 = z.data.map(Double.init)  // K x d
        let b = centredBasis(k)           // (K-1) x K
        var t0t = [Double](repeating: 0, count: d * k)
        for i in 0..<k { for j in 0..<d { t0t[j * k + i] = t0[i * d + j] } }
        var bt = [Double](repeating: 0, count: k * (k - 1))
        for i in 0..<(k - 1) { for j in 0..<k { bt[j * (k - 1) + i] = b[i * k + j] } }
        let a = LinearAlgebra.multiply(t0t, bt, d, k, k - 1)  // d x (K-1)
        w = a.timesInverseSquareRootOfGram(rows: d, cols: k - 1)
    }
    return Anchors(vectors: Tensor(shape: [k, d], data: simplexFrame(w: w, d: d, k: k).map(Float.init)), warning: nil)
}

extension Array where Element == Double {
    /// For a (rows x cols) matrix A of full column rank: A (A^T A)^(-1/2), the orthonormal factor of
    /// its polar decomposition (the Procrustes solution).
    func timesInverseSquareRootOfGram(rows r: Int, cols c: Int) -> [Double] {
        var at = [Double](repeating: 0, count: r * c)
        for i in 0..<r { for j in 0..<c { at[j * r + i] = self[i * c + j] } }
        let g = LinearAlgebra.multiply(at, self, c, r, c)
        let (vals, vecs) = LinearAlgebra.symmetricEigen(g, n: c)
        let top = vals.max() ?? 1
        var inv = [Double](repeating: 0, count: c * c)  // V diag(1/sqrt(l)) V^T, ignoring null directions
        for p in 0..<c where vals[p] > 1e-12 * top {
            let s = 1 / vals[p].squareRoot()
            for i in 0..<c { for j in 0..<c { inv[i * c + j] += vecs[i * c + p] * s * vecs[j * c + p] } }
        }
        return LinearAlgebra.multiply(self, inv, r, c, c)
    }
}

/// Rotates the rows of `frame` (K x d) by the orthogonal d x d matrix that brings them closest to `target`.
func procrustesAlign(_ frame: Tensor, to target: Tensor) -> Tensor {
    let (k, d) = (frame.rows, frame.lastDim)
    let f = frame.data.map(Double.init), t = target.data.map(Double.init)
    var ft = [Double](repeating: 0, count: d * k)
    for i in 0..<k { for j in 0..<d { ft[j * k + i] = f[i * d + j] } }
    let m = LinearAlgebra.multiply(ft, t, d, k, d)  // F^T T: d x d
    let r = m.timesInverseSquareRootOfGram(rows: d, cols: d)
    return Tensor(shape: [k, d], data: LinearAlgebra.multiply(f, r, k, d, d).map(Float.init))
}

func largestCosine(_ frame: Tensor) -> Double {
    let g = matmul(frame, frame, transB: true)
    let k = frame.rows
    var mx = -1.0
    for i in 0..<k { for j in 0..<k where i != j { mx = max(mx, Double(g[i * k + j])) } }
    return mx
}

nonisolated(unsafe) private var frameCache: [String: Tensor] = [:]
private let frameCacheLock = NSLock()

/// K > d + 1 unit vectors whose largest pairwise cosine is made small: projected gradient descent
/// on a soft maximum (log-sum-exp) of the pairwise cosines, its temperature annealed from 10 to 200
/// and its step (normalised, on the sphere's tangent) decaying linearly, from a seeded start.
/// Cached per (K, d, seed) for the life of the process.
public func nearlyEquiangularFrame(classes k: Int, dimension d: Int, seed: UInt64, iterations: Int = 300) -> Tensor {
    let key = "\(k)x\(d)@\(seed)"
    frameCacheLock.lock()
    if let cached = frameCache[key] { frameCacheLock.unlock(); return cached }
    frameCacheLock.unlock()
    var rng = SeededGenerator(seed: seed)
    var x = L2Normalize.forward(.randomNormal([k, d], using: &rng)).0
    for it in 0..<iterations {
        let beta = Float(10 * pow(20.0, Double(it) / Double(max(1, iterations - 1))))
        var w = matmul(x, x, transB: true)  // K x K cosines
        var mx: Float = -.infinity
        for i in 0..<k { for j in 0..<k where i != j { mx = max(mx, w[i * k + j]) } }
        var z: Float = 0
        for i in 0..<k { for j in 0..<k {
            let e = i == j ? 0 : exp(beta * (w[i * k + j] - mx))
            w[i * k + j] = e
            z += e
        } }
        // Gradient of the soft maximum w.r.t. x_i: 2 sum_j w_ij x_j / z, then onto the tangent.
        var grad = matmul(w, x) * (2 / z)
        for i in 0..<k {
            var dot: Float = 0
            for c in 0..<d { dot += grad[i * d + c] * x[i * d + c] }
            for c in 0..<d { grad[i * d + c] -= dot * x[i * d + c] }
        }
        let scale = grad.maxAbs + 1e-12
        let step = 0.05 * (1 - Float(it) / Float(iterations)) / scale
        x = L2Normalize.forward(x + grad * -step).0
    }
    frameCacheLock.lock()
    frameCache[key] = x
    frameCacheLock.unlock()
    return x
}

/// Class prototypes: per class the mean of the L2-normalised features (not re-normalised).
public func classPrototypes(features: Tensor, labels: [Int], classes k: Int) -> Tensor {
    let (n, d) = (features.rows, features.lastDim)
    let f = L2Normalize.forward(features).0
    var sums = [Double](repeating: 0, count: k * d)
    var counts = [Int](repeating: 0, count: k)
    for i in 0..<n {
        counts[labels[i]] += 1
        for x in 0..<d { sums[labels[i] * d + x] += Double(f[i * d + x]) }
    }
    return Tensor(shape: [k, d], data: (0..<(k * d)).map { Float(sums[$0] / Double(max(1, counts[$0 / d]))) })
}
