/// The order of the two resampling passes.
public enum ResamplePassOrder: Sendable, Equatable {
    /// Pillow 13: vertical first when the height shrinks by more than twice as many pixels as the
    /// width does (`inH - outH > 0 && inH - outH > (inW - outW) * 2`), else horizontal first.
    case pillow13
    /// Pillow 12 and earlier: always horizontal first.
    case horizontalFirst
}

/// Pillow's bicubic resampling of 8-bit images (`ImagingResample` in src/libImaging/Resample.c),
/// reproduced bit for bit:
/// - bicubic kernel with a = -0.5 and support 2, widened by the downscale factor
///   (`filterscale = max(in / out, 1)`) for antialiasing;
/// - per output index: `center = (x + 0.5) * scale`, taps `xmin = int(center - support + 0.5)`
///   clamped at 0 to `xmax = int(center + support + 0.5)` clamped at the input size, weights
///   `filter((i - center + 0.5) / filterscale)` normalised by their sum (all in Double);
/// - weights to fixed point with 22 fraction bits (`(int)(w * 2^22 ± 0.5)`), accumulation from
///   `1 << 21`, result `clamp(sum >> 22, 0, 255)`;
/// - two separable passes with an 8-bit intermediate image, each only where that dimension
///   changes. Their order matters for the result: Pillow 13 (the default here) runs the vertical pass
///   first when the height shrinks much more than the width (see ``ResamplePassOrder``); Pillow 12 and
///   earlier always ran horizontal first (`.horizontalFirst`). A horizontal-first pass reads only the
///   source rows the vertical pass needs.
public func resizeBicubic(_ image: RGBImage, width outWidth: Int, height outHeight: Int,
                          passOrder: ResamplePassOrder = .pillow13) -> RGBImage {
    precondition(outWidth > 0 && outHeight > 0, "resizeBicubic: target size \(outWidth)x\(outHeight) must be positive")
    precondition(image.width > 0 && image.height > 0, "resizeBicubic: empty input image")
    let needHorizontal = outWidth != image.width, needVertical = outHeight != image.height
    if !needHorizontal && !needVertical { return image }  // Pillow returns a copy

    let shrinkY = image.height - outHeight, shrinkX = image.width - outWidth
    let horizontalFirst = passOrder == .horizontalFirst || !(shrinkY > 0 && shrinkY > shrinkX * 2)
    let vertical = needVertical ? BicubicCoefficients(inSize: image.height, outSize: outHeight) : nil
    let horizontal = needHorizontal ? BicubicCoefficients(inSize: image.width, outSize: outWidth) : nil

    if horizontalFirst {
        var current = image
        var rowOffset = 0
        if let horizontal {
            var rows = 0 ..< image.height
            if let vertical {  // only the rows the vertical pass reads
                rowOffset = vertical.start[0]
                rows = rowOffset ..< vertical.start[outHeight - 1] + vertical.count[outHeight - 1]
            }
            current = resampleHorizontal(image, rows: rows, coefficients: horizontal)
        }
        if let vertical { current = resampleVertical(current, rowOffset: rowOffset, coefficients: vertical) }
        return current
    } else {
        var current = resampleVertical(image, rowOffset: 0, coefficients: vertical!)
        if let horizontal { current = resampleHorizontal(current, rows: 0 ..< outHeight, coefficients: horizontal) }
        return current
    }
}

/// Fixed-point filter taps for one axis (`precompute_coeffs` + `normalize_coeffs_8bpc`).
struct BicubicCoefficients {
    static let precisionBits = 32 - 8 - 2

    let outSize: Int
    let kernelSize: Int
    /// First input index of each output index.
    var start: [Int]
    /// Number of taps of each output index.
    var count: [Int]
    /// `outSize * kernelSize` weights, row `i` holding output `i`'s taps.
    var weights: [Int32]

