import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// Finite differences (Double-accumulated terms) for every loss term and the composed objective.
final class LossTermTests: XCTestCase {
    var rng = SeededGenerator(seed: 3)

    func unitRows(_ k: Int, _ d: Int) -> Tensor { L2Normalize.forward(.randomNormal([k, d], using: &rng)).0 }

    func testCrossEntropy() {
        let logits = Tensor.randomNormal([4, 5], std: 3, using: &rng)
        let labels = [0, 3, 4, 1]
        let (v, g) = crossEntropy(logits: logits, labels: labels)
        XCTAssertGreaterThan(v, 0)
        checkGradient("ce", at: logits, analytic: g, tolerance: .lossTerms) { crossEntropy(logits: $0, labels: labels).value }
        // Known value: uniform logits give log K.
        XCTAssertEqual(crossEntropy(logits: Tensor(zeros: [2, 5]), labels: [0, 1]).value, log(5), accuracy: 1e-12)
    }

    func testKnowledgeConsistency() {
        let t = Tensor.randomNormal([5, 8], using: &rng), z = unitRows(5, 8)
        let (v, g) = knowledgeConsistency(text: t, zeroShot: z)
        checkGradient("kg", at: t, analytic: g, tolerance: .lossTerms) { knowledgeConsistency(text: $0, zeroShot: z).value }
        XCTAssertEqual(knowledgeConsistency(text: z, zeroShot: z).value, 0, accuracy: 1e-6)
        XCTAssertGreaterThan(v, 0)
    }

    func testLanguageCollapse() {
        let t = unitRows(6, 7), e = unitRows(6, 7)
        let (_, g) = languageCollapse(text: t, anchors: e)
        checkGradient("lc", at: t, analytic: g, tolerance: .lossTerms) { languageCollapse(text: $0, anchors: e).value }
        XCTAssertEqual(languageCollapse(text: e, anchors: e).value, 0, accuracy: 1e-6)
    }

    func testModalityIsomorphism() {
        let t = Tensor.randomNormal([4, 6], using: &rng), p = Tensor.randomNormal([4, 6], std: 0.3, using: &rng)
        let (_, g) = modalityIsomorphism(text: t, prototypes: p)
        checkGradient("mi", at: t, analytic: g, tolerance: .lossTerms) { modalityIsomorphism(text: $0, prototypes: p).value }
    }

    func testInterClassDispersion() {
        let t = unitRows(5, 4)
        let (v, g) = interClassDispersion(text: t, tau: 2)
        checkGradient("inter", at: t, analytic: g, tolerance: .lossTerms) { interClassDispersion(text: $0, tau: 2).value }
        // By hand for two points: exp(-2 * ||a - b||^2).
        let two = Tensor(shape: [2, 2], data: [1, 0, 0, 1])
        XCTAssertEqual(interClassDispersion(text: two, tau: 2).value, exp(-4), accuracy: 1e-7)
        XCTAssertGreaterThan(v, 0)
    }

    func testHSIC() {
        let t = Tensor.randomNormal([6, 5], using: &rng), z = unitRows(6, 5)
        let (v, g) = hsic(text: t, zeroShot: z)
        XCTAssertGreaterThan(v, 0)
        checkGradient("hsic", at: t, analytic: g, tolerance: .lossTerms, atol: 1e-5) { hsic(text: $0, zeroShot: z).value }
        // By hand, K = 2: T = Z = I gives A = I/sqrt(2), H A A^T H = H/2, tr(H/2 H/2) = tr(H)/4 = 1/4.
        let eye = Tensor(shape: [2, 2], data: [1, 0, 0, 1])
        XCTAssertEqual(hsic(text: eye, zeroShot: eye).value, 0.25, accuracy: 1e-7)
        // Identical zero-shot rows centre to nothing: no dependence to measure.
        let same = Tensor(shape: [2, 2], data: [1, 0, 1, 0])
        XCTAssertEqual(hsic(text: eye, zeroShot: same).value, 0, accuracy: 1e-9)
        // The Frobenius normalisation makes it scale-free in both arguments.
        XCTAssertEqual(hsic(text: t * 3, zeroShot: z * 0.5).value, v, accuracy: 1e-6 * v)
        // The biased estimator tr(K_t H K_z H) without 1/(K-1)^2, computed naively with H.
        let (k, d) = (6, 5)
        func scaled(_ x: Tensor) -> [[Double]] {
            let n = x.data.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            return (0..<k).map { i in (0..<d).map { Double(x[i * d + $0]) / n } }
        }
        let (a, b) = (scaled(t), scaled(z))
        func gram(_ x: [[Double]]) -> [[Double]] { x.map { r in x.map { s in zip(r, s).reduce(0) { $0 + $1.0 * $1.1 } } } }
        let h = (0..<k).map { i in (0..<k).map { j in (i == j ? 1 : 0) - 1 / Double(k) } }
        func mm(_ x: [[Double]], _ y: [[Double]]) -> [[Double]] {
            x.map { r in (0..<y[0].count).map { j in (0..<y.count).reduce(0) { $0 + r[$1] * y[$1][j] } } }
        }
        let p = mm(h, mm(gram(a), mm(h, gram(b))))
        XCTAssertEqual(v, (0..<k).reduce(0) { $0 + p[$1][$1] }, accuracy: 1e-6)
    }

