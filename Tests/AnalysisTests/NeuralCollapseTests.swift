import Analysis
import Foundation
import TensorCore
import TestSupport
import XCTest

/// Asserts that `body` throws exactly `expected`.
func assertThrows<T>(_ expected: AnalysisError, _ body: @autoclosure () throws -> T,
                     file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected \(expected)", file: file, line: line)
    } catch let error as AnalysisError {
        XCTAssertEqual(error, expected, file: file, line: line)
    } catch {
        XCTFail("expected \(expected), got \(error)", file: file, line: line)
    }
}

final class NeuralCollapseTests: XCTestCase {
    /// A regular tetrahedron (a simplex ETF for K = 4, exact in Float), padded to d = 4.
    static let tetrahedron: [[Float]] = [[1, 1, 1, 0], [1, -1, -1, 0], [-1, 1, -1, 0], [-1, -1, 1, 0]]

    static func matrix(_ rows: [[Float]]) -> Tensor {
        Tensor(shape: [rows.count, rows.first?.count ?? 0], data: rows.flatMap { $0 })
    }

    func testSimplexETFIsFullyCollapsed() throws {
        let labels = [0, 1, 2, 3, 0, 1, 2, 3, 0, 3]  // imbalanced: mu_G is still the ETF's centre
        let images = Self.matrix(labels.map { Self.tetrahedron[$0].map { $0 * 3 } })  // any scale
        let r = try NeuralCollapseReport.measure(images: images, labels: labels, text: Self.matrix(Self.tetrahedron))
        for (name, v) in [("nc1", r.image.nc1), ("nc3", r.nc3)] + geometryValues(r.image.geometry, "image")
            + geometryValues(r.text, "text") {
            XCTAssertEqual(v, 0, accuracy: 1e-12, name)
        }
        XCTAssertEqual(r.nc4, 1)
        XCTAssertEqual(r.accuracy, 1)
    }

    func geometryValues(_ g: ClassGeometry, _ side: String) -> [(String, Double)] {
        [("\(side).equinorm", g.equinorm), ("\(side).equiangularity", g.equiangularity),
         ("\(side).max_angle", g.maxAngle), ("\(side).etf_error", g.etfError)]
    }

    func testCollapsedClassesHaveZeroNC1() throws {
        var rng = SeededGenerator(seed: 3)
        let (k, d) = (5, 7)
        let means = (0..<k).map { _ in (0..<d).map { _ in Float.random(in: -1...1, using: &rng) } }
        let labels = (0..<23).map { $0 % k }
        let text = Self.matrix((0..<k).map { _ in (0..<d).map { _ in Float.random(in: -1...1, using: &rng) } })
        let r = try NeuralCollapseReport.measure(images: Self.matrix(labels.map { means[$0] }), labels: labels, text: text)
        XCTAssertEqual(r.image.nc1, 0, accuracy: 1e-12)
        XCTAssertEqual(r.nc4, r.accuracy)  // every image sits on its own class mean
        XCTAssertGreaterThan(r.image.etfError, 0.01)  // random means are no ETF
    }

    func testOneScaledClassMeasuredByHand() throws {
        // Tetrahedron vertices (norm sqrt 3) with the first doubled: norms (2, 1, 1, 1) sqrt 3,
        // mean 5/4 sqrt 3, population std sqrt 3 / 4 sqrt 3, so equinorm = sqrt(3) / 5; the angles are
        // untouched. G = [[12, -2, -2, -2], [-2, 3, -1, -1], ...] with ||G||_F^2 = 201.
        var v = Self.tetrahedron.map { $0.map(Double.init) }
        v[0] = v[0].map { 2 * $0 }
        let g = try ClassGeometry.measure(v)
        XCTAssertEqual(g.equinorm, 3.0.squareRoot() / 5, accuracy: 1e-14)
        XCTAssertEqual(g.equiangularity, 0, accuracy: 1e-14)
        XCTAssertEqual(g.maxAngle, 0, accuracy: 1e-14)
        let gram: [[Double]] = [[12, -2, -2, -2], [-2, 3, -1, -1], [-2, -1, 3, -1], [-2, -1, -1, 3]]
        var sq = 0.0
        for a in 0..<4 { for b in 0..<4 {
            let diff = gram[a][b] / 201.0.squareRoot() - ((a == b ? 1 : 0) - 0.25) / 3.0.squareRoot()
            sq += diff * diff
        } }
        XCTAssertEqual(g.etfError, sq.squareRoot(), accuracy: 1e-14)
    }

