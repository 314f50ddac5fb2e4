import Features
import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// CPT (a reconstruction from arXiv 2605.11939): K-means on the zero-shot features, its three
/// terms (finite differences and hand-made cases), the `+cpt` composition and a short training run.
final class CPTTests: XCTestCase {
    var rng = SeededGenerator(seed: 5)

    func unitRows(_ k: Int, _ d: Int) -> Tensor { L2Normalize.forward(.randomNormal([k, d], using: &rng)).0 }

    /// Four classes in two obvious clusters: {cat-like 0, 1} and {2, 3}, each pair at cosine 0.8.
    static let fourClasses = Tensor(shape: [4, 3], data: [1, 0, 0, 0.8, 0.6, 0, 0, 0, 1, 0, 0.6, 0.8])

    func testKMeansFindsTheObviousClustersWithEitherInitialisationAndEverySeed() {
        for initialisation in ClusterInitialisation.allCases {
            for seed in UInt64(0)..<20 {
                let a = kMeans(Self.fourClasses, clusters: 2, options: ClusterOptions(initialisation: initialisation, seed: seed))
                XCTAssertEqual(a, [0, 0, 1, 1], "\(initialisation) seed \(seed)")
            }
        }
        // Three blobs of 5 around three directions, in shuffled order.
        let d = 8
        let centres = unitRows(3, d)
        let labels = [2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2, 0, 2, 1]
        var rows = Tensor(zeros: [labels.count, d])
        for (i, y) in labels.enumerated() { for x in 0..<d { rows[i * d + x] = centres[y * d + x] + 0.05 * rng.nextNormal() } }
        rows = L2Normalize.forward(rows).0
        for initialisation in ClusterInitialisation.allCases {
            for seed in UInt64(0)..<10 {
                let a = kMeans(rows, clusters: 3, options: ClusterOptions(initialisation: initialisation, seed: seed))
                // The same partition as the labels, numbered by first appearance.
                var map: [Int: Int] = [:]
                for (y, c) in zip(labels, a) { XCTAssertEqual(map[y, default: c], c, "\(initialisation) seed \(seed)"); map[y] = c }
                XCTAssertEqual(Set(a), [0, 1, 2])
                XCTAssertEqual(a.first, 0)
            }
        }
    }

    func testKMeansIsDeterministicAndHandlesSingletonsAndDuplicates() throws {
        let x = unitRows(12, 6)
        for initialisation in ClusterInitialisation.allCases {
            let o = ClusterOptions(initialisation: initialisation, seed: 7)
            XCTAssertEqual(kMeans(x, clusters: 4, options: o), kMeans(x, clusters: 4, options: o))
        }
        // M = K: every class alone; merging leaves no singleton (and fewer clusters).
        XCTAssertEqual(kMeans(x, clusters: 12, options: ClusterOptions()), Array(0..<12))
        let merged = kMeans(x, clusters: 12, options: ClusterOptions(singletons: .merge))
        var sizes: [Int: Int] = [:]
        for c in merged { sizes[c, default: 0] += 1 }
        XCTAssertTrue(sizes.values.allSatisfy { $0 >= 2 }, "\(merged)")
        // One run can stop in a local minimum ({0, 2}, {1, 3} from centres 0 and 1); restarts find the clusters.
        let oneRun = (UInt64(0)..<40).map { kMeans(Self.fourClasses, clusters: 2, options: ClusterOptions(initialisation: .random, seed: $0, restarts: 1)) }
        XCTAssertTrue(oneRun.contains([0, 1, 0, 1]))
        // Identical rows: no empty cluster, every cluster non-empty.
        let same = Tensor(shape: [5, 2], data: [1, 0, 1, 0, 1, 0, 0, 1, 0, 1])
        let a = kMeans(same, clusters: 3, options: ClusterOptions())
        XCTAssertEqual(Set(a), [0, 1, 2])
        // Cached per features and options; too many clusters names the option.
        let first = try classClusters(zeroShot: x, options: ClusterOptions(count: 3, seed: 1))
        XCTAssertEqual(try classClusters(zeroShot: x, options: ClusterOptions(count: 3, seed: 1)), first)
        XCTAssertEqual(ClusterCache.shared.get(.init(features: x.data, dimension: 6, options: ClusterOptions(count: 3, seed: 1))), first)
        XCTAssertThrowsError(try classClusters(zeroShot: x, options: ClusterOptions(count: 13))) {
            XCTAssertTrue("\($0)".contains("tetf.clusters"), "\($0)")
        }
        XCTAssertEqual(ClusterOptions().clusters(classes: 10), 4, "ceil(sqrt(10))")
        XCTAssertEqual(ClusterOptions().clusters(classes: 100), 10)
    }