    static func filter(_ x: Double) -> Double {
        let a = -0.5
        let x = x < 0 ? -x : x
        if x < 1 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    init(inSize: Int, outSize: Int) {
        let support0 = 2.0
        // Pillow: scale = (double)(in1 - in0) / outSize with the box (0, inSize) held as floats.
        let scale = Double(Float(inSize) - Float(0)) / Double(outSize)
        let filterscale = max(scale, 1.0)
        let support = support0 * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        let invFilterscale = 1.0 / filterscale
        self.outSize = outSize
        self.kernelSize = ksize
        start = [Int](repeating: 0, count: outSize)
        count = [Int](repeating: 0, count: outSize)
        weights = [Int32](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        let one = Double(1 << Self.precisionBits)
        for xx in 0 ..< outSize {
            let center = 0.0 + (Double(xx) + 0.5) * scale
            var xmin = Int(center - support + 0.5)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            var ww = 0.0
            for x in 0 ..< xmax {
                let w = Self.filter((Double(x + xmin) - center + 0.5) * invFilterscale)
                k[x] = w
                ww += w
            }
            if ww != 0 {
                for x in 0 ..< xmax { k[x] /= ww }
            }
            for x in 0 ..< xmax {
                let v = k[x]
                weights[xx * ksize + x] = v < 0 ? Int32(-0.5 + v * one) : Int32(0.5 + v * one)
            }
            start[xx] = xmin
            count[xx] = xmax
        }
    }
}

@inline(__always)
private func clip8(_ v: Int32) -> UInt8 {
    let s = v >> Int32(BicubicCoefficients.precisionBits)
    return s < 0 ? 0 : (s > 255 ? 255 : UInt8(truncatingIfNeeded: s))
}

private func resampleHorizontal(_ image: RGBImage, rows: Range<Int>, coefficients c: BicubicCoefficients) -> RGBImage {
    let inRowLen = image.width * 3
    let outW = c.outSize
    let outRowLen = outW * 3
    let half = Int32(1) << Int32(BicubicCoefficients.precisionBits - 1)
    var out = [UInt8](repeating: 0, count: outRowLen * rows.count)
    image.pixels.withUnsafeBufferPointer { src in
        c.weights.withUnsafeBufferPointer { kk in
            c.start.withUnsafeBufferPointer { starts in
                c.count.withUnsafeBufferPointer { counts in
                    out.withUnsafeMutableBufferPointer { dst in
                        let s = src.baseAddress!, k0 = kk.baseAddress!, d = dst.baseAddress!
                        for (oy, y) in rows.enumerated() {
                            let line = s + y * inRowLen
                            let outLine = d + oy * outRowLen
                            for xx in 0 ..< outW {
                                let k = k0 + xx * c.kernelSize
                                var p = line + starts[xx] * 3
                                var s0 = half, s1 = half, s2 = half
                                for x in 0 ..< counts[xx] {
                                    let w = k[x]
                                    s0 &+= Int32(p[0]) &* w
                                    s1 &+= Int32(p[1]) &* w
                                    s2 &+= Int32(p[2]) &* w
                                    p += 3
                                }
                                outLine[3 * xx] = clip8(s0)
                                outLine[3 * xx + 1] = clip8(s1)
                                outLine[3 * xx + 2] = clip8(s2)
                            }
                        }
                    }
                }
            }
        }
    }
    return RGBImage(width: outW, height: rows.count, pixels: out)
}

/// Vertical pass; input row `r` of `image` is source row `r + rowOffset` of the coefficients' axis.
private func resampleVertical(_ image: RGBImage, rowOffset: Int, coefficients c: BicubicCoefficients) -> RGBImage {
    let rowLen = image.width * 3
    let outH = c.outSize
    let half = Int32(1) << Int32(BicubicCoefficients.precisionBits - 1)
    var out = [UInt8](repeating: 0, count: rowLen * outH)
    var acc = [Int32](repeating: 0, count: rowLen)
    image.pixels.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            acc.withUnsafeMutableBufferPointer { a in
                let s = src.baseAddress!, d = dst.baseAddress!, ap = a.baseAddress!
                for yy in 0 ..< outH {
                    for i in 0 ..< rowLen { ap[i] = half }
                    let first = c.start[yy] - rowOffset
                    for y in 0 ..< c.count[yy] {
                        let w = c.weights[yy * c.kernelSize + y]
                        let line = s + (first + y) * rowLen
                        for i in 0 ..< rowLen { ap[i] &+= Int32(line[i]) &* w }
                    }
                    let outLine = d + yy * rowLen
                    for i in 0 ..< rowLen { outLine[i] = clip8(ap[i]) }
                }
            }
        }
    }
    return RGBImage(width: image.width, height: outH, pixels: out)
}