    func testObjectiveGradientThroughNormalisationForEveryTerm() {
        let (k, d, b) = (5, 8, 6)
        let text = Tensor.randomNormal([k, d], using: &rng)
        let images = unitRows(b, d)
        let labels = [0, 1, 2, 3, 4, 0]
        let inputs = TermInputs(zeroShot: unitRows(k, d), anchors: unitRows(k, d), prototypes: Tensor.randomNormal([k, d], std: 0.4, using: &rng))
        let method = Method(name: "all", prompt: PromptConfig(), terms: [
            LossTerm("kg", weight: 8), LossTerm("inter", weight: 0.5, parameters: ["tau": 2]),
            LossTerm("lc", weight: 1), LossTerm("mi", weight: 1), LossTerm("hsic", weight: 6)], anchors: AnchorOptions())
        let v = objective(method: method, textFeatures: text, images: images, labels: labels, logitScale: 20, inputs: inputs)
        XCTAssertEqual(Set(v.terms.keys), ["ce", "kg", "inter", "lc", "mi", "hsic"])
        let weighted = v.terms["ce"]! + 8 * v.terms["kg"]! + 0.5 * v.terms["inter"]! + v.terms["lc"]! + v.terms["mi"]! + 6 * v.terms["hsic"]!
        XCTAssertEqual(v.total, weighted, accuracy: 1e-9)
        checkGradient("objective", at: text, analytic: v.dText, tolerance: .lossTerms, atol: 3e-4) {
            objective(method: method, textFeatures: $0, images: images, labels: labels, logitScale: 20, inputs: inputs).total
        }
    }
}

final class AnchorTests: XCTestCase {
    func assertSimplex(_ e: Tensor, _ k: Int, file: StaticString = #filePath, line: UInt = #line) {
        let g = matmul(e, e, transB: true)
        for i in 0..<k { for j in 0..<k {
            XCTAssertEqual(g[i * k + j], i == j ? 1 : -1 / Float(k - 1), accuracy: 1e-5, "gram[\(i),\(j)]", file: file, line: line)
        } }
    }

    func testRandomAndAlignedAreSimplexETFs() {
        var rng = SeededGenerator(seed: 5)
        let (k, d) = (6, 10)
        let z = L2Normalize.forward(.randomNormal([k, d], using: &rng)).0
        let random = simplexETF(classes: k, dimension: d, rotation: .random, zeroShot: nil, seed: 1)
        let aligned = simplexETF(classes: k, dimension: d, rotation: .aligned, zeroShot: z, seed: 1)
        XCTAssertNil(random.warning)
        assertSimplex(random.vectors, k)
        assertSimplex(aligned.vectors, k)
        // Aligned is the closest simplex to the zero-shot features: closer than random ones.
        func dist(_ e: Tensor) -> Float { zip(e.data, z.data).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } }
        for seed in 0..<5 as Range<UInt64> {
            XCTAssertLessThan(dist(aligned.vectors), dist(simplexETF(classes: k, dimension: d, rotation: .random, zeroShot: nil, seed: seed).vectors))
        }
        // K = d + 1 still has a simplex ETF.
        assertSimplex(simplexETF(classes: d + 1, dimension: d, rotation: .aligned,
                                 zeroShot: L2Normalize.forward(.randomNormal([d + 1, d], using: &rng)).0, seed: 0).vectors, d + 1)
    }

    func testMoreClassesThanDimensionsFallBackWithAWarning() {
        let (k, d) = (12, 4)
        let a = simplexETF(classes: k, dimension: d, rotation: .random, zeroShot: nil, seed: 3)
        XCTAssertNotNil(a.warning)
        XCTAssertEqual(a.vectors.shape, [k, d])
        let g = matmul(a.vectors, a.vectors, transB: true)
        var worst: Float = -1
        for i in 0..<k { XCTAssertEqual(g[i * k + i], 1, accuracy: 1e-5); for j in 0..<k where i != j { worst = max(worst, g[i * k + j]) } }
        // 12 unit vectors in R^4 cannot all be far apart, but the optimiser must beat random draws.
        var rng = SeededGenerator(seed: 99)
        let r = L2Normalize.forward(.randomNormal([k, d], using: &rng)).0
        let gr = matmul(r, r, transB: true)
        var worstRandom: Float = -1
        for i in 0..<k { for j in 0..<k where i != j { worstRandom = max(worstRandom, gr[i * k + j]) } }
        XCTAssertLessThan(worst, min(worstRandom, 0.3))  // 0.25 is reached; the best known is about 0.2
        // Seeded and cached: the same frame again.
        XCTAssertEqual(simplexETF(classes: k, dimension: d, rotation: .random, zeroShot: nil, seed: 3).vectors, a.vectors)
    }

    func testPrototypesAreMeansOfNormalisedFeatures() {
        let f = Tensor(shape: [3, 2], data: [3, 0, 0, 2, 0, -5])
        let p = classPrototypes(features: f, labels: [0, 1, 1], classes: 2)
        XCTAssertEqual(p.data, [1, 0, 0, 0])
    }
}