    func testTwoClassesAreAlwaysAnETF() throws {
        // K = 2: centred means are v and -v, cos = -1 = -1/(K-1).
        let g = try ClassGeometry.measure([[0.3, -1, 2], [-0.3, 1, -2]])
        XCTAssertEqual(g.maxAngle, 0, accuracy: 1e-15)
        XCTAssertEqual(g.etfError, 0, accuracy: 1e-15)
    }

    func testMatchesNumpyGoldens() throws {
        let url = repoRoot.appendingPathComponent("Goldens/analysis/nc.json")
        let golden = try JSONDecoder().decode(NCGoldens.self, from: Data(contentsOf: url))
        XCTAssertEqual(golden.cases.count, 3)
        for c in golden.cases {
            let images = Tensor(shape: [c.labels.count, c.dimension], data: c.images.map(Float.init))
            let text = Tensor(shape: [c.classes, c.dimension], data: c.text.map(Float.init))
            let r = try NeuralCollapseReport.measure(images: images, labels: c.labels, text: text)
            let e = c.expected
            let pairs: [(String, Double, Double)] = [
                ("nc1", r.image.nc1, e.image.nc1), ("nc3", r.nc3, e.nc3), ("nc4", r.nc4, e.nc4), ("accuracy", r.accuracy, e.accuracy),
            ] + zip(geometryValues(r.image.geometry, "image"), geometryValues(e.image.geometry, "image")).map { ($0.0, $0.1, $1.1) }
              + zip(geometryValues(r.text, "text"), geometryValues(e.text, "text")).map { ($0.0, $0.1, $1.1) }
            for (name, got, want) in pairs {
                XCTAssertEqual(got, want, accuracy: 1e-9 * max(1, abs(want)), "\(c.name) \(name)")
            }
        }
    }

    func testJSONHasExactlyTheDocumentedKeys() throws {
        let r = try NeuralCollapseReport.measure(images: Self.matrix(Self.tetrahedron), labels: [0, 1, 2, 3],
                                                 text: Self.matrix(Self.tetrahedron))
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: encoder.encode(r)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["image", "text", "nc3", "nc4", "accuracy"])
        XCTAssertEqual(Set((object["image"] as? [String: Any])?.keys ?? [:].keys),
                       ["nc1", "equinorm", "equiangularity", "max_angle", "etf_error"])
        XCTAssertEqual(Set((object["text"] as? [String: Any])?.keys ?? [:].keys),
                       ["equinorm", "equiangularity", "max_angle", "etf_error"])
        XCTAssertEqual(try JSONDecoder().decode(NeuralCollapseReport.self, from: encoder.encode(r)), r)
    }

    func testErrorsNameTheirValues() {
        let t = Self.matrix(Self.tetrahedron)
        let images = Self.matrix([Self.tetrahedron[0], Self.tetrahedron[1], Self.tetrahedron[2], Self.tetrahedron[3]])
        assertThrows(.labelOutOfRange(label: 4, index: 2, classes: 4),
                     try NeuralCollapseReport.measure(images: images, labels: [0, 1, 4, 3], text: t))
        assertThrows(.labelOutOfRange(label: -1, index: 0, classes: 4),
                     try NeuralCollapseReport.measure(images: images, labels: [-1, 1, 2, 3], text: t))
        assertThrows(.labelCount(labels: 3, rows: 4), try NeuralCollapseReport.measure(images: images, labels: [0, 1, 2], text: t))
        assertThrows(.emptyClass(2), try NeuralCollapseReport.measure(images: images, labels: [0, 1, 1, 3], text: t))
        assertThrows(.tooFewClasses(1), try NeuralCollapseReport.measure(images: images, labels: [0, 0, 0, 0], text: t.slice(rows: 0..<1)))
        assertThrows(.dimensionMismatch(expected: 4, got: 3),
                     try NeuralCollapseReport.measure(images: images, labels: [0, 1, 2, 3], text: Tensor(zeros: [4, 3])))
        assertThrows(.notAMatrix(name: "images", shape: [16]),
                     try NeuralCollapseReport.measure(images: images.reshaped([16]), labels: [0, 1, 2, 3], text: t))
        XCTAssertTrue("\(AnalysisError.emptyClass(2))".contains("class 2"))
    }
}