    func testWithinClusterETFByHand() {
        // Two clusters of two at cosine 0.8, where the 2-class ETF asks for -1: 2 (0.8 + 1)^2 each.
        let clusters = kMeans(Self.fourClasses, clusters: 2, options: ClusterOptions())
        XCTAssertEqual(withinClusterETF(text: Self.fourClasses, clusters: clusters).value, 2 * 1.8 * 1.8, accuracy: 1e-6)
        // A 3-class simplex in a plane and an antipodal pair are both exact ETFs: 0.
        let s = Float(3).squareRoot() / 2
        let etf = Tensor(shape: [5, 3], data: [1, 0, 0, -0.5, s, 0, -0.5, -s, 0, 0, 0, 1, 0, 0, -1])
        XCTAssertEqual(withinClusterETF(text: etf, clusters: [0, 0, 0, 1, 1]).value, 0, accuracy: 1e-6)
        // Singletons: left out of the mean, or counted as 0.
        let withLone = Tensor(shape: [3, 3], data: [1, 0, 0, 0.8, 0.6, 0, 0, 0, 1])
        XCTAssertEqual(withinClusterETF(text: withLone, clusters: [0, 0, 1], singletons: .exclude).value, 2 * 1.8 * 1.8, accuracy: 1e-6)
        XCTAssertEqual(withinClusterETF(text: withLone, clusters: [0, 0, 1], singletons: .count).value, 1.8 * 1.8, accuracy: 1e-6)
        XCTAssertEqual(withinClusterETF(text: withLone, clusters: [0, 1, 2]).value, 0)
    }

    func testTermGradients() {
        let t = Tensor.randomNormal([7, 5], using: &rng)
        let clusters = [0, 1, 0, 2, 1, 1, 0]
        for rule in [SingletonRule.exclude, .count] {
            let (_, g) = withinClusterETF(text: t, clusters: clusters + [], singletons: rule)
            checkGradient("tetf \(rule)", at: t, analytic: g, tolerance: .lossTerms, atol: 2e-4) {
                withinClusterETF(text: $0, clusters: clusters, singletons: rule).value
            }
        }
        let f = unitRows(6, 5), text = unitRows(4, 5)
        let labels = [0, 0, 0, 2, 3, 2]
        for counts in [nil, [40, 3, 9, 1]] as [[Int]?] {
            let (_, gt, gf) = classBalancedCompactness(images: f, labels: labels, text: text, counts: counts)
            checkGradient("cc text", at: text, analytic: gt, tolerance: .lossTerms) {
                classBalancedCompactness(images: f, labels: labels, text: $0, counts: counts).value
            }
            checkGradient("cc images", at: f, analytic: gf, tolerance: .lossTerms) {
                classBalancedCompactness(images: $0, labels: labels, text: text, counts: counts).value
            }
        }
        let z = unitRows(4, 5)
        let (_, g) = frozenTextL1(text: text, zeroShot: z)
        checkGradient("rs", at: text, analytic: g, tolerance: .lossTerms) { frozenTextL1(text: $0, zeroShot: z).value }
    }

