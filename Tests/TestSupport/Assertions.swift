import Foundation
import TensorCore
import XCTest

/// Asserts that `body` throws an error whose description contains every fragment.
public func assertThrows<T>(_ body: @autoclosure () throws -> T, contains fragments: [String],
                            file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(fragments)", file: file, line: line)
    } catch {
        let message = String(describing: error)
        for f in fragments where !message.contains(f) {
            XCTFail("error message lacks '\(f)':\n\(message)", file: file, line: line)
        }
    }
}

/// The largest elementwise |a - b| (over the shorter of the two).
public func maxDiff(_ a: Tensor, _ b: Tensor) -> Float {
    zip(a.data, b.data).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// Asserts equal shapes and |a - b| <= atol + rtol * |b| elementwise, naming the worst element.
public func assertClose(_ a: Tensor, _ b: Tensor, atol: Float, rtol: Float = 0, _ what: String,
                        file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.shape, b.shape, "\(what): shapes", file: file, line: line)
    var worst: (Float, Int) = (0, -1)
    for i in 0..<min(a.count, b.count) {
        let e = abs(a[i] - b[i]) - rtol * abs(b[i])
        if e > worst.0 { worst = (e, i) }
    }
    XCTAssertLessThanOrEqual(worst.0, atol, "\(what): worst element \(worst.1): \(worst.1 >= 0 ? a[worst.1] : 0) vs \(worst.1 >= 0 ? b[worst.1] : 0)", file: file, line: line)
}