struct NCGoldens: Decodable {
    struct Case: Decodable {
        var name: String
        var dimension: Int
        var classes: Int
        var images: [Double]
        var labels: [Int]
        var text: [Double]
        var expected: NeuralCollapseReport
    }
    var cases: [Case]
}

/// CPT's within-cluster ETF error, a measure given the classes' clusters.
final class ClusterCollapseTests: XCTestCase {
    func testWithinClusterETFErrorByHand() throws {
        // Clusters that are exact ETFs: a regular tetrahedron and an antipodal pair.
        let t = NeuralCollapseTests.tetrahedron
        let exact = NeuralCollapseTests.matrix(t + [[0, 0, 0, 2], [0, 0, 0, -1]])
        XCTAssertEqual(try XCTUnwrap(try NeuralCollapseReport.withinClusterETFError(text: exact, clusters: [0, 0, 0, 0, 1, 1])), 0, accuracy: 1e-12)
        // Two clusters of two at cosine 0.8 where the ETF asks for -1: ||C - E||_F = sqrt(2) 1.8,
        // ||E||_F = 2, so 0.9 sqrt(2) each; with a third, exact cluster the mean is 2 * 0.9 sqrt(2) / 3.
        let pairs = NeuralCollapseTests.matrix([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 1, 0], [0, 0, 0.8, 0.6]])
        XCTAssertEqual(try XCTUnwrap(try NeuralCollapseReport.withinClusterETFError(text: pairs, clusters: [0, 0, 1, 1])),
                       0.9 * 2.0.squareRoot(), accuracy: 1e-7)
        let six = NeuralCollapseTests.matrix([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 1, 0], [0, 0, 0.8, 0.6], [0, 1, 0, 0], [0, -3, 0, 0]])
        XCTAssertEqual(try XCTUnwrap(try NeuralCollapseReport.withinClusterETFError(text: six, clusters: [0, 0, 1, 1, 2, 2])),
                       2 * 0.9 * 2.0.squareRoot() / 3, accuracy: 1e-7)
        // Singletons have no ETF; only singletons: no measure.
        XCTAssertNil(try NeuralCollapseReport.withinClusterETFError(text: pairs, clusters: [0, 1, 2, 3]))
        XCTAssertEqual(try XCTUnwrap(try NeuralCollapseReport.withinClusterETFError(text: pairs, clusters: [0, 0, 1, 2])),
                       0.9 * 2.0.squareRoot(), accuracy: 1e-7)
        assertThrows(.labelCount(labels: 3, rows: 4), try NeuralCollapseReport.withinClusterETFError(text: pairs, clusters: [0, 0, 1]))
    }

    /// In the report only where clusters were given; older records (without the key) still read.
    func testReportCarriesItOnlyWithClusters() throws {
        let text = NeuralCollapseTests.matrix([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 1, 0], [0, 0, 0.8, 0.6]])
        let labels = [0, 1, 2, 3, 0, 1, 2, 3]
        let images = NeuralCollapseTests.matrix(labels.map { [[1, 0.1, 0, 0], [0.7, 0.7, 0, 0.1], [0, 0, 1, 0.1], [0, 0.1, 0.5, 0.8]][$0] })
        let plain = try NeuralCollapseReport.measure(images: images, labels: labels, text: text)
        XCTAssertNil(plain.clusterETFError)
        let json = String(decoding: try JSONEncoder().encode(plain), as: UTF8.self)
        XCTAssertFalse(json.contains("cluster"), json)
        let clustered = try NeuralCollapseReport.measure(images: images, labels: labels, text: text, clusters: [0, 0, 1, 1])
        XCTAssertEqual(try XCTUnwrap(clustered.clusterETFError), 0.9 * 2.0.squareRoot(), accuracy: 1e-7)
        var same = clustered
        same.clusterETFError = nil
        XCTAssertEqual(same, plain, "the other measures do not change")
        let data = try JSONEncoder().encode(clustered)
        XCTAssertTrue(String(decoding: data, as: UTF8.self).contains("\"cluster_etf_error\""))
        XCTAssertEqual(try JSONDecoder().decode(NeuralCollapseReport.self, from: data), clustered)
        XCTAssertEqual(try JSONDecoder().decode(NeuralCollapseReport.self, from: Data(json.utf8)), plain)
    }
}