    func testClassBalancedCompactnessByHand() {
        // Class 0 three times at distance^2 2 (orthogonal unit vectors), class 1 once at 0.
        let t = Tensor(shape: [2, 2], data: [1, 0, 0, 1])
        let f = Tensor(shape: [4, 2], data: [0, 1, 0, 1, 0, 1, 0, 1])
        let labels = [0, 0, 0, 1]
        // In-batch counts: each class present weighs 1/2: (2 + 0) / 2 = 1 (an unweighted mean gives 1.5).
        XCTAssertEqual(classBalancedCompactness(images: f, labels: labels, text: t).value, 1, accuracy: 1e-7)
        // Training counts 30 and 10: weights (1/30, 1/30, 1/30, 1/10) / (2/10): class 0 holds 1/2 again.
        XCTAssertEqual(classBalancedCompactness(images: f, labels: labels, text: t, counts: [30, 10]).value, 1, accuracy: 1e-7)
        // Training counts 10 and 30: class 0 weighs 3 * (1/10) / (3/10 + 1/30) = 0.9.
        XCTAssertEqual(classBalancedCompactness(images: f, labels: labels, text: t, counts: [10, 30]).value, 1.8, accuracy: 1e-6)
        XCTAssertEqual(frozenTextL1(text: t, zeroShot: Tensor(shape: [2, 2], data: [1, 1, 0, 0])).value, 0.5, accuracy: 1e-7)
    }

    func testCPTComposesWithAnyBaseMethod() throws {
        let keys = ["tetf", "cc", "rs"]
        XCTAssertEqual(Method.cptTerms.map(\.weight), [0.25, 0.15, 0.10])
        let cpt = try Method.named("cpt")
        XCTAssertEqual(cpt.name, "coop+cpt")
        XCTAssertEqual(cpt.terms, Method.cptTerms)
        XCTAssertEqual(cpt.termInputs, [.zeroShot, .clusters, .classCounts])
        XCTAssertEqual(try Method.named("coop+cpt").terms, cpt.terms)
        XCTAssertEqual(try Method.named("maple+cpt").terms.map(\.key), keys)
        XCTAssertEqual(try Method.named("maple+cpt").architecture, .maple)
        XCTAssertEqual(try Method.named("kgcoop+cpt").terms.map(\.key), ["kg"] + keys)
        XCTAssertEqual(try Method.named("dekg+npt+cpt").terms.map(\.key), ["kg", "hsic", "lc", "mi"] + keys)
        XCTAssertEqual(try Method.named("vpt+cpt").terms.map(\.key), ["cc"], "no learned text: only the compactness term")
        XCTAssertEqual(LossTerm("tetf", weight: 1).parameters, ["clusters": 0, "kmeans_init": 0, "singletons": 0, "seed": -1, "restarts": 10])
        for (spec, says) in [("coop+cpt+cpt", "cpt given twice"), ("coop+xyz", "only +npt and +cpt compose"), ("cptt", "unknown method 'cptt'")] {
            XCTAssertThrowsError(try Method.named(spec)) { XCTAssertTrue("\($0)".contains(says), "\($0)") }
        }
        XCTAssertTrue(LossTerm("tetf", weight: 1, parameters: ["clusters": 2.5]).problem?.contains("whole number") ?? false)
        XCTAssertTrue(LossTerm("tetf", weight: 1, parameters: ["singletons": 3]).problem?.contains("singletons") ?? false)
        XCTAssertTrue(LossTerm("cc", weight: 1, parameters: ["balance": 0.5]).problem?.contains("0 or 1") ?? false)
        XCTAssertNil(LossTerm("tetf", weight: 1, parameters: ["clusters": 3, "singletons": 2]).problem)
        // Round trip through a checkpoint header.
        let m = try Method.named("maple+cpt")
        XCTAssertEqual(try JSONDecoder().decode(Method.self, from: try JSONEncoder().encode(m)), m)
    }

