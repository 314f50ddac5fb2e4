import Foundation
import XCTest
@testable import Datasets

final class SamplingTests: XCTestCase {

    // MARK: PythonRandom against CPython

    func testPythonRandomMatchesCPython() throws {
        let golden = try SamplingGoldens.load(RandomGolden.self, "random.json")
        XCTAssertGreaterThanOrEqual(golden.seeds.count, 5)
        for s in golden.seeds {
            let label = "seed \(s.seed.map(String.init) ?? "words \(s.seed_words)")"
            var rng = PythonRandom(seedMagnitudeWords: s.seed_words)
            if let seed = s.seed {
                XCTAssertEqual(PythonRandom(seed: seed), rng, "\(label): int and word seeding differ")
                rng = PythonRandom(seed: seed)
            }
            XCTAssertEqual((0..<20).map { _ in UInt32(rng.getrandbits(32)) }, s.getrandbits32, "\(label): getrandbits(32)")
            for b in s.getrandbits {
                let got = (0..<b.words.count).map { _ in rng.getrandbitsWords(b.k) }
                XCTAssertEqual(got, b.words, "\(label): getrandbits(\(b.k))")
            }
            XCTAssertEqual((0..<s.random53.count).map { _ in UInt64(rng.random() * 9_007_199_254_740_992.0) }, s.random53,
                           "\(label): random()")
            for r in s.randbelow {
                XCTAssertEqual((0..<r.values.count).map { _ in rng.randbelow(r.n) }, r.values, "\(label): _randbelow(\(r.n))")
            }
            for c in s.sample {
                let got = rng.sampleIndices(populationSize: c.n, count: c.k)
                XCTAssertTrue(c.result.matches(got),
                              "\(label): sample(range(\(c.n)), \(c.k)): expected \(c.result), got \(sampledSummary(got))")
            }
            var xs = Array(0..<20)
            rng.shuffle(&xs)
            XCTAssertEqual(xs, s.shuffle20, "\(label): shuffle")
            XCTAssertEqual((0..<s.choice7.count).map { _ in rng.choice(Array(0..<7))! }, s.choice7, "\(label): choice")
            for c in s.choices {
                XCTAssertEqual(rng.choices(Array(0..<c.n), k: c.k), c.result, "\(label): choices(range(\(c.n)), k=\(c.k))")
            }
            XCTAssertEqual((0..<3).map { _ in UInt32(rng.getrandbits(32)) }, s.final32, "\(label): state after the script")
        }
    }

    func testPythonRandomKnownValues() {
        // python3 -c "import random; random.seed(42); print(random.random())" -> 0.6394267984578837
        var rng = PythonRandom(seed: 42)
        XCTAssertEqual(rng.random(), 0.6394267984578837)
        // Negative seeds use abs(seed); seeding again restarts the stream.
        var a = PythonRandom(seed: -7), b = PythonRandom(seed: 7)
        XCTAssertEqual(a.getrandbits(32), b.getrandbits(32))
        a.seed(7)
        b.seed(7)
        XCTAssertEqual(a, b)
        XCTAssertEqual(PythonRandom(seed: 0), PythonRandom(seedMagnitudeWords: []))
        XCTAssertEqual(PythonRandom(seed: 5), PythonRandom(seedMagnitudeWords: [5, 0, 0]))
        XCTAssertEqual(a.getrandbits(0), 0)
        XCTAssertNil(a.choice([Int]()))
        XCTAssertEqual(a, b, "getrandbits(0) and choice([]) draw nothing")
        XCTAssertEqual(rng.sample([String](), k: 0), [])
        // setsize thresholds of CPython's sample.
        XCTAssertEqual(PythonRandom.sampleSetSize(5), 21)
        XCTAssertEqual(PythonRandom.sampleSetSize(6), 85)
        XCTAssertEqual(PythonRandom.sampleSetSize(22), 277)
        XCTAssertEqual(PythonRandom.sampleSetSize(341), 1045)
        XCTAssertEqual(PythonRandom.sampleSetSize(342), 4117)
    }