final class OptimizerTests: XCTestCase {
    func testScheduleIsDasslConstantWarmupThenCosine() {
        var c = OptimizerConfig()
        c.learningRate = 0.002
        XCTAssertEqual(learningRate(epoch: 0, maxEpochs: 10, config: c), 1e-5)
        XCTAssertEqual(learningRate(epoch: 1, maxEpochs: 10, config: c), 0.002, accuracy: 1e-15)
        XCTAssertEqual(learningRate(epoch: 6, maxEpochs: 10, config: c), 0.001, accuracy: 1e-15)  // cos(pi/2)
        XCTAssertEqual(learningRate(epoch: 9, maxEpochs: 10, config: c), 0.001 * (1 + cos(Double.pi * 0.8)), accuracy: 1e-15)
    }

    func testSGDMatchesPyTorchByHand() {
        let c = OptimizerConfig()
        var p = Tensor(shape: [2], data: [1, -2])
        var buf: Tensor? = nil
        sgdStep(&p, gradient: Tensor(shape: [2], data: [0.5, 0.25]), momentumBuffer: &buf, lr: 0.1, config: c)
        // d = g + 5e-4 p = [0.5005, 0.249]; buf = d; p -= 0.1 d
        XCTAssertEqual(p[0], 1 - 0.05005, accuracy: 1e-7)
        XCTAssertEqual(p[1], -2 - 0.0249, accuracy: 1e-7)
        let p1 = p
        sgdStep(&p, gradient: Tensor(shape: [2], data: [0, 0]), momentumBuffer: &buf, lr: 0.1, config: c)
        // buf = 0.9 buf + 5e-4 p1
        XCTAssertEqual(p[0], p1[0] - 0.1 * (0.9 * 0.5005 + 5e-4 * p1[0]), accuracy: 1e-7)
    }
}

final class EvaluationTests: XCTestCase {
    func testAccuracyAndMacroF1ByHand() {
        // Two classes; text features along the axes; 3 images of class 0 (one misread), 1 of class 1.
        let text = Tensor(shape: [2, 2], data: [1, 0, 0, 1])
        let images = Tensor(shape: [4, 2], data: [1, 0.1, 0.9, 0, 0.1, 1, 0, 2])
        let r = evaluate(images: images, labels: [0, 0, 0, 1], text: text, classNames: ["a", "b"])
        XCTAssertEqual(r.accuracy, 0.75)
        // class a: tp 2, actual 3, predicted 2 -> F1 0.8; class b: tp 1, actual 1, predicted 2 -> 2/3.
        XCTAssertEqual(r.macroF1, (0.8 + 2.0 / 3.0) / 2, accuracy: 1e-12)
        XCTAssertEqual(r.perClassAccuracy["a"]!, 2.0 / 3.0, accuracy: 1e-12)
    }

    /// A class that is predicted but never a label: Dassl (sklearn with labels=np.unique(y_true))
    /// leaves it out of the mean; averaging over labels-or-predictions would count its F1 of 0.
    func testMacroF1AveragesOverTheClassesInTheLabels() {
        // Three classes along the axes; labels only 0 and 1.
        let text = Tensor(shape: [3, 3], data: [1, 0, 0, 0, 1, 0, 0, 0, 1])
        let images = Tensor(shape: [4, 3], data: [1, 0, 0,     // 0 -> 0
                                                  0, 0, 1,     // 0 -> 2 (a class absent from the labels)
                                                  0, 1, 0,     // 1 -> 1
                                                  1, 0.5, 0])  // 1 -> 0
        let r = evaluate(images: images, labels: [0, 0, 1, 1], text: text, classNames: ["a", "b", "c"])
        XCTAssertEqual(r.accuracy, 0.5)
        // a: tp 1, actual 2, predicted 2 -> F1 1/2; b: tp 1, actual 2, predicted 1 -> 2/3; c: never a label.
        // Over {a, b}: (1/2 + 2/3) / 2 = 7/12. Over {a, b, c} it would be (1/2 + 2/3 + 0) / 3 = 7/18.
        XCTAssertEqual(r.macroF1, 7.0 / 12.0, accuracy: 1e-12)
        XCTAssertEqual(Set(r.perClassAccuracy.keys), ["a", "b"])
    }
}
