import Foundation

/// The decoded-size budget of the image decoders: a file whose header declares more than
/// `maxPixels` pixels is refused from its header, before anything the size of the image is
/// allocated. A 1-2 KB JPEG or a 164 KB PNG can declare 13000 x 13000 pixels, which decode to
/// 0.5 GB of RGB (1.2 GB transient for a PNG: RGBA, then RGB; 15 bytes a pixel for 16-bit PNGs).
///
/// The default is Pillow's `Image.MAX_IMAGE_PIXELS` (89,478,485, about 9459 x 9459), above which
/// Pillow warns of a decompression bomb; Pillow refuses only at twice that, which let the
/// 13000 x 13000 files through. Every image Pillow opens without that warning is accepted here.
/// Raise it for genuinely large images with the environment variable
/// `PROMPTTUNE_MAX_IMAGE_PIXELS` (read once, at first use) or by setting ``current``.
public struct ImageLimits: Sendable, Equatable {
    /// Most pixels (width x height) an image may declare.
    public var maxPixels: Int

    public init(maxPixels: Int = ImageLimits.defaultMaxPixels) { self.maxPixels = maxPixels }

    /// Pillow's `Image.MAX_IMAGE_PIXELS`.
    public static let defaultMaxPixels = 89_478_485
    /// The environment variable that sets ``current`` at start-up: a positive integer (`_` and `,`
    /// separators allowed, e.g. `200_000_000`).
    public static let environmentVariable = "PROMPTTUNE_MAX_IMAGE_PIXELS"

    /// The limits decoders use unless given others: from ``environmentVariable`` when it holds a
    /// valid number, else the default. Setting it changes the limit for the whole process.
    public static var current: ImageLimits {
        get { storage.get() }
        set { storage.set(newValue) }
    }

    /// The limits `environment` asks for: nil when ``environmentVariable`` is unset, an
    /// ``ImageLimitsError`` when it is not a positive integer.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ImageLimits? {
        guard let text = environment[environmentVariable] else { return nil }
        let digits = text.trimmingCharacters(in: .whitespaces).filter { $0 != "_" && $0 != "," }
        guard let n = Int(digits), n > 0 else {
            throw ImageLimitsError(variable: environmentVariable, value: text)
        }
        return ImageLimits(maxPixels: n)
    }

    /// Refuses `width` x `height` from `source`'s header when it exceeds ``maxPixels``.
    func check(width: Int, height: Int, format: ImageFormat, source: String) throws {
        let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
        guard overflow || pixels > maxPixels else { return }
        throw ImageTooLargeError(source: source, format: format, width: width, height: height, maxPixels: maxPixels)
    }

    private static let storage = LimitsStorage()
}

/// ``ImageLimits/current`` behind a lock (decoders run on many threads).
private final class LimitsStorage: @unchecked Sendable {
    private let lock = NSLock()
    private var value: ImageLimits

    init() { value = ((try? ImageLimits.fromEnvironment()) ?? nil) ?? ImageLimits() }

    func get() -> ImageLimits { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ v: ImageLimits) { lock.lock(); value = v; lock.unlock() }
}

/// An image whose header declares more pixels than ``ImageLimits/maxPixels`` allows. Thrown before
/// the image is decoded; names the file, its declared size and how to raise the limit.
public struct ImageTooLargeError: Error, Equatable, CustomStringConvertible, LocalizedError {
    public let source: String
    public let format: ImageFormat
    public let width: Int
    public let height: Int
    public let maxPixels: Int

    public init(source: String, format: ImageFormat, width: Int, height: Int, maxPixels: Int) {
        self.source = source; self.format = format; self.width = width; self.height = height; self.maxPixels = maxPixels
    }

    public var description: String {
        let pixels = width.multipliedReportingOverflow(by: height).partialValue
        let mib = Double(pixels) * 3 / 1_048_576
        return "cannot decode image '\(source)': its \(format.name) header declares \(width)x\(height) = \(pixels) pixels "
            + "(\(String(format: "%.0f", mib)) MiB as RGB), more than the limit of \(maxPixels) pixels. "
            + "A small file declaring a huge size is the usual decompression bomb; if the image is genuine, raise the "
            + "limit with \(ImageLimits.environmentVariable)=\(pixels) (or ImageLimits.current)"
            + environmentNote
    }

    private var environmentNote: String {
        guard let text = ProcessInfo.processInfo.environment[ImageLimits.environmentVariable],
              (try? ImageLimits.fromEnvironment()) == nil else { return "" }
        return "; \(ImageLimits.environmentVariable)=\(text) was ignored: it is not a positive integer"
    }

    public var errorDescription: String? { description }
}

/// ``ImageLimits/environmentVariable`` holding something other than a positive integer.
public struct ImageLimitsError: Error, Equatable, CustomStringConvertible, LocalizedError {
    public let variable: String
    public let value: String

    public init(variable: String, value: String) { self.variable = variable; self.value = value }

    public var description: String {
        "\(variable)='\(value)' is not a positive integer; set it to the most pixels (width x height) an image may have, e.g. \(variable)=200000000, or unset it for the default of \(ImageLimits.defaultMaxPixels)"
    }
    public var errorDescription: String? { description }
}
