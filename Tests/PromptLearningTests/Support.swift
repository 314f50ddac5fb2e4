import CLIP
import Foundation
import TensorCore
import XCTest

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// A small random CLIP with the real vocabulary, 2 text heads, for engine tests.
let smallConfig = CLIPConfig(embedDim: 16, imageResolution: 16, patchSize: 8, visionWidth: 64, visionLayers: 1,
                             visionHeads: 1, contextLength: 77, vocabSize: 49408, textWidth: 32, textLayers: 2, textHeads: 2)
let smallModel = CLIPModel.random(config: smallConfig, seed: 7)
let sharedTokenizer = try! CLIPTokenizer()

func checkGradient(_ name: String, at x: Tensor, analytic: Tensor, eps: Float = 1e-3, atol: Float = 1e-4,
                   rtol: Float = 2e-2, maxProbes: Int = 48, file: StaticString = #filePath, line: UInt = #line,
                   _ f: (Tensor) -> Double) {
    XCTAssertEqual(x.shape, analytic.shape, "\(name): gradient shape", file: file, line: line)
    let stride = max(1, x.count / maxProbes)
    var worst: (Float, Int, Float, Float) = (0, -1, 0, 0)
    for i in Swift.stride(from: 0, to: x.count, by: stride) {
        var xp = x, xm = x
        xp[i] += eps
        xm[i] -= eps
        let numeric = Float((f(xp) - f(xm)) / Double(2 * eps))
        let err = abs(numeric - analytic[i]) - rtol * abs(numeric)
        if err > worst.0 { worst = (err, i, numeric, analytic[i]) }
    }
    XCTAssertLessThanOrEqual(worst.0, atol, "\(name): worst element \(worst.1): numeric \(worst.2) vs analytic \(worst.3)",
                             file: file, line: line)
}

func maxDiff(_ a: Tensor, _ b: Tensor) -> Float {
    zip(a.data, b.data).reduce(0) { max($0, abs($1.0 - $1.1)) }
}
