import Datasets
import XCTest

/// Candle's imbalanced profile (METHODS.md section 4): classes ranked by their count, largest first
/// (ties in first-appearance order); rank i keeps int(max(img_max * r^(i/(C-1)), 1)).
final class CandleImbalanceTests: XCTestCase {
    func testRanksClassesByCountAndKeepsTheirFirstItems() throws {
        // Class 5 (10 items) appears before class 2 (10 items, a tie) and class 7 (4 items).
        let labels = [5, 2, 5, 7] + Array(repeating: 5, count: 8) + Array(repeating: 2, count: 9) + [7, 7, 7]
        let kept = try candleImbalancedIndices(labels: labels, ratio: 0.1)
        // Ranks: 5 (10 items) -> 10, 2 (tie, later) -> int(10 * 0.1^0.5) = 3, 7 -> int(max(10 * 0.1, 1)) = 1.
        var counts: [Int: Int] = [:]
        for i in kept { counts[labels[i], default: 0] += 1 }
        XCTAssertEqual(counts, [5: 10, 2: 3, 7: 1])
        // Each class keeps its first items, in list order.
        XCTAssertEqual(kept.filter { labels[$0] == 2 }, [1, 12, 13])
        XCTAssertEqual(kept.filter { labels[$0] == 7 }, [3])
        XCTAssertEqual(kept, kept.sorted())
        // Ratio 1 keeps everything (every class at most img_max).
        XCTAssertEqual(try candleImbalancedIndices(labels: labels, ratio: 1), Array(labels.indices))
        for bad in [0, -0.5, 1.5, .nan] { XCTAssertThrowsError(try candleImbalancedIndices(labels: labels, ratio: bad)) }
    }

    /// CIFAR-100-like counts (img_max 500, 100 classes, r = 0.02), as Python's
    /// `int(max(500 * 0.02 ** (i / 99), 1))` gives them: 500, 480, 336, 69, 10, 10 at ranks 0, 1, 10, 50, 98, 99.
    func testCountsEqualPythons() throws {
        let labels = (0..<100).flatMap { Array(repeating: $0, count: 500) }
        let kept = try candleImbalancedIndices(labels: labels, ratio: 0.02)
        var counts = [Int](repeating: 0, count: 100)
        for i in kept { counts[labels[i]] += 1 }
        XCTAssertEqual([0, 1, 10, 50, 98, 99].map { counts[$0] }, [500, 480, 336, 69, 10, 10])
    }

    /// In a selection only the training list is thinned (val is not), with or without a few-shot draw.
    func testSelectionThinsTrainOnly() throws {
        func items(_ n: Int, _ label: Int, _ part: String) -> [Datum] {
            (0..<n).map { Datum(path: "/d/\(part)/\(label)_\($0).png", label: label, className: "c\(label)") }
        }
        let splits = DatasetSplits(name: "toy", imageRoot: URL(fileURLWithPath: "/d"),
                                   train: items(6, 0, "train") + items(6, 1, "train") + items(6, 2, "train") + items(6, 3, "train"),
                                   val: items(4, 0, "val") + items(4, 1, "val") + items(4, 2, "val") + items(4, 3, "val"),
                                   test: items(2, 0, "test"), classNames: ["c0", "c1", "c2", "c3"], template: "a photo of a {}.")
        let s = try select(splits, dataset: .imageFolder, options: SelectionOptions(imbalance: 0.25, imbalanceProfile: .candle))
        var counts = [Int](repeating: 0, count: 4)
        for d in s.train { counts[d.label] += 1 }
        XCTAssertEqual(counts, [6, 3, 2, 1], "int(max(6 * 0.25^(i/3), 1))")
        XCTAssertEqual(s.val.count, 16, "val is not imbalanced")
        // The tau profile needs shots; Candle's does not. Both are told apart in the features file name.
        XCTAssertThrowsError(try select(splits, dataset: .imageFolder, options: SelectionOptions(imbalance: 0.25)))
    }
}
