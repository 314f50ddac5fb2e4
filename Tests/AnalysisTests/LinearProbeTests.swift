@testable import Analysis
import Foundation
import TensorCore
import TestSupport
import XCTest

final class LinearProbeTests: XCTestCase {
    struct Golden: Decodable {
        struct Fit: Decodable { var c: Double; var weights: [Double]; var bias: [Double]; var objective: Double; var predictions: [Int] }
        var dimension: Int
        var classes: Int
        var features: [Double]
        var labels: [Int]
        var fits: [Fit]
    }

    func testMatchesNewtonOptimumFromNumpy() throws {
        let url = repoRoot.appendingPathComponent("Goldens/analysis/logreg.json")
        let g = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url))
        let x = Tensor(shape: [g.labels.count, g.dimension], data: g.features.map(Float.init))
        for fit in g.fits {
            let probe = try LinearProbe.fit(features: x, labels: g.labels, classes: g.classes, c: fit.c)
            XCTAssertTrue(probe.converged, "C = \(fit.c)")
            XCTAssertEqual(probe.classIndices, [0, 1, 2])
            let scale = fit.weights.map(abs).max() ?? 1
            let wDiff = zip(probe.weights, fit.weights).map { abs($0 - $1) }.max() ?? .infinity
            let bDiff = zip(probe.bias, fit.bias).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThan(wDiff / scale, 1e-5, "C = \(fit.c) weights")
            XCTAssertLessThan(bDiff / scale, 1e-5, "C = \(fit.c) bias")
            XCTAssertEqual(probe.objective, fit.objective, accuracy: 1e-9 * fit.objective, "C = \(fit.c)")
            XCTAssertEqual(try probe.predict(x), fit.predictions)
            XCTAssertEqual(probe.bias.reduce(0, +), 0, accuracy: 1e-9)
        }
    }

    func testObjectiveGradientMatchesFiniteDifferences() {
        var rng = SeededGenerator(seed: 5)
        let (n, d, k, c) = (7, 3, 4, 0.7)
        let x = (0..<(n * d)).map { _ in Double.random(in: -2...2, using: &rng) }
        let y = (0..<n).map { $0 % k }
        let theta = (0..<(k * (d + 1))).map { _ in Double.random(in: -1...1, using: &rng) }
        let (_, grad) = LinearProbe.objective(theta: theta, x: x, y: y, n: n, d: d, k: k, c: c)
        for j in theta.indices {
            var plus = theta, minus = theta
            plus[j] += 1e-6; minus[j] -= 1e-6
            let numeric = (LinearProbe.objective(theta: plus, x: x, y: y, n: n, d: d, k: k, c: c).value
                - LinearProbe.objective(theta: minus, x: x, y: y, n: n, d: d, k: k, c: c).value) / 2e-6
            XCTAssertEqual(grad[j], numeric, accuracy: 1e-8, "theta[\(j)]")
        }
    }

    func testLBFGSMinimisesRosenbrock() {
        let r = LBFGS.minimize(from: [-1.2, 1]) { p in
            let (a, b) = (p[0], p[1])
            return (100 * (b - a * a) * (b - a * a) + (1 - a) * (1 - a),
                    [-400 * a * (b - a * a) - 2 * (1 - a), 200 * (b - a * a)])
        }
        XCTAssertTrue(r.converged)
        XCTAssertEqual(r.x[0], 1, accuracy: 1e-6)
        XCTAssertEqual(r.x[1], 1, accuracy: 1e-6)
    }

    /// Two Gaussian blobs per class in d = 4, shuffled into train and val.
    static func blobs(seed: UInt64, perClass: Int, classes k: Int) -> (Tensor, [Int]) {
        var rng = SeededGenerator(seed: seed)
        let d = 4
        let centres = (0..<k).map { c in (0..<d).map { j in j == c % d ? 2.0 : 0.0 } }
        var rows: [Float] = [], labels: [Int] = []
        for i in 0..<(perClass * k) {
            let c = i % k
            labels.append(c)
            rows += (0..<d).map { Float(centres[c][$0] + Double.random(in: -1.5...1.5, using: &rng)) }
        }
        return (Tensor(shape: [labels.count, d], data: rows), labels)
    }

    func testSearchFollowsCoOpsProcedure() throws {
        let (train, trainLabels) = Self.blobs(seed: 1, perClass: 8, classes: 3)
        let (val, valLabels) = Self.blobs(seed: 2, perClass: 4, classes: 3)
        let s = try LinearProbe.search(trainFeatures: train, trainLabels: trainLabels, valFeatures: val, valLabels: valLabels,
                                       classes: 3, steps: 2)
        XCTAssertEqual(Array(s.trials.prefix(7).map(\.c)), LinearProbe.coopGrid)
        XCTAssertLessThanOrEqual(s.trials.count, 7 + 4)
        let chosen = try XCTUnwrap(s.trials.first { $0.c == s.c })
        XCTAssertEqual(chosen.valAccuracy, s.valAccuracy)
        XCTAssertEqual(s.probe.c, s.c)
        XCTAssertEqual(try s.probe.accuracy(features: val, labels: valLabels), s.valAccuracy)
        XCTAssertGreaterThan(s.valAccuracy, 0.5)

        // With no bisection the answer is the first best of the grid.
        let peak = try LinearProbe.search(trainFeatures: train, trainLabels: trainLabels, valFeatures: val, valLabels: valLabels,
                                          classes: 3, steps: 0)
        let best = peak.trials.map(\.valAccuracy).max() ?? 0
        XCTAssertEqual(peak.c, peak.trials.first { $0.valAccuracy == best }?.c)
    }

    func testOnlyTrainingClassesArePredicted() throws {
        let (x, labels) = Self.blobs(seed: 3, perClass: 5, classes: 3)
        let keep = labels.indices.filter { labels[$0] != 1 }
        let probe = try LinearProbe.fit(features: x.gatherRows(keep), labels: keep.map { labels[$0] }, classes: 3, c: 1)
        XCTAssertEqual(probe.classIndices, [0, 2])
        XCTAssertTrue(Set(try probe.predict(x)).isSubset(of: [0, 2]))
    }

    func testErrors() {
        let (x, labels) = Self.blobs(seed: 4, perClass: 2, classes: 3)
        assertThrows(.invalidParameter(name: "C", value: 0), try LinearProbe.fit(features: x, labels: labels, classes: 3, c: 0))
        assertThrows(.tooFewClasses(1), try LinearProbe.fit(features: x, labels: labels.map { _ in 2 }, classes: 3, c: 1))
        assertThrows(.labelOutOfRange(label: 3, index: 0, classes: 3),
                     try LinearProbe.fit(features: x, labels: [3] + labels.dropFirst(), classes: 3, c: 1))
        assertThrows(.dimensionMismatch(expected: 4, got: 2),
                     try LinearProbe.fit(features: x, labels: labels, classes: 3, c: 1).predict(Tensor(zeros: [1, 2])))
    }
}
