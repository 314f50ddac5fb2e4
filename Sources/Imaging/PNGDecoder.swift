import CCodecs
import CPNG
import Foundation
import TensorCore

/// How 16-bit grayscale PNGs become 8-bit RGB.
public enum Gray16Conversion: Sendable, Equatable {
    /// Keep the high byte (`v >> 8`), as Pillow does for 16-bit RGB, RGBA and gray+alpha. The default.
    case highByte
    /// Pillow's `Image.open(p).convert("RGB")` for mode "I;16": `min(v, 255)`. That saturates an
    /// ordinary 16-bit photo to white, so it is not the default; use it for bit-exact parity with a
    /// Python pipeline that feeds such files through PIL.
    case clampLikePillow
}

/// Why a PNG could not be decoded. `description` names the file and says what is wrong.
public struct PNGDecodingError: Error, Equatable, CustomStringConvertible, LocalizedError {
    public enum Kind: String, Sendable, Equatable {
        case fileNotFound = "file not found"
        case unreadable = "file could not be read"
        case notPNG = "not a PNG file"
        case truncated = "truncated PNG data"
        case corrupt = "corrupt PNG data"
    }

    /// The path, or the name given to the in-memory decoder.
    public let source: String
    public let kind: Kind
    /// Detail, e.g. libpng's message.
    public let detail: String

    public var description: String {
        "cannot decode PNG '\(source)': \(kind.rawValue)" + (detail.isEmpty ? "" : " (\(detail))")
    }
    public var errorDescription: String? { description }
}

