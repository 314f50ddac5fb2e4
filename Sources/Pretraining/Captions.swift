import Foundation
import Imaging

/// Four binary attributes of a Fashion-MNIST image, computed from its pixels (grey value = red
/// channel; the background is black): how bright its ink is, how much of the frame it covers,
/// whether its weight sits high or low, and whether its outline is wider than tall. Each splits the
/// training images at the median, so every word is used about half the time; the words correlate
/// with the classes (trousers are narrow, bags wide, sandals small) without naming them.
public struct ImageAttributes: Equatable, Sendable {
    /// Raw measures: mean ink brightness, ink coverage, vertical centre of mass (0 top, 1 bottom)
    /// relative to the outline's centre, and width / height of the outline.
    public var brightness: Double
    public var coverage: Double
    public var balance: Double
    public var aspect: Double

    public init(_ image: RGBImage) {
        let w = image.width, h = image.height
        var ink = 0, sum = 0.0, ySum = 0.0, mass = 0.0
        var x0 = w, x1 = -1, y0 = h, y1 = -1
        for y in 0..<h {
            for x in 0..<w {
                let v = Double(image.pixels[(y * w + x) * 3])
                guard v > 32 else { continue }
                ink += 1; sum += v; mass += v; ySum += v * Double(y)
                x0 = min(x0, x); x1 = max(x1, x); y0 = min(y0, y); y1 = max(y1, y)
            }
        }
        brightness = ink > 0 ? sum / Double(ink) : 0
        coverage = Double(ink) / Double(max(1, w * h))
        if ink > 0 {
            let centre = Double(y0 + y1) / 2, height = Double(y1 - y0 + 1)
            balance = (ySum / mass - centre) / height
            aspect = Double(x1 - x0 + 1) / height
        } else {
            balance = 0; aspect = 1
        }
    }

    var values: [Double] { [brightness, coverage, balance, aspect] }

    /// The words of the attributes (one per attribute) under thresholds `t` (medians).
    public func words(thresholds t: [Double]) -> [String] {
        zip(values, zip(t, CaptionTemplates.attributeWords)).map { v, tw in v > tw.0 ? tw.1.high : tw.1.low }
    }

    /// Per-attribute medians of `attributes`.
    public static func medians(_ attributes: [ImageAttributes]) -> [Double] {
        (0..<4).map { k in
            let s = attributes.map { $0.values[k] }.sorted()
            return s.isEmpty ? 0 : s[s.count / 2]
        }
    }
}
