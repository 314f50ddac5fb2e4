import Foundation
import Analysis
import XCTest

final class StatisticsTests: XCTestCase {
    func testMeanAndBothStds() throws {
        let x: [Double] = [2, 4, 4, 4, 5, 5, 7, 9]  // mean 5, sum of squared deviations 32
        XCTAssertEqual(Statistics.mean(x), 5)
        XCTAssertEqual(try XCTUnwrap(Statistics.populationStd(x)), 2, accuracy: 1e-15)
        XCTAssertEqual(try XCTUnwrap(Statistics.sampleStd(x)), (32.0 / 7).squareRoot(), accuracy: 1e-15)
        XCTAssertNil(Statistics.mean([]))
        XCTAssertNil(Statistics.populationStd([]))
        XCTAssertEqual(Statistics.populationStd([3]), 0)
        XCTAssertNil(Statistics.sampleStd([3]))
    }

    func testPearsonByHand() throws {
        // dx = (-2, -1, 0, 1, 2), dy = (-2, 0, 1, 0, 1): sxy = 6, sxx = 10, syy = 6.
        let r = try XCTUnwrap(Statistics.pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]))
        XCTAssertEqual(r, 6 / 60.0.squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(try XCTUnwrap(Statistics.pearson([1, 2, 3], [-2, -4, -6])), -1, accuracy: 1e-15)
        XCTAssertNil(Statistics.pearson([1, 2, 3], [1, 1, 1]))  // zero variance
        XCTAssertNil(Statistics.pearson([1], [2]))
        XCTAssertNil(Statistics.pearson([1, 2], [1, 2, 3]))
    }

    func testSpearmanAveragesTiedRanks() throws {
        XCTAssertEqual(Statistics.ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
        XCTAssertEqual(Statistics.ranks([1, 1, 1]), [2, 2, 2])
        // y ranks (1, 2.5, 4.5, 2.5, 4.5): sxy = 7, sxx = 10, syy = 9 (scipy.stats.spearmanr: 0.7378647873726218).
        let rho = try XCTUnwrap(Statistics.spearman([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]))
        XCTAssertEqual(rho, 7 / 90.0.squareRoot(), accuracy: 1e-15)
        // Monotone but not linear: rank correlation 1, Pearson below 1.
        let x: [Double] = [0.1, 0.5, 1, 2, 4]
        XCTAssertEqual(Statistics.spearman(x, x.map { exp(3 * $0) }), 1)
        XCTAssertLessThan(try XCTUnwrap(Statistics.pearson(x, x.map { exp(3 * $0) })), 0.9)
        XCTAssertNil(Statistics.spearman([1, 2, 3], [4, 4, 4]))
    }
}
