/// An 8-bit RGB image: `pixels` holds `height` rows of `width` interleaved R, G, B bytes (HWC,
/// row-major, no padding), the layout of `numpy.array(pil_image.convert("RGB"))`.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    /// `width * height * 3` bytes.
    public private(set) var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size \(width)x\(height)")
        precondition(pixels.count == width * height * 3,
                     "RGBImage: \(width)x\(height) needs \(width * height * 3) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A `width` x `height` image filled with one colour (black by default).
    public init(width: Int, height: Int, fill: (r: UInt8, g: UInt8, b: UInt8) = (0, 0, 0)) {
        precondition(width >= 0 && height >= 0, "RGBImage: negative size \(width)x\(height)")
        var px = [UInt8](repeating: 0, count: width * height * 3)
        if fill != (0, 0, 0) {
            for i in stride(from: 0, to: px.count, by: 3) {
                px[i] = fill.r; px[i + 1] = fill.g; px[i + 2] = fill.b
            }
        }
        self.init(width: width, height: height, pixels: px)
    }

    /// The pixel at column `x`, row `y`.
    public subscript(x x: Int, y y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        precondition(x >= 0 && x < width && y >= 0 && y < height, "RGBImage: (\(x), \(y)) outside \(width)x\(height)")
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }
}

extension RGBImage: CustomStringConvertible {
    public var description: String { "RGBImage(\(width)x\(height))" }
}
