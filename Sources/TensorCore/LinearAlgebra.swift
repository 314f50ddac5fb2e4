import COpenBLAS

/// Small dense linear algebra in Double (anchor construction, not hot paths).
public enum LinearAlgebra {
    /// Eigen-decomposition of a symmetric n x n matrix (row-major): eigenvalues ascending and the
    /// eigenvectors as the columns of a row-major n x n matrix. LAPACK's dsyev.
    public static func symmetricEigen(_ a: [Double], n: Int) -> (values: [Double], vectors: [Double]) {
        precondition(a.count == n * n, "symmetricEigen: \(a.count) values for n = \(n)")
        var m = a  // symmetric, so row- and column-major agree
        var w = [Double](repeating: 0, count: n)
        var nn = Int32(n), lwork = Int32(-1), info: Int32 = 0
        var query = 0.0
        "V".withCString { jobz in "U".withCString { uplo in
            dsyev_(jobz, uplo, &nn, &m, &nn, &w, &query, &lwork, &info)
            lwork = Int32(query)
            var work = [Double](repeating: 0, count: max(1, Int(lwork)))
            dsyev_(jobz, uplo, &nn, &m, &nn, &w, &work, &lwork, &info)
        } }
        precondition(info == 0, "dsyev failed with info \(info)")
        // LAPACK returns eigenvectors as columns in column-major order: m[col * n + row].
        var v = [Double](repeating: 0, count: n * n)
        for col in 0..<n { for row in 0..<n { v[row * n + col] = m[col * n + row] } }
        return (w, v)
    }

    /// Row-major product of a (r x k) and b (k x c) in Double.
    public static func multiply(_ a: [Double], _ b: [Double], _ r: Int, _ k: Int, _ c: Int) -> [Double] {
        var out = [Double](repeating: 0, count: r * c)
        for i in 0..<r { for p in 0..<k {
            let av = a[i * k + p]
            if av == 0 { continue }
            for j in 0..<c { out[i * c + j] += av * b[p * c + j] }
        } }
        return out
    }

    /// Orthonormalises the rows of a (r x c) by modified Gram-Schmidt (rows must be independent).
    public static func orthonormalRows(_ a: [Double], _ r: Int, _ c: Int) -> [Double] {
        var q = a
        for i in 0..<r {
            for j in 0..<i {
                var dot = 0.0
                for x in 0..<c { dot += q[i * c + x] * q[j * c + x] }
                for x in 0..<c { q[i * c + x] -= dot * q[j * c + x] }
            }
            var norm = 0.0
            for x in 0..<c { norm += q[i * c + x] * q[i * c + x] }
            norm = norm.squareRoot()
            for x in 0..<c { q[i * c + x] /= norm }
        }
        return q
    }
}
