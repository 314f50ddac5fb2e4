import CCodecs
import Foundation
import TensorCore

/// Why a JPEG could not be decoded. `description` names the file and says what is wrong.
public struct JPEGDecodingError: Error, Equatable, CustomStringConvertible, LocalizedError {
    public enum Kind: String, Sendable, Equatable {
        case fileNotFound = "file not found"
        case unreadable = "file could not be read"
        case notJPEG = "not a JPEG file"
        /// The data ends before the image does. Pillow raises "image file is truncated" here (unless
        /// `ImageFile.LOAD_TRUNCATED_IMAGES`); libjpeg alone would pad the rest with gray.
        case truncated = "truncated JPEG data (image file is truncated)"
        case corrupt = "corrupt JPEG data"
        case unsupported = "unsupported JPEG"
    }

    /// The path, or the name given to the in-memory decoder.
    public let source: String
    public let kind: Kind
    /// Detail, e.g. libjpeg's message.
    public let detail: String

    public var description: String {
        "cannot decode JPEG '\(source)': \(kind.rawValue)" + (detail.isEmpty ? "" : " (\(detail))")
    }
    public var errorDescription: String? { description }
}

/// What a JPEG's headers say (``JPEGDecoder/header(bytes:name:)``).
public struct JPEGHeader: Equatable, Sendable {
    public enum ColorSpace: String, Sendable, Equatable {
        case unknown, grayscale, rgb, yCbCr, cmyk, ycck
    }
    public let width: Int
    public let height: Int
    /// Components in the frame: 1 (Pillow mode "L"), 3 ("RGB") or 4 ("CMYK").
    public let components: Int
    /// The colour space libjpeg infers from the JFIF / Adobe markers and component ids.
    public let colorSpace: ColorSpace
    public let progressive: Bool
    public let arithmeticCoding: Bool
    /// The Adobe APP14 transform byte (0, 1 = YCbCr, 2 = YCCK), nil without an Adobe marker.
    public let adobeTransform: Int?
    public let jfif: Bool
    /// Restart interval in MCUs, 0 if none.
    public let restartInterval: Int
}

/// JPEG decoding through libjpeg-turbo, giving what Pillow's `Image.open(p).convert("RGB")` gives.
///
/// Conversion rules (as Pillow's JpegImagePlugin, JpegDecode.c and Convert.c):
/// - libjpeg's default decoding: accurate integer IDCT (`JDCT_ISLOW`) and fancy (triangular)
///   chroma upsampling, which Pillow keeps unless `draft()` is called;
/// - 1 component: grayscale, replicated to R = G = B;
/// - 3 components: libjpeg's YCbCr -> RGB (or none when the file is stored as RGB, Adobe transform 0);
/// - 4 components: decoded by libjpeg as CMYK (YCCK files, Adobe transform 2, converted by libjpeg)
///   and always taken as inverted (Adobe polarity), whether or not an Adobe marker is present:
///   Pillow does not look at the marker ("CMYK;I", "assume adobe conventions"), and neither does
///   this decoder. Then Pillow's `cmyk2rgb`: `nk = 255 - K`, `R = clip(nk - MULDIV255(C, nk))`
///   (`MULDIV255(a, b) = (t + (t >> 8)) >> 8` with `t = a * b + 128`), G from M, B from Y;
/// - progressive, arithmetic-coded and restart-interval files are handled by libjpeg;
/// - EXIF orientation is **not** applied: pixels come out in stored order, as from Pillow's
///   `Image.open` (and so torchvision / CoOp's loaders); apply `ImageOps.exif_transpose` yourself if
///   wanted. ICC profiles are ignored, as Pillow's `convert("RGB")` ignores them.
///
/// Against Pillow 13 (which bundles libjpeg-turbo 3.x) with the system libjpeg-turbo 2.1.5, every
/// fixture in Goldens/jpeg decodes bit for bit (0 differing values; `JPEGDecoderTests`): both
/// libraries use the same integer IDCT, upsampling and colour conversion.
///
/// Errors: missing or unreadable files, data that is not JPEG, libjpeg's fatal errors, and data
/// that ends early all throw ``JPEGDecodingError`` naming the file. A truncated file is an error, as
/// in Pillow (libjpeg itself would warn and fill the rest with gray). Other libjpeg warnings
/// (corrupt entropy-coded data it recovers from) are ignored, as Pillow ignores them.
/// libjpeg's fatal errors longjmp; they are caught in C (Sources/CCodecs), never in Swift.
public enum JPEGDecoder {
    /// A header declaring more than `limits.maxPixels` pixels throws ``ImageTooLargeError`` before
    /// the pixels are allocated (see ``ImageLimits``).
    public static func decode(path: String, limits: ImageLimits = .current) throws -> RGBImage {
        try decode(bytes: readFile(path), name: path, limits: limits)
    }

