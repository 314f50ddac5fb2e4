import Foundation
import XCTest
@testable import TensorIO

final class DTypeTests: XCTestCase {
    func testHalfKnownValues() {
        XCTAssertEqual(floatFromHalfBits(0x3c00), 1)
        XCTAssertEqual(floatFromHalfBits(0xc000), -2)
        XCTAssertEqual(floatFromHalfBits(0x7bff), 65504)
        XCTAssertEqual(floatFromHalfBits(0x0001), Float(sign: .plus, exponent: -24, significand: 1))  // smallest subnormal
        XCTAssertEqual(floatFromHalfBits(0x0400), Float(sign: .plus, exponent: -14, significand: 1))  // smallest normal
        XCTAssertEqual(floatFromHalfBits(0x8000).bitPattern, (-0.0 as Float).bitPattern)
        XCTAssertEqual(floatFromHalfBits(0x7c00), .infinity)
        XCTAssertEqual(floatFromHalfBits(0xfc00), -.infinity)
        XCTAssertTrue(floatFromHalfBits(0x7e00).isNaN)
        XCTAssertEqual(floatFromHalfBits(0x3555), 0.333251953125)
    }

    func testHalfRoundTripIsExactForEveryValue() {
        for bits in 0 ... UInt16.max {
            let f = floatFromHalfBits(bits)
            if f.isNaN { XCTAssertTrue(floatFromHalfBits(halfBitsFromFloat(f)).isNaN); continue }
            XCTAssertEqual(halfBitsFromFloat(f), bits, "0x\(String(bits, radix: 16))")
        }
    }

    func testHalfRounding() {
        XCTAssertEqual(halfBitsFromFloat(1 + 1.0 / 2048), 0x3c00)             // tie to even (down)
        XCTAssertEqual(halfBitsFromFloat(1 + 3.0 / 2048), 0x3c02)             // tie to even (up)
        XCTAssertEqual(halfBitsFromFloat(1 + 1.0 / 2048 + 1.0 / 8192), 0x3c01)
        XCTAssertEqual(halfBitsFromFloat(65520), 0x7c00)                      // rounds to infinity
        XCTAssertEqual(halfBitsFromFloat(65519), 0x7bff)
        XCTAssertEqual(halfBitsFromFloat(1e-8), 0)                            // underflow
        XCTAssertEqual(halfBitsFromFloat(Float(sign: .plus, exponent: -25, significand: 1)), 0)       // tie to even: 0
        XCTAssertEqual(halfBitsFromFloat(Float(sign: .plus, exponent: -25, significand: 1.5)), 1)
        XCTAssertEqual(halfBitsFromFloat(-Float.infinity), 0xfc00)
    }

    func testBFloat16() {
        XCTAssertEqual(floatFromBFloat16Bits(0x3f80), 1)
        XCTAssertEqual(floatFromBFloat16Bits(0xc0a0), -5)
        XCTAssertEqual(bfloat16BitsFromFloat(1), 0x3f80)
        XCTAssertEqual(bfloat16BitsFromFloat(Float(bitPattern: 0x3f80_8000)), 0x3f80)  // tie to even (down)
        XCTAssertEqual(bfloat16BitsFromFloat(Float(bitPattern: 0x3f81_8000)), 0x3f82)  // tie to even (up)
        XCTAssertEqual(bfloat16BitsFromFloat(Float(bitPattern: 0x3f80_8001)), 0x3f81)
        XCTAssertTrue(floatFromBFloat16Bits(bfloat16BitsFromFloat(.nan)).isNaN)
        for bits in stride(from: 0, through: UInt16.max, by: 7) where !floatFromBFloat16Bits(bits).isNaN {
            XCTAssertEqual(bfloat16BitsFromFloat(floatFromBFloat16Bits(bits)), bits)
        }
    }
}
