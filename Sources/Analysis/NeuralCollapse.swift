import Foundation
import TensorCore

// Neural-collapse measures of image and text features (METHODS.md section 6). Everything is
// accumulated in Double. Notation: h_i unit image features with labels y_i in 0..<K, t_k unit text
// features; mu_k = mean of h_i over class k; mu_G = (1/K) sum_k mu_k (mean of class means, so
// imbalance does not tilt it); M = [mu_k - mu_G] (d x K); T_c = [t_k - (1/K) sum_j t_j] (K x d).

/// NC2 geometry of K centred class vectors v_k against a simplex equiangular tight frame.
public struct ClassGeometry: Codable, Equatable, Sendable {
    /// std_k ||v_k|| / mean_k ||v_k|| (population std; 0 when every v_k is zero).
    public var equinorm: Double
    /// Population std over pairs k < k' of cos(v_k, v_k').
    public var equiangularity: Double
    /// mean over pairs k < k' of |cos(v_k, v_k') + 1/(K-1)|.
    public var maxAngle: Double
    /// || G/||G||_F - (I - 11^T/K)/sqrt(K-1) ||_F with G_kk' = v_k . v_k'.
    public var etfError: Double

    public init(equinorm: Double, equiangularity: Double, maxAngle: Double, etfError: Double) {
        self.equinorm = equinorm; self.equiangularity = equiangularity; self.maxAngle = maxAngle; self.etfError = etfError
    }

    enum CodingKeys: String, CodingKey {
        case equinorm, equiangularity, maxAngle = "max_angle", etfError = "etf_error"
    }

    /// The four measures of `vectors` (K >= 2 rows of equal length). A zero vector has cosine 0
    /// with every other; an all-zero set has G/||G||_F = 0 and equinorm 0.
    public static func measure(_ vectors: [[Double]]) throws -> ClassGeometry {
        let k = vectors.count
        guard k >= 2 else { throw AnalysisError.tooFewClasses(k) }
        let gram = vectors.map { a in vectors.map { b in dot(a, b) } }
        let norms = (0..<k).map { gram[$0][$0].squareRoot() }
        let meanNorm = norms.reduce(0, +) / Double(k)
        let stdNorm = (norms.reduce(0) { $0 + ($1 - meanNorm) * ($1 - meanNorm) } / Double(k)).squareRoot()
        var cosines: [Double] = []
        for a in 0..<k { for b in (a + 1)..<k {
            cosines.append(norms[a] > 0 && norms[b] > 0 ? gram[a][b] / (norms[a] * norms[b]) : 0)
        } }
        let meanCos = cosines.reduce(0, +) / Double(cosines.count)
        let stdCos = (cosines.reduce(0) { $0 + ($1 - meanCos) * ($1 - meanCos) } / Double(cosines.count)).squareRoot()
        let target = -1 / Double(k - 1)
        let maxAngle = cosines.reduce(0) { $0 + abs($1 - target) } / Double(cosines.count)
        let gramNorm = gram.joined().reduce(0) { $0 + $1 * $1 }.squareRoot()
        let scale = (Double(k - 1)).squareRoot()
        var etf = 0.0
        for a in 0..<k { for b in 0..<k {
            let frame = ((a == b ? 1 : 0) - 1 / Double(k)) / scale
            let g = gramNorm > 0 ? gram[a][b] / gramNorm : 0
            etf += (g - frame) * (g - frame)
        } }
        return ClassGeometry(equinorm: meanNorm > 0 ? stdNorm / meanNorm : 0, equiangularity: stdCos,
                             maxAngle: maxAngle, etfError: etf.squareRoot())
    }
}

/// The image side: within-class variability (NC1) and the class means' geometry (NC2).
public struct ImageCollapse: Codable, Equatable, Sendable {
    /// tr(S_W S_B^+) / K.
    public var nc1: Double
    public var equinorm: Double
    public var equiangularity: Double
    public var maxAngle: Double
    public var etfError: Double

    public init(nc1: Double, geometry g: ClassGeometry) {
        self.nc1 = nc1; equinorm = g.equinorm; equiangularity = g.equiangularity; maxAngle = g.maxAngle; etfError = g.etfError
    }

    /// The NC2 part alone.
    public var geometry: ClassGeometry {
        ClassGeometry(equinorm: equinorm, equiangularity: equiangularity, maxAngle: maxAngle, etfError: etfError)
    }

    enum CodingKeys: String, CodingKey {
        case nc1, equinorm, equiangularity, maxAngle = "max_angle", etfError = "etf_error"
    }
}