    // MARK: Few-shot sampling against Dassl / CoOp

    func testFewShotMatchesDassl() throws {
        let golden = try SamplingGoldens.load(FewShotGolden.self, "fewshot.json")
        var checked = 0
        for ds in golden.datasets {
            for c in ds.cases {
                var rng = PythonRandom(seed: c.seed)
                let train = fewShotIndices(labels: ds.train_labels, shots: c.shots, rng: &rng)
                let val = fewShotIndices(labels: ds.val_labels, shots: fewShotValidationShots(c.shots), rng: &rng)
                let where_ = "\(ds.name) (\(ds.train_labels.count) train / \(ds.val_labels.count) val items), seed \(c.seed), \(c.shots) shots"
                XCTAssertTrue(c.train.matches(train), "\(where_): train expected \(c.train), got \(sampledSummary(train))")
                XCTAssertTrue(c.val.matches(val), "\(where_): val expected \(c.val), got \(sampledSummary(val))")
                checked += 1
            }
        }
        XCTAssertEqual(checked, golden.datasets.count * golden.seeds.count * golden.shots.count)
        XCTAssertEqual(golden.seeds, Array(1...50))
        XCTAssertEqual(golden.shots, [1, 2, 4, 8, 16])

        for c in golden.repeat_cases {
            let ds = try XCTUnwrap(golden.datasets.first { $0.name == c.dataset })
            var rng = PythonRandom(seed: c.seed)
            let train = fewShotIndices(labels: ds.train_labels, shots: c.shots, rng: &rng, repeat: true)
            let val = fewShotIndices(labels: ds.val_labels, shots: min(c.shots, 4), rng: &rng, repeat: true)
            let where_ = "\(c.dataset) repeat=True, seed \(c.seed), \(c.shots) shots"
            XCTAssertTrue(c.train.matches(train), "\(where_): train expected \(c.train), got \(sampledSummary(train))")
            XCTAssertTrue(c.val.matches(val), "\(where_): val expected \(c.val), got \(sampledSummary(val))")
        }
    }

    /// `fewShotSplits` on Datum lists is the index sampling mapped onto the items.
    func testFewShotSplitsOnDatums() throws {
        let golden = try SamplingGoldens.load(FewShotGolden.self, "fewshot.json")
        for ds in golden.datasets {
            let train = datums(ds.train_labels, "tr"), val = datums(ds.val_labels, "va")
            for c in ds.cases where c.seed <= 3 {
                let split = fewShotSplits(train: train, val: val, shots: c.shots, seed: c.seed)
                let where_ = "\(ds.name), seed \(c.seed), \(c.shots) shots"
                XCTAssertTrue(c.train.matches(positions(split.train, "tr")), "\(where_): train")
                XCTAssertTrue(c.val.matches(positions(split.val, "va")), "\(where_): val")
                // ImageNet: train only, val untouched; train is drawn first, so it is the same draw.
                let imagenet = fewShotSplits(train: train, val: val, shots: c.shots, seed: c.seed, sampleVal: false)
                XCTAssertEqual(imagenet.train, split.train, "\(where_): ImageNet-style train")
                XCTAssertEqual(imagenet.val, val, "\(where_): ImageNet-style val")
            }
            // shots <= 0: all data, nothing drawn.
            XCTAssertEqual(fewShotSplits(train: train, val: val, shots: 0, seed: 1), FewShotSplit(train: train, val: val))
            XCTAssertEqual(fewShotSplits(train: train, val: val, shots: -1, seed: 1), FewShotSplit(train: train, val: val))
            var rng = PythonRandom(seed: 9)
            let before = rng
            XCTAssertEqual(fewShotSample(train, shots: 0, rng: &rng), train)
            XCTAssertEqual(rng, before)
        }
    }