/// PNG decoding through libpng, giving what Pillow's `Image.open(p).convert("RGB")` gives.
///
/// Conversion rules (all bit-exact with Pillow 13, checked by `ImagingTests` on fixtures of every kind):
/// - gray (1, 2, 4, 8 bits) is replicated to R = G = B (low depths scaled by bit replication);
/// - palette images are looked up in PLTE; tRNS is ignored;
/// - alpha (gray+alpha, RGBA, tRNS) is dropped, not composited: a fully transparent pixel keeps its colour;
/// - 16-bit RGB, RGBA and gray+alpha keep the high byte of each sample;
/// - 16-bit gray keeps the high byte too (``Gray16Conversion/highByte``), a deliberate deviation from
///   Pillow, which clamps mode "I;16" to 255 on `convert("RGB")`; ``Gray16Conversion/clampLikePillow``
///   reproduces Pillow;
/// - colour-management chunks (gAMA, cHRM, sRGB, iCCP, cICP) are ignored, as Pillow ignores them;
/// - Adam7 interlacing is handled.
///
/// How: libpng reports errors by longjmp, which Swift cannot catch, so every file first goes through
/// libpng's simplified API (`png_image_*`, which catches its own errors). Before that the chunk
/// stream is checked and the colour-management chunks are removed, so that the simplified API applies
/// no gamma correction. Files of 8 bits or fewer per sample are decoded by that pass (to RGBA, alpha
/// then dropped). 16-bit files need raw samples, which the simplified API does not give (it
/// premultiplies 16-bit alpha and rounds rather than truncates to 8 bits), so after the simplified
/// pass has read the whole image without error, the same bytes are read again with libpng's row API
/// and no transformations. That second pass runs in C behind a setjmp (`pt_png_read_raw16` in
/// Sources/CCodecs), because libpng's error handler cannot return; it reads exactly the data the
/// first one validated, and should it still fail, the failure is thrown as a ``PNGDecodingError``.
public enum PNGDecoder {
    /// A header declaring more than `limits.maxPixels` pixels throws ``ImageTooLargeError`` before
    /// the pixels are allocated (see ``ImageLimits``).
    public static func decode(path: String, gray16: Gray16Conversion = .highByte, limits: ImageLimits = .current) throws -> RGBImage {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw PNGDecodingError(source: path, kind: .fileNotFound, detail: "")
        }
        if isDir.boolValue {
            throw PNGDecodingError(source: path, kind: .unreadable, detail: "it is a directory")
        }
        if let kind = nonRegularFileKind(path) {
            throw PNGDecodingError(source: path, kind: .unreadable, detail: "it is \(kind), not a regular file")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw PNGDecodingError(source: path, kind: .unreadable, detail: error.localizedDescription)
        }
        return try decode(data: data, name: path, gray16: gray16, limits: limits)
    }

    public static func decode(data: Data, name: String = "<memory>",
                              gray16: Gray16Conversion = .highByte, limits: ImageLimits = .current) throws -> RGBImage {
        try decode(bytes: [UInt8](data), name: name, gray16: gray16, limits: limits)
    }

    public static func decode(bytes: [UInt8], name: String = "<memory>",
                              gray16: Gray16Conversion = .highByte, limits: ImageLimits = .current) throws -> RGBImage {
        let scan = try PNGChunkScan(bytes, name: name)
        let stream = scan.strippedBytes ?? bytes
        return try stream.withUnsafeBufferPointer { buf in
            try decodeStream(buf, scan: scan, name: name, gray16: gray16, limits: limits)
        }
    }

    // MARK: - Simplified API pass

    private static func decodeStream(_ buf: UnsafeBufferPointer<UInt8>, scan: PNGChunkScan, name: String,
                                     gray16: Gray16Conversion, limits: ImageLimits) throws -> RGBImage {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.opaque = nil
        guard png_image_begin_read_from_memory(&image, buf.baseAddress, buf.count) != 0 else {
            throw libpngError(message(of: &image), scan: scan, name: name)
        }
        let width = Int(image.width), height = Int(image.height)
        let sixteenBit = image.format & png_uint_32(PNG_FORMAT_FLAG_LINEAR) != 0
        guard width > 0, height > 0 else {
            png_image_free(&image)
            throw PNGDecodingError(source: name, kind: .corrupt, detail: "empty image \(width)x\(height)")
        }
        // From IHDR alone (begin_read reads up to the first IDAT), before the buffers below.
        do { try limits.check(width: width, height: height, format: .png, source: name) } catch {
            png_image_free(&image)
            throw error
        }
        image.format = png_uint_32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)  // PNG_FORMAT_RGBA
        // For 16-bit files this pass only validates; sRGB-tagging them spares libpng a gamma conversion.
        if sixteenBit {
            image.flags |= png_uint_32(PNG_IMAGE_FLAG_16BIT_sRGB)
            // The validation buffer is released before the row pass allocates its own.
            try finishRead(&image, count: width * height * 4, scan: scan, name: name)
            return try readRaw16(buf, width: width, height: height, gray16: gray16, name: name)
        }
        let rgba = try finishRead(&image, count: width * height * 4, scan: scan, name: name)
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        rgba.withUnsafeBufferPointer { src in
            rgb.withUnsafeMutableBufferPointer { dst in
                for i in 0 ..< width * height {
                    dst[3 * i] = src[4 * i]
                    dst[3 * i + 1] = src[4 * i + 1]
                    dst[3 * i + 2] = src[4 * i + 2]
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: rgb)
    }

    /// `png_image_finish_read` into a new RGBA buffer; frees `image` either way.
    @discardableResult
    private static func finishRead(_ image: inout png_image, count: Int, scan: PNGChunkScan, name: String) throws -> [UInt8] {
        var rgba = [UInt8](repeating: 0, count: count)
        let ok = rgba.withUnsafeMutableBytes { out in
            png_image_finish_read(&image, nil, out.baseAddress, 0, nil)
        }
        guard ok != 0 else { throw libpngError(message(of: &image), scan: scan, name: name) }
        return rgba
    }

    private static func message(of image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    private static func libpngError(_ msg: String, scan: PNGChunkScan, name: String) -> PNGDecodingError {
        let libpng = msg.isEmpty ? "libpng gave no message" : "libpng: \(msg)"
        // libpng's memory reader says this when the data runs out.
        if msg.contains("read beyond end of data") {
            let detail = scan.truncation.map { "\($0); \(libpng)" } ?? libpng
            return PNGDecodingError(source: name, kind: .truncated, detail: detail)
        }
        return PNGDecodingError(source: name, kind: .corrupt, detail: libpng)
    }

    // MARK: - Row API pass for 16-bit files (runs only after the simplified pass succeeded)

    /// Raw 16-bit samples through libpng's row API, wrapped in C (`pt_png_read_raw16`) because
    /// libpng's error callback must longjmp, which Swift cannot catch. The stream has just been
    /// decoded without error by the simplified pass, so a failure here is not expected; if one
    /// happens it is thrown like any other libpng error.
    private static func readRaw16(_ buf: UnsafeBufferPointer<UInt8>, width: Int, height: Int,
                                  gray16: Gray16Conversion, name: String) throws -> RGBImage {
        var raw = [UInt8](repeating: 0, count: width * height * 8)
        var channels: Int32 = 0, colorType: Int32 = 0
        var message = [CChar](repeating: 0, count: Int(PT_CODEC_MESSAGE_MAX))
        let status = raw.withUnsafeMutableBufferPointer { out in
            pt_png_read_raw16(buf.baseAddress, buf.count, Int32(width), Int32(height),
                              out.baseAddress, out.count, &channels, &colorType, &message)
        }
        guard status == PT_CODEC_OK else {
            let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let kind: PNGDecodingError.Kind = status == PT_CODEC_TRUNCATED ? .truncated : .corrupt
            throw PNGDecodingError(source: name, kind: kind, detail: "16-bit row pass: \(text)")
        }
        let channelCount = Int(channels)
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        raw.withUnsafeBufferPointer { src in
            rgb.withUnsafeMutableBufferPointer { dst in
                let n = width * height
                switch colorType {
                case PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA:  // big-endian samples: keep the high bytes
                    for i in 0 ..< n {
                        let s = i * channelCount * 2
                        dst[3 * i] = src[s]; dst[3 * i + 1] = src[s + 2]; dst[3 * i + 2] = src[s + 4]
                    }
                default:  // gray, gray+alpha
                    for i in 0 ..< n {
                        let s = i * channelCount * 2
                        let v: UInt8
                        if colorType == PNG_COLOR_TYPE_GRAY && gray16 == .clampLikePillow {
                            v = src[s] == 0 ? src[s + 1] : 255
                        } else {
                            v = src[s]
                        }
                        dst[3 * i] = v; dst[3 * i + 1] = v; dst[3 * i + 2] = v
                    }
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: rgb)
    }
}

/// Decodes the PNG file at `path` to RGB exactly as Pillow's `Image.open(path).convert("RGB")`
/// (see ``PNGDecoder`` for the rules and the one opt-out deviation). Throws ``PNGDecodingError``.
public func decodePNG(path: String, gray16: Gray16Conversion = .highByte, limits: ImageLimits = .current) throws -> RGBImage {
    try PNGDecoder.decode(path: path, gray16: gray16, limits: limits)
}

/// Decodes PNG bytes; `name` appears in error messages.
public func decodePNG(data: Data, name: String = "<memory>", gray16: Gray16Conversion = .highByte,
                      limits: ImageLimits = .current) throws -> RGBImage {
    try PNGDecoder.decode(data: data, name: name, gray16: gray16, limits: limits)
}

/// Decodes PNG bytes; `name` appears in error messages.
public func decodePNG(bytes: [UInt8], name: String = "<memory>", gray16: Gray16Conversion = .highByte,
                      limits: ImageLimits = .current) throws -> RGBImage {
    try PNGDecoder.decode(bytes: bytes, name: name, gray16: gray16, limits: limits)
}

// MARK: - Chunk stream check

/// A pass over the chunk stream: checks the signature, notes truncation, and drops colour-management
/// chunks (which Pillow ignores but libpng's simplified API would act on).
struct PNGChunkScan {
    static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    static let dropped: Set<String> = ["gAMA", "cHRM", "sRGB", "iCCP", "cICP"]

    /// The stream without the dropped chunks, or nil if nothing was dropped.
    var strippedBytes: [UInt8]?
    /// Set when the stream ends inside a chunk or before IEND.
    var truncation: String?

    init(_ bytes: [UInt8], name: String) throws {
        let sig = Self.signature
        if bytes.isEmpty {
            throw PNGDecodingError(source: name, kind: .notPNG, detail: "the file is empty")
        }
        guard bytes.count >= sig.count, Array(bytes[0 ..< sig.count]) == sig else {
            if bytes.count < sig.count && Array(sig[0 ..< bytes.count]) == bytes {
                throw PNGDecodingError(source: name, kind: .truncated,
                                       detail: "only \(bytes.count) bytes, less than the 8-byte signature")
            }
            let head = bytes.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
            throw PNGDecodingError(source: name, kind: .notPNG,
                                   detail: "starts with \(head), not the PNG signature 89 50 4e 47 0d 0a 1a 0a")
        }
        var out: [UInt8]? = nil
        var pos = sig.count
        var sawIEND = false
        while pos < bytes.count {
            guard bytes.count - pos >= 8 else {
                truncation = "the file ends inside a chunk header at byte \(pos) of \(bytes.count)"
                break
            }
            let length = Int(bytes[pos]) << 24 | Int(bytes[pos + 1]) << 16 | Int(bytes[pos + 2]) << 8 | Int(bytes[pos + 3])
            let typeBytes = bytes[pos + 4 ..< pos + 8]
            let type = String(decoding: typeBytes, as: UTF8.self)
            let end = pos + 12 + length
            if end > bytes.count {
                let named = typeBytes.allSatisfy { (65 ... 90).contains($0) || (97 ... 122).contains($0) }
                    ? "the \(type) chunk" : "a chunk"
                truncation = "the file ends inside \(named) at byte \(pos) (\(bytes.count) bytes, the chunk needs \(end))"
                break
            }
            if Self.dropped.contains(type) {
                if out == nil { out = Array(bytes[0 ..< pos]) }
            } else {
                out?.append(contentsOf: bytes[pos ..< end])
            }
            pos = end
            if type == "IEND" { sawIEND = true; break }
        }
        if truncation == nil && !sawIEND {
            truncation = "no IEND chunk: the file ends after \(bytes.count) bytes"
        }
        if pos < bytes.count { out?.append(contentsOf: bytes[pos...]) }
        strippedBytes = out
    }
}