/// Every neural-collapse measure of one set of image features against one classifier of text
/// features. Encodes as {"image": {nc1, equinorm, equiangularity, max_angle, etf_error},
/// "text": {equinorm, equiangularity, max_angle, etf_error}, "nc3", "nc4", "accuracy"}, and
/// "cluster_etf_error" where class clusters were given (CPT).
public struct NeuralCollapseReport: Codable, Equatable, Sendable {
    /// NC1 and NC2 of the class means (vectors: the columns of M).
    public var image: ImageCollapse
    /// NC2 of the centred text features (vectors: the rows of T_c).
    public var text: ClassGeometry
    /// || T_c/||T_c||_F - M^T/||M||_F ||_F: text-to-image self-duality.
    public var nc3: Double
    /// Fraction of images with argmax_k t_k . h_i == argmin_k ||h_i - mu_k||.
    public var nc4: Double
    /// Fraction of images with argmax_k t_k . h_i == y_i.
    public var accuracy: Double
    /// The text features' within-cluster ETF error (`withinClusterETFError`), where the classes'
    /// clusters were given and at least one has two classes; absent otherwise (and in records
    /// written before it existed).
    public var clusterETFError: Double?

    public init(image: ImageCollapse, text: ClassGeometry, nc3: Double, nc4: Double, accuracy: Double, clusterETFError: Double? = nil) {
        self.image = image; self.text = text; self.nc3 = nc3; self.nc4 = nc4; self.accuracy = accuracy
        self.clusterETFError = clusterETFError
    }

    enum CodingKeys: String, CodingKey {
        case image, text, nc3, nc4, accuracy, clusterETFError = "cluster_etf_error"
    }

    /// Relative cut-off of the pseudo-inverse: eigenvalues of M^T M at most this times the largest
    /// count as zero (S_B has rank <= min(d, K-1); its null directions must not be inverted).
    public static let pseudoInverseTolerance = 1e-10

    /// Measures `images` (N x d, any scale; normalised here) with `labels` (N, in 0..<K) against
    /// `text` (K x d, any scale; normalised here). Every class needs at least one image
    /// (`AnalysisError.emptyClass` otherwise) and K >= 2. Ties in an argmax/argmin go to the
    /// lowest class index. With `clusters` (a cluster index per class), the within-cluster ETF
    /// error of the text features too.
    public static func measure(images: Tensor, labels: [Int], text: Tensor, clusters: [Int]? = nil) throws -> NeuralCollapseReport {
        guard images.rank == 2 else { throw AnalysisError.notAMatrix(name: "images", shape: images.shape) }
        guard text.rank == 2 else { throw AnalysisError.notAMatrix(name: "text", shape: text.shape) }
        let (n, d, k) = (images.shape[0], images.shape[1], text.shape[0])
        guard text.shape[1] == d else { throw AnalysisError.dimensionMismatch(expected: d, got: text.shape[1]) }
        guard k >= 2 else { throw AnalysisError.tooFewClasses(k) }
        try checkLabels(labels, rows: n, classes: k)
        guard n > 0 else { throw AnalysisError.noData }

        let h = normalisedRows(images), t = normalisedRows(text)
        let means = try classMeans(h, labels: labels, classes: k)
        let centredMeans = centred(means)             // rows: columns of M
        let centredText = centred(t)                  // rows of T_c

        let nc1 = withinToBetween(h, labels: labels, means: means, centredMeans: centredMeans)
        let nc3 = normalisedDistance(centredText, centredMeans)

        var agree = 0, correct = 0
        for (i, hi) in h.enumerated() {
            let predicted = argmax((0..<k).map { dot(t[$0], hi) })
            let nearest = argmax(means.map { mu in -zip(hi, mu).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } })
            if predicted == nearest { agree += 1 }
            if predicted == labels[i] { correct += 1 }
        }
        return NeuralCollapseReport(
            image: ImageCollapse(nc1: nc1, geometry: try ClassGeometry.measure(centredMeans)),
            text: try ClassGeometry.measure(centredText), nc3: nc3,
            nc4: Double(agree) / Double(n), accuracy: Double(correct) / Double(n),
            clusterETFError: try clusters.flatMap { try withinClusterETFError(text: text, clusters: $0) })
    }

    /// CPT's within-cluster ETF error: the mean over the clusters of at least two classes of
    /// ||C_m - E_m||_F / ||E_m||_F, C_m the cosine matrix of the cluster's text features (not
    /// centred: CPT's L_TETF asks the cluster's own features, not their deviations from the
    /// cluster mean, to form the ETF; centred, any two vectors would be one) and E_m the Gram
    /// matrix of a k_m-vertex simplex ETF (1 on the diagonal, -1/(k_m - 1) off it;
    /// ||E_m||_F = k_m / sqrt(k_m - 1)). 0 when every cluster is a simplex ETF; nil when no
    /// cluster has two classes.
    public static func withinClusterETFError(text: Tensor, clusters: [Int]) throws -> Double? {
        guard text.rank == 2 else { throw AnalysisError.notAMatrix(name: "text", shape: text.shape) }
        guard clusters.count == text.shape[0] else { throw AnalysisError.labelCount(labels: clusters.count, rows: text.shape[0]) }
        let t = normalisedRows(text)
        var members: [Int: [Int]] = [:]
        for (i, c) in clusters.enumerated() { members[c, default: []].append(i) }
        let groups = members.keys.sorted().map { members[$0]! }.filter { $0.count > 1 }
        guard !groups.isEmpty else { return nil }
        var sum = 0.0
        for g in groups {
            let k = Double(g.count)
            var sq = 0.0
            for a in g { for b in g {
                let diff = dot(t[a], t[b]) - (a == b ? 1 : -1 / (k - 1))
                sq += diff * diff
            } }
            sum += sq.squareRoot() / (k / (k - 1).squareRoot())
        }
        return sum / Double(groups.count)
    }
}