    func testFewShotGroupingAndSmallClasses() {
        // Labels in first-appearance order; classes with fewer than K items are taken whole, in order.
        let labels = [5, 2, 5, 9, 2, 5, 5, 9, 2]
        XCTAssertEqual(labelGroups(labels).map(\.label), [5, 2, 9])
        XCTAssertEqual(labelGroups(labels).map(\.indices), [[0, 2, 5, 6], [1, 4, 8], [3, 7]])
        var rng = PythonRandom(seed: 1)
        let picked = fewShotIndices(labels: labels, shots: 3, rng: &rng)
        XCTAssertEqual(picked.count, 3 + 3 + 2)
        XCTAssertEqual(picked.map { labels[$0] }, [5, 5, 5, 2, 2, 2, 9, 9])
        XCTAssertEqual(Array(picked[6...]), [3, 7])
        XCTAssertEqual(Set(picked[0..<3]).count, 3)
        var r2 = PythonRandom(seed: 1)
        XCTAssertEqual(fewShotIndices(labels: [], shots: 4, rng: &r2), [])
        XCTAssertEqual(fewShotIndices(labels: labels, shots: 0, rng: &r2), Array(0..<9))
    }

    // MARK: Class imbalance

    func testImbalanceCountsK10() throws {
        XCTAssertEqual(try imbalanceShotCounts(classCount: 10, tau: 1), Array(repeating: 16, count: 10))
        // floor(16 * 0.25 ** (k / 9)) and floor(16 * 0.06 ** (k / 9)), clamped to at least 1.
        XCTAssertEqual(try imbalanceShotCounts(classCount: 10, tau: 0.25), [16, 13, 11, 10, 8, 7, 6, 5, 4, 4])
        XCTAssertEqual(try imbalanceShotCounts(classCount: 10, tau: 0.06), [16, 11, 8, 6, 4, 3, 2, 1, 1, 1])
    }

    func testImbalanceCountsK100() throws {
        XCTAssertEqual(try imbalanceShotCounts(classCount: 100, tau: 1), Array(repeating: 16, count: 100))
        for (tau, last) in [(0.25, 4), (0.06, 1)] {
            let counts = try imbalanceShotCounts(classCount: 100, tau: tau)
            XCTAssertEqual(counts.count, 100)
            XCTAssertEqual(counts.first, 16, "tau \(tau)")
            XCTAssertEqual(counts.last, last, "tau \(tau)")
            XCTAssertTrue(zip(counts, counts.dropFirst()).allSatisfy { $0 >= $1 }, "tau \(tau): not non-increasing")
            XCTAssertTrue(counts.allSatisfy { $0 >= 1 && $0 <= 16 })
        }
        // k = 33 gets floor(16 * 0.25^(1/3)) = 10.
        XCTAssertEqual(try imbalanceShotCounts(classCount: 100, tau: 0.25)[33], 10)
        XCTAssertEqual(try imbalanceShotCounts(classCount: 100, tau: 0.25).reduce(0, +), 820)
        XCTAssertEqual(try imbalanceShotCounts(classCount: 100, tau: 0.06).reduce(0, +), 493)
    }

    func testImbalanceEdgesAndErrors() throws {
        XCTAssertEqual(try imbalanceShotCounts(classCount: 1, tau: 0.06), [16])
        XCTAssertEqual(try imbalanceShotCounts(classCount: 0, tau: 0.5), [])
        XCTAssertEqual(try imbalanceShotCounts(classCount: 2, tau: 0.25, headShots: 8), [8, 2])
        for tau in [0.0, -0.5, 1.0000001, 2, .nan, .infinity] {
            XCTAssertThrowsError(try imbalanceShotCounts(classCount: 10, tau: tau), "tau \(tau)") { error in
                guard case SamplingError.invalidImbalance = error else { return XCTFail("tau \(tau): \(error)") }
                XCTAssertTrue("\(error)".contains("(0, 1]"))
            }
        }
        XCTAssertThrowsError(try imbalanceShotCounts(classCount: 10, tau: 0.5, headShots: 0))
        XCTAssertThrowsError(try imbalancedFewShot([Datum(path: "a", label: 0, className: "a")], tau: 0))
    }