    /// The composed objective's gradients to the raw text features and to the normalised image
    /// features (trainable image prompts) with CPT's terms.
    func testObjectiveWithCPTTerms() {
        let (k, d, b) = (6, 5, 7)
        let text = Tensor.randomNormal([k, d], using: &rng)
        let images = unitRows(b, d)
        let labels = [0, 1, 2, 3, 4, 5, 0]
        let inputs = TermInputs(zeroShot: unitRows(k, d), clusters: [0, 0, 1, 1, 1, 2], classCounts: [16, 8, 4, 2, 1, 1])
        let method = Method(name: "cpt", prompt: PromptConfig(), terms: [
            LossTerm("tetf", weight: 0.25), LossTerm("cc", weight: 0.15, parameters: ["balance": 1]), LossTerm("rs", weight: 0.1)])
        let v = objective(method: method, textFeatures: text, images: images, labels: labels, logitScale: 20, inputs: inputs,
                          imageGradient: true)
        XCTAssertEqual(Set(v.terms.keys), ["ce", "tetf", "cc", "rs"])
        let w = method.terms.map { Double($0.weight) }
        XCTAssertEqual(v.total, v.terms["ce"]! + w[0] * v.terms["tetf"]! + w[1] * v.terms["cc"]! + w[2] * v.terms["rs"]!, accuracy: 1e-9)
        checkGradient("objective text", at: text, analytic: v.dText, tolerance: .lossTerms, atol: 3e-4) {
            objective(method: method, textFeatures: $0, images: images, labels: labels, logitScale: 20, inputs: inputs).total
        }
        checkGradient("objective images", at: images, analytic: v.dImages!, tolerance: .lossTerms, atol: 3e-4) {
            objective(method: method, textFeatures: text, images: $0, labels: labels, logitScale: 20, inputs: inputs, imageGradient: true).total
        }
    }

    /// `coop+cpt` trains from cached features: the clusters come from the zero-shot features of the
    /// hand template with the term's options, once per (features, options).
    func testCoOpPlusCPTTrains() throws {
        var method = try Method.named("coop+cpt")
        method.prompt.contextLength = 4
        method.terms[0].parameters["clusters"] = 2
        var o = OptimizerConfig()
        o.learningRate = 0.05
        let config = TrainConfig(method: method, optimizer: o, epochs: 2, batchSize: 8, seed: 3)
        let tuner = try PromptTuner(model: TrainerTests.model, tokenizer: sharedTokenizer, data: .features(TrainerTests.features), config: config)
        let clusters = try XCTUnwrap(tuner.inputs.clusters)
        // The K-means seed is the run's (3) unless tetf.seed is set.
        XCTAssertEqual(clusters, kMeans(tuner.inputs.zeroShot!, clusters: 2, options: ClusterOptions(count: 2, seed: 3)))
        XCTAssertEqual(ClusterOptions(parameters: LossTerm("tetf", weight: 1).parameters, runSeed: 3).seed, 3)
        XCTAssertEqual(ClusterOptions(parameters: LossTerm("tetf", weight: 1, parameters: ["seed": 9]).parameters, runSeed: 3).seed, 9)
        XCTAssertEqual(Set(clusters), [0, 1])
        XCTAssertEqual(tuner.inputs.classCounts, [8, 8, 8, 8, 8])
        var last: ObjectiveValue?
        while !tuner.isFinished { try tuner.runEpoch { last = $0.value } }
        let v = try XCTUnwrap(last)
        XCTAssertTrue(v.total.isFinite)
        XCTAssertEqual(Set(v.terms.keys), ["ce", "tetf", "cc", "rs"])
        XCTAssertGreaterThan(v.terms["tetf"]!, 0)
        // More clusters than classes is refused with the option's name.
        method.terms[0].parameters["clusters"] = 6
        XCTAssertThrowsError(try PromptTuner(model: TrainerTests.model, tokenizer: sharedTokenizer, data: .features(TrainerTests.features),
                                             config: TrainConfig(method: method, optimizer: o, epochs: 1, batchSize: 8))) {
            XCTAssertTrue("\($0)".contains("tetf.clusters"), "\($0)")
        }
        method.terms[0].parameters["clusters"] = 2.5
        XCTAssertThrowsError(try PromptTuner(model: TrainerTests.model, tokenizer: sharedTokenizer, data: .features(TrainerTests.features),
                                             config: TrainConfig(method: method, optimizer: o, epochs: 1, batchSize: 8))) {
            XCTAssertTrue("\($0)".contains("parameter clusters of loss term 'tetf' must be a whole number"), "\($0)")
        }
    }
}