/// mu_k for k in 0..<K; throws for a class without rows.
func classMeans(_ h: [[Double]], labels: [Int], classes k: Int) throws -> [[Double]] {
    let d = h.first?.count ?? 0
    var sums = [[Double]](repeating: [Double](repeating: 0, count: d), count: k)
    var counts = [Int](repeating: 0, count: k)
    for (hi, y) in zip(h, labels) {
        counts[y] += 1
        for j in 0..<d { sums[y][j] += hi[j] }
    }
    if let empty = counts.firstIndex(of: 0) { throw AnalysisError.emptyClass(empty) }
    return (0..<k).map { c in sums[c].map { $0 / Double(counts[c]) } }
}

/// Rows minus their mean row.
func centred(_ rows: [[Double]]) -> [[Double]] {
    let d = rows.first?.count ?? 0
    var mean = [Double](repeating: 0, count: d)
    for r in rows { for j in 0..<d { mean[j] += r[j] / Double(rows.count) } }
    return rows.map { r in (0..<d).map { r[$0] - mean[$0] } }
}

/// NC1 = tr(S_W S_B^+) / K without forming a d x d matrix. With the K x K Gram
/// M^T M = V diag(s) V^T, S_B^+ = K M V diag(1/s^2) V^T M^T over the s above the tolerance, so
/// tr(S_W S_B^+)/K = (1/N) sum_i sum_j (v_j . M^T r_i)^2 / s_j^2 with r_i = h_i - mu_{y_i}.
/// Cost O(N K d + K^3).
func withinToBetween(_ h: [[Double]], labels: [Int], means: [[Double]], centredMeans m: [[Double]]) -> Double {
    let k = m.count
    var gram = [Double](repeating: 0, count: k * k)
    for a in 0..<k { for b in a..<k { let g = dot(m[a], m[b]); gram[a * k + b] = g; gram[b * k + a] = g } }
    let (values, vectors) = LinearAlgebra.symmetricEigen(gram, n: k)
    let largest = values.max() ?? 0
    let kept = (0..<k).filter { values[$0] > NeuralCollapseReport.pseudoInverseTolerance * largest && values[$0] > 0 }
    guard !kept.isEmpty else { return 0 }  // S_B = 0: its pseudo-inverse is 0
    var total = 0.0
    for (hi, y) in zip(h, labels) {
        let r = zip(hi, means[y]).map { $0 - $1 }
        let a = m.map { dot($0, r) }                 // M^T r_i
        for j in kept {
            var b = 0.0
            for c in 0..<k { b += vectors[c * k + j] * a[c] }
            total += b * b / (values[j] * values[j])
        }
    }
    return total / Double(h.count)
}

/// || A/||A||_F - B/||B||_F ||_F for equal-shape row lists (a zero matrix stays zero).
func normalisedDistance(_ a: [[Double]], _ b: [[Double]]) -> Double {
    func frobenius(_ x: [[Double]]) -> Double { x.joined().reduce(0) { $0 + $1 * $1 }.squareRoot() }
    let (na, nb) = (frobenius(a), frobenius(b))
    var s = 0.0
    for (ra, rb) in zip(a, b) { for (x, y) in zip(ra, rb) {
        let diff = (na > 0 ? x / na : 0) - (nb > 0 ? y / nb : 0)
        s += diff * diff
    } }
    return s.squareRoot()
}

/// Index of the largest value; the first one on ties.
func argmax(_ x: [Double]) -> Int {
    var best = 0
    for j in x.indices where x[j] > x[best] { best = j }
    return best
}