    func testImbalanceGoldens() throws {
        let golden = try SamplingGoldens.load(ImbalanceGolden.self, "imbalance.json")
        for c in golden.counts {
            let got = try imbalanceShotCounts(classCount: c.K, tau: c.tau)
            XCTAssertTrue(c.counts.matches(got), "K = \(c.K), tau = \(c.tau): expected \(c.counts), got \(sampledSummary(got))")
        }
        let fewshot = try SamplingGoldens.load(FewShotGolden.self, "fewshot.json")
        for a in golden.applied {
            let ds = try XCTUnwrap(fewshot.datasets.first { $0.name == a.dataset })
            var rng = PythonRandom(seed: a.seed)
            let draw = fewShotIndices(labels: ds.train_labels, shots: a.shots, rng: &rng)
            XCTAssertEqual(draw, a.draw, "\(a.dataset) seed \(a.seed): 16-shot draw")
            let all = datums(ds.train_labels, "tr")
            let fewShot = draw.map { all[$0] }
            for k in a.kept {
                XCTAssertEqual(try imbalancedIndices(labels: draw.map { ds.train_labels[$0] }, tau: k.tau), k.positions,
                               "\(a.dataset) seed \(a.seed) tau \(k.tau)")
                XCTAssertEqual(try imbalancedFewShot(fewShot, tau: k.tau), k.positions.map { fewShot[$0] })
            }
        }
    }

    func testImbalanceKeepsDrawOrderAndLabelRank() throws {
        // Labels 7 and 3 (rank 1 and 0): label 3 is the head class even though 7 comes first.
        let list = [7, 7, 7, 7, 3, 3, 3, 3].enumerated().map { Datum(path: "\($0.offset)", label: $0.element, className: "c\($0.element)") }
        let kept = try imbalancedFewShot(list, tau: 0.25, headShots: 4)   // counts [4, 1]
        XCTAssertEqual(kept.map(\.path), ["0", "4", "5", "6", "7"])
        XCTAssertEqual(try imbalancedFewShot(list, tau: 1, headShots: 4), list)
    }

    // MARK: Base / novel

    func testBaseNovelOddEven() {
        let odd = BaseNovelSplit(labels: [4, 0, 2, 1, 3, 2])
        XCTAssertEqual(odd.labels, [0, 1, 2, 3, 4])
        XCTAssertEqual(odd.base, [0, 1, 2])
        XCTAssertEqual(odd.novel, [3, 4])
        let even = BaseNovelSplit(labels: 0..<4)
        XCTAssertEqual(even.base, [0, 1])
        XCTAssertEqual(even.novel, [2, 3])
        let gaps = BaseNovelSplit(labels: [10, 3, 7])
        XCTAssertEqual(gaps.base, [3, 7])
        XCTAssertEqual(gaps.novel, [10])
        XCTAssertEqual(gaps.relabeling(.novel), [10: 0])
        XCTAssertEqual(BaseNovelSplit(labels: [5]).base, [5])
        XCTAssertEqual(BaseNovelSplit(labels: [5]).novel, [])
        XCTAssertEqual(BaseNovelSplit(labels: []).base, [])

        let data = [3, 0, 4, 1, 2, 4].enumerated().map { Datum(path: "p\($0.offset)", label: $0.element, className: "n\($0.element)") }
        let base = odd.apply(.base, to: data), novel = odd.apply(.novel, to: data)
        XCTAssertEqual(base, [Datum(path: "p1", label: 0, className: "n0"), Datum(path: "p3", label: 1, className: "n1"),
                              Datum(path: "p4", label: 2, className: "n2")])
        XCTAssertEqual(novel, [Datum(path: "p0", label: 0, className: "n3"), Datum(path: "p2", label: 1, className: "n4"),
                               Datum(path: "p5", label: 1, className: "n4")])
        XCTAssertEqual(odd.apply(.all, to: data), data)
        XCTAssertEqual(odd.classNames(.novel, allClassNames: ["a", "b", "c", "d", "e"]), ["d", "e"])
        XCTAssertEqual(ClassSubset(rawValue: "new"), .novel)

        // Even count on DatasetSplits: the split comes from train, test carries classes train lacks.
        let train = (0..<6).map { Datum(path: "t\($0)", label: $0, className: "c\($0)") }
        let test = (0..<7).map { Datum(path: "x\($0)", label: $0, className: "c\($0)") }
        let splits = DatasetSplits(name: "toy", imageRoot: URL(fileURLWithPath: "/tmp"), train: train, val: [], test: test,
                                   classNames: (0..<7).map { "c\($0)" }, template: "a photo of a {}.")
        let novelSplits = subsampleClasses(splits, subset: .novel)
        XCTAssertEqual(novelSplits.train.map(\.label), [0, 1, 2])
        XCTAssertEqual(novelSplits.test.map(\.path), ["x3", "x4", "x5"])
        XCTAssertEqual(novelSplits.classNames, ["c3", "c4", "c5"])
        XCTAssertEqual(subsampleClasses(splits, subset: .base).classNames, ["c0", "c1", "c2"])
    }