    public static func decode(data: Data, name: String = "<memory>", limits: ImageLimits = .current) throws -> RGBImage {
        try decode(bytes: [UInt8](data), name: name, limits: limits)
    }

    public static func decode(bytes: [UInt8], name: String = "<memory>", limits: ImageLimits = .current) throws -> RGBImage {
        try checkSignature(bytes, name: name)
        return try bytes.withUnsafeBufferPointer { buf in
            let decoder = try Decoder(name: name)
            defer { decoder.close() }
            let header = try decoder.readHeader(buf)
            return try decoder.decodeRGB(header, limits: limits)
        }
    }

    /// The header of the JPEG file at `path`, without decoding the image.
    public static func header(path: String) throws -> JPEGHeader {
        try header(bytes: readFile(path), name: path)
    }

    /// The header of in-memory JPEG bytes, without decoding the image.
    public static func header(bytes: [UInt8], name: String = "<memory>") throws -> JPEGHeader {
        try checkSignature(bytes, name: name)
        return try bytes.withUnsafeBufferPointer { buf in
            let decoder = try Decoder(name: name)
            defer { decoder.close() }
            return try decoder.readHeader(buf).header
        }
    }

    // MARK: - Internals

    static func readFile(_ path: String) throws -> [UInt8] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw JPEGDecodingError(source: path, kind: .fileNotFound, detail: "")
        }
        if isDir.boolValue {
            throw JPEGDecodingError(source: path, kind: .unreadable, detail: "it is a directory")
        }
        if let kind = nonRegularFileKind(path) {
            throw JPEGDecodingError(source: path, kind: .unreadable, detail: "it is \(kind), not a regular file")
        }
        do {
            return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw JPEGDecodingError(source: path, kind: .unreadable, detail: error.localizedDescription)
        }
    }

    /// The SOI marker (FF D8) must open the data; libjpeg would say the same less readably.
    static func checkSignature(_ bytes: [UInt8], name: String) throws {
        if bytes.isEmpty {
            throw JPEGDecodingError(source: name, kind: .notJPEG, detail: "the file is empty")
        }
        if bytes.count < 3 {
            if bytes == Array([0xFF, 0xD8, 0xFF].prefix(bytes.count)) {
                throw JPEGDecodingError(source: name, kind: .truncated,
                                        detail: "only \(bytes.count) bytes, less than a JPEG header")
            }
        }
        guard bytes.count >= 2, bytes[0] == 0xFF, bytes[1] == 0xD8 else {
            let head = bytes.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
            var detail = "starts with \(head), not the JPEG start-of-image marker ff d8"
            if let format = ImageFormat.sniff(bytes), format != .jpeg {
                detail += "; it looks like \(format.name)"
            }
            throw JPEGDecodingError(source: name, kind: .notJPEG, detail: detail)
        }
    }

    /// Owns one `pt_jpeg_decoder`; the bytes given to `readHeader` must outlive `decodeRGB`.
    private final class Decoder {
        let handle: OpaquePointer
        let name: String

        init(name: String) throws {
            guard let h = pt_jpeg_create() else {
                throw JPEGDecodingError(source: name, kind: .corrupt, detail: "out of memory creating the decoder")
            }
            handle = h
            self.name = name
        }

        func close() { pt_jpeg_destroy(handle) }

        func error(_ status: Int32, fallback: String = "") -> JPEGDecodingError {
            let message = String(cString: pt_jpeg_message(handle))
            let detail = message.isEmpty ? fallback : "libjpeg: \(message)"
            let kind: JPEGDecodingError.Kind
            switch status {
            case PT_CODEC_TRUNCATED: kind = .truncated
            case PT_CODEC_NOT_IMAGE: kind = .notJPEG
            case PT_CODEC_UNSUPPORTED: kind = .unsupported
            default: kind = .corrupt
            }
            return JPEGDecodingError(source: name, kind: kind, detail: detail)
        }

        func readHeader(_ buf: UnsafeBufferPointer<UInt8>) throws -> (header: JPEGHeader, raw: pt_jpeg_header) {
            var raw = pt_jpeg_header()
            let status = pt_jpeg_read_header(handle, buf.baseAddress, buf.count, &raw)
            guard status == PT_CODEC_OK else { throw error(status) }
            let colorSpace: JPEGHeader.ColorSpace
            switch raw.color_space {
            case PT_JPEG_CS_GRAYSCALE: colorSpace = .grayscale
            case PT_JPEG_CS_RGB: colorSpace = .rgb
            case PT_JPEG_CS_YCBCR: colorSpace = .yCbCr
            case PT_JPEG_CS_CMYK: colorSpace = .cmyk
            case PT_JPEG_CS_YCCK: colorSpace = .ycck
            default: colorSpace = .unknown
            }
            let header = JPEGHeader(
                width: Int(raw.width), height: Int(raw.height), components: Int(raw.components),
                colorSpace: colorSpace, progressive: raw.progressive != 0, arithmeticCoding: raw.arithmetic != 0,
                adobeTransform: raw.saw_adobe != 0 ? Int(raw.adobe_transform) : nil, jfif: raw.saw_jfif != 0,
                restartInterval: Int(raw.restart_interval))
            return (header, raw)
        }

        func decodeRGB(_ h: (header: JPEGHeader, raw: pt_jpeg_header), limits: ImageLimits) throws -> RGBImage {
            let width = h.header.width, height = h.header.height
            guard width > 0, height > 0 else {
                throw JPEGDecodingError(source: name, kind: .corrupt, detail: "empty image \(width)x\(height)")
            }
            // Before libjpeg's start_decompress, which allocates whole-image coefficient buffers for
            // progressive files, and before the output buffer.
            try limits.check(width: width, height: height, format: .jpeg, source: name)
            guard [1, 3, 4].contains(h.header.components) else {
                throw JPEGDecodingError(source: name, kind: .unsupported,
                                        detail: "cannot handle \(h.header.components)-component images (Pillow reads 1, 3 or 4)")
            }
            let count = width * height * 3
            var status: Int32 = 0
            let pixels = [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
                status = pt_jpeg_decode_rgb(handle, out.baseAddress, count)
                // On failure the array is handed back empty (never with uninitialised bytes), without
                // touching the pages of a large buffer that a damaged file left mostly unwritten.
                initialized = status == PT_CODEC_OK ? count : 0
            }
            guard status == PT_CODEC_OK else { throw error(status) }
            return RGBImage(width: width, height: height, pixels: pixels)
        }
    }
}

/// Decodes the JPEG file at `path` to RGB exactly as Pillow's `Image.open(path).convert("RGB")`
/// (see ``JPEGDecoder`` for the rules). EXIF orientation is not applied, as Pillow's `open` and
/// torchvision do not apply it. Throws ``JPEGDecodingError`` naming the file.
public func decodeJPEG(path: String, limits: ImageLimits = .current) throws -> RGBImage {
    try JPEGDecoder.decode(path: path, limits: limits)
}

/// Decodes JPEG bytes; `name` appears in error messages. EXIF orientation is not applied.
public func decodeJPEG(data: Data, name: String = "<memory>", limits: ImageLimits = .current) throws -> RGBImage {
    try JPEGDecoder.decode(data: data, name: name, limits: limits)
}

/// Decodes JPEG bytes; `name` appears in error messages. EXIF orientation is not applied.
public func decodeJPEG(bytes: [UInt8], name: String = "<memory>", limits: ImageLimits = .current) throws -> RGBImage {
    try JPEGDecoder.decode(bytes: bytes, name: name, limits: limits)
}
