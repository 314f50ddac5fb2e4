import Cluster
import Experiments
import XCTest

final class CellNumbersTests: XCTestCase {
    func testParseAndCompactRoundTrip() throws {
        XCTAssertEqual(try CellNumbers.parse(["3"]), [3])
        XCTAssertEqual(try CellNumbers.parse(["0-3,5", "9-10", "2"]), [0, 1, 2, 3, 5, 9, 10])
        XCTAssertEqual(CellNumbers.compact([10, 0, 1, 2, 3, 5, 9, 3]), "0-3,5,9-10")
        XCTAssertEqual(CellNumbers.compact([7]), "7")
        for bad in ["-1", "3-1", "a", "1-2-3", "", "4,"] {
            XCTAssertThrowsError(try CellNumbers.parse([bad]), bad) { XCTAssertTrue("\($0)".contains("--cell"), "\($0)") }
        }
    }
}