    func testSubsampleMatchesCoOp() throws {
        let golden = try SamplingGoldens.load(SubsampleGolden.self, "subsample.json")
        let fewshot = try SamplingGoldens.load(FewShotGolden.self, "fewshot.json")
        for c in golden.cases {
            let ds = try XCTUnwrap(fewshot.datasets.first { $0.name == c.dataset })
            let split = fewShotSplits(train: datums(ds.train_labels, "tr"), val: datums(ds.val_labels, "va"),
                                      shots: c.shots, seed: c.seed)
            XCTAssertEqual(positions(split.train, "tr"), c.train_in, "\(c.dataset): few-shot train")
            XCTAssertEqual(positions(split.val, "va"), c.val_in, "\(c.dataset): few-shot val")
            let subset = try XCTUnwrap(ClassSubset(rawValue: c.subsample))
            let out = subsampleClasses([split.train, split.val], subset: subset)
            XCTAssertEqual(zip(positions(out[0], "tr"), out[0]).map { [$0, $1.label] }, c.train, "\(c.dataset) \(c.subsample): train")
            XCTAssertEqual(zip(positions(out[1], "va"), out[1]).map { [$0, $1.label] }, c.val, "\(c.dataset) \(c.subsample): val")
            // Class names are carried from the original labels.
            for (i, d) in zip(positions(out[0], "tr"), out[0]) { XCTAssertEqual(d.className, "class \(ds.train_labels[i])") }
            for (i, d) in zip(positions(out[1], "va"), out[1]) { XCTAssertEqual(d.className, "class \(ds.val_labels[i])") }
        }
    }

    // MARK: CoOp's cached pickles

    func testReadCoOpCache() throws {
        let golden = try SamplingGoldens.load(CacheGolden.self, "coop_cache/cache.json")
        let root = URL(fileURLWithPath: golden.image_root)
        for f in golden.files {
            let url = SamplingGoldens.cacheDirectory.appendingPathComponent(f.file)
            let cache = try FewShotCache(contentsOf: url, imageRoot: root)
            XCTAssertEqual(cache.train, f.train.map { Datum(path: $0.path, label: $0.label, className: $0.className) }, f.file)
            XCTAssertEqual(cache.val, f.val.map { $0.map { Datum(path: $0.path, label: $0.label, className: $0.className) } }, f.file)
            // A trailing slash on the root changes nothing.
            let slashed = try FewShotCache(contentsOf: url, imageRoot: URL(fileURLWithPath: golden.image_root + "/"))
            XCTAssertEqual(slashed, cache, f.file)
        }
        XCTAssertTrue(golden.files.contains { $0.val == nil }, "an ImageNet-style file (train only)")
        XCTAssertEqual(FewShotCache.fileName(shots: 16, seed: 3), "shot_16-seed_3.pkl")
        XCTAssertEqual(FewShotCache.url(datasetDirectory: URL(fileURLWithPath: "/d/oxford_pets"), shots: 2, seed: 1).path,
                       "/d/oxford_pets/split_fewshot/shot_2-seed_1.pkl")
    }

