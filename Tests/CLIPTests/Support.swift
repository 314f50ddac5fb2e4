import Foundation
import TensorCore
import XCTest

/// Agreement between a computed tensor and its reference.
struct Agreement: CustomStringConvertible {
    var maxAbs: Float = 0        // max |got - want|
    var scale: Float = 0         // max |want|
    var worstRelative: Float = 0 // max |got - want| / |want| over elements with |want| >= 1% of scale
    var worstIndex = -1

    init(_ got: Tensor, _ want: Tensor) {
        scale = want.maxAbs
        for i in 0..<min(got.count, want.count) {
            let d = abs(got[i] - want[i])
            if d > maxAbs { maxAbs = d; worstIndex = i }
            if abs(want[i]) >= 0.01 * scale { worstRelative = max(worstRelative, d / abs(want[i])) }
        }
    }

    /// max error relative to the reference's largest magnitude.
    var normRelative: Float { scale == 0 ? maxAbs : maxAbs / scale }

    var description: String {
        String(format: "max abs %.3g (at %d), relative to scale %.3g, worst elementwise relative %.3g",
               maxAbs, worstIndex, normRelative, worstRelative)
    }
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise and prints the agreement, so that a
/// run against ViT-B/16 goldens reports its numbers.
@discardableResult
func assertAgrees(_ got: Tensor, _ want: Tensor, atol: Float, rtol: Float, _ what: String,
                  file: StaticString = #filePath, line: UInt = #line) -> Agreement {
    XCTAssertEqual(got.count, want.count, "\(what): \(got.shape) vs \(want.shape)", file: file, line: line)
    let a = Agreement(got, want)
    var violation = -1
    for i in 0..<min(got.count, want.count) where abs(got[i] - want[i]) > atol + rtol * abs(want[i]) {
        violation = i
        break
    }
    XCTAssertEqual(violation, -1, "\(what): element \(violation) \(violation >= 0 ? got[violation] : 0) vs \(violation >= 0 ? want[violation] : 0); \(a)",
                   file: file, line: line)
    print("parity \(what): \(a)")
    return a
}
