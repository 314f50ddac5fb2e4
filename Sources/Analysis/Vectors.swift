import TensorCore

// Small Double helpers shared by the analyses (not public).

/// Rows of a 2-D Float tensor as Double vectors, each scaled to unit length (zero rows stay zero).
func normalisedRows(_ x: Tensor) -> [[Double]] {
    let d = x.lastDim
    return (0..<x.rows).map { i in
        let row = (0..<d).map { Double(x[i * d + $0]) }
        let norm = max(row.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
        return row.map { $0 / norm }
    }
}

/// Checks labels against `rows` feature rows and `classes` classes.
func checkLabels(_ labels: [Int], rows: Int, classes: Int) throws {
    guard labels.count == rows else { throw AnalysisError.labelCount(labels: labels.count, rows: rows) }
    for (i, y) in labels.enumerated() where y < 0 || y >= classes {
        throw AnalysisError.labelOutOfRange(label: y, index: i, classes: classes)
    }
}

@inline(__always) func dot(_ a: [Double], _ b: [Double]) -> Double {
    var s = 0.0
    for j in a.indices { s += a[j] * b[j] }
    return s
}