    /// The pickles were written by Dassl's sampling from the full lists: our sampling gives the same.
    func testCoOpCacheEqualsOurSampling() throws {
        let golden = try SamplingGoldens.load(CacheGolden.self, "coop_cache/cache.json")
        let fewshot = try SamplingGoldens.load(FewShotGolden.self, "fewshot.json")
        let ds = try XCTUnwrap(fewshot.datasets.first { $0.name == golden.dataset })
        func full(_ labels: [Int], _ split: String) -> [Datum] {
            labels.enumerated().map { i, y in
                let name = golden.class_names[y]
                let index = String(i), padded = String(repeating: "0", count: max(0, 4 - index.count)) + index
                return Datum(path: "\(name.replacingOccurrences(of: " ", with: "_"))/\(split)_\(padded).jpg", label: y, className: name)
            }
        }
        let train = full(ds.train_labels, "tr"), val = full(ds.val_labels, "va")
        let root = URL(fileURLWithPath: golden.image_root)
        for f in golden.files {
            let cache = try FewShotCache(contentsOf: SamplingGoldens.cacheDirectory.appendingPathComponent(f.file), imageRoot: root)
            let ours = fewShotSplits(train: train, val: val, shots: f.shots, seed: f.seed, sampleVal: cache.val != nil)
            XCTAssertEqual(ours.train, cache.train, "\(f.file): train")
            if let cachedVal = cache.val { XCTAssertEqual(ours.val, cachedVal, "\(f.file): val") }
        }
    }

    func testCacheErrors() throws {
        let golden = try SamplingGoldens.load(CacheGolden.self, "coop_cache/cache.json")
        let root = URL(fileURLWithPath: golden.image_root)
        for b in golden.bad {
            let url = SamplingGoldens.cacheDirectory.appendingPathComponent(b.file)
            XCTAssertThrowsError(try FewShotCache(contentsOf: url, imageRoot: root), b.file) { error in
                let message = "\(error)"
                XCTAssertTrue(error is SamplingError, "\(b.file): \(type(of: error))")
                XCTAssertTrue(message.contains(url.path), "\(b.file): message does not name the file: \(message)")
                XCTAssertTrue(message.contains(b.mentions), "\(b.file): message does not mention '\(b.mentions)': \(message)")
            }
        }
        // Missing file.
        let missing = SamplingGoldens.cacheDirectory.appendingPathComponent("shot_99-seed_9.pkl")
        XCTAssertThrowsError(try FewShotCache(contentsOf: missing, imageRoot: root)) { error in
            guard case SamplingError.cacheUnreadable(let path, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, missing.path)
        }
        // A good file read with the wrong image root.
        let good = SamplingGoldens.cacheDirectory.appendingPathComponent(golden.files[0].file)
        XCTAssertThrowsError(try FewShotCache(contentsOf: good, imageRoot: URL(fileURLWithPath: "/data/coop/oxford_pets"
                                                                                                + "/images_other"))) { error in
            guard case SamplingError.cachePathOutsideRoot(let path, let item, _, let r) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, good.path)
            XCTAssertEqual(item, "train[0]")
            XCTAssertEqual(r, "/data/coop/oxford_pets/images_other")
        }
        // Not a pickle at all.
        XCTAssertThrowsError(try FewShotCache(pickle: Array("{\"train\": []}".utf8), source: "x.pkl", imageRoot: root)) { error in
            guard case SamplingError.cacheMalformed(let path, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "x.pkl")
        }
    }

    // MARK: Helpers

    /// Synthetic items whose path encodes their position: "<prefix>/<i>".
    private func datums(_ labels: [Int], _ prefix: String) -> [Datum] {
        labels.enumerated().map { Datum(path: "\(prefix)/\($0.offset)", label: $0.element, className: "class \($0.element)") }
    }

    private func positions(_ data: [Datum], _ prefix: String) -> [Int] {
        data.map { Int($0.path.dropFirst(prefix.count + 1))! }
    }
}
