import XCTest
@testable import prompttune

final class ProgressBarTests: XCTestCase {
    /// A step found cached (all done within microseconds) has no rate; it used to print 1945184.5 img/s.
    func testNoRateForWorkDoneInAnInstant() {
        XCTAssertNil(ProgressBar.rate(done: 6_400, elapsed: 0.003))
        XCTAssertNil(ProgressBar.rate(done: 0, elapsed: 12))
        XCTAssertEqual(ProgressBar.rate(done: 30, elapsed: 2)!, 15, accuracy: 1e-12)
    }
}
