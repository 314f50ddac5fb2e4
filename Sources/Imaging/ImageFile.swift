import Foundation
import TensorCore

/// Image container formats recognised by their first bytes. PromptTune decodes only JPEG and PNG;
/// the others are recognised so that the error can say what the file is.
public enum ImageFormat: String, Sendable, Equatable, CaseIterable {
    case png, jpeg, gif, bmp, webp, tiff, heif, avif, jpeg2000, jpegXL, ico, psd, qoi, pdf

    /// A readable name, e.g. "GIF".
    public var name: String {
        switch self {
        case .png: return "PNG"
        case .jpeg: return "JPEG"
        case .gif: return "GIF"
        case .bmp: return "BMP"
        case .webp: return "WebP"
        case .tiff: return "TIFF"
        case .heif: return "HEIF/HEIC"
        case .avif: return "AVIF"
        case .jpeg2000: return "JPEG 2000"
        case .jpegXL: return "JPEG XL"
        case .ico: return "ICO"
        case .psd: return "Photoshop PSD"
        case .qoi: return "QOI"
        case .pdf: return "PDF"
        }
    }

    /// Whether ``decodeImage(path:)`` decodes this format.
    public var isSupported: Bool { self == .png || self == .jpeg }

    /// The format whose signature opens `bytes`, or nil if none is recognised.
    public static func sniff<C: Collection>(_ bytes: C) -> ImageFormat? where C.Element == UInt8 {
        let b = Array(bytes.prefix(16))
        func starts(_ sig: [UInt8], at offset: Int = 0) -> Bool {
            b.count >= offset + sig.count && Array(b[offset ..< offset + sig.count]) == sig
        }
        func ascii(_ s: String, at offset: Int = 0) -> Bool { starts(Array(s.utf8), at: offset) }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if ascii("GIF87a") || ascii("GIF89a") { return .gif }
        if ascii("RIFF") && ascii("WEBP", at: 8) { return .webp }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A])
            || starts([0x49, 0x49, 0x2B, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2B]) { return .tiff }
        if ascii("ftyp", at: 4) {
            if ascii("avif", at: 8) || ascii("avis", at: 8) { return .avif }
            for brand in ["heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1"] where ascii(brand, at: 8) {
                return .heif
            }
        }
        if starts([0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20]) || starts([0xFF, 0x4F, 0xFF, 0x51]) { return .jpeg2000 }
        if starts([0xFF, 0x0A]) || starts([0x00, 0x00, 0x00, 0x0C, 0x4A, 0x58, 0x4C, 0x20]) { return .jpegXL }
        if ascii("8BPS") { return .psd }
        if ascii("qoif") { return .qoi }
        if ascii("%PDF") { return .pdf }
        if ascii("BM") && b.count >= 14 { return .bmp }
        if starts([0x00, 0x00, 0x01, 0x00]) && b.count >= 6 && b[4] != 0 { return .ico }
        return nil
    }
}

/// Why an image file could not be read before any decoder ran: missing, unreadable, empty, or not
/// JPEG/PNG. Decoder failures are ``JPEGDecodingError`` and ``PNGDecodingError``. Every
/// `description` names the file.
public struct ImageFileError: Error, Equatable, CustomStringConvertible, LocalizedError {
    public enum Kind: String, Sendable, Equatable {
        case fileNotFound = "file not found"
        case unreadable = "file could not be read"
        case empty = "the file is empty"
        case unsupportedFormat = "unsupported image format"
    }

    public let source: String
    public let kind: Kind
    /// The recognised format for `.unsupportedFormat`, nil if the bytes matched no known signature.
    public let format: ImageFormat?
    public let detail: String

    public var description: String {
        switch kind {
        case .unsupportedFormat:
            let what = format.map { "unsupported image format (\($0.name))" } ?? "unrecognised image format"
            return "cannot decode image '\(source)': \(what)" + (detail.isEmpty ? "" : " (\(detail))")
                + "; PromptTune reads JPEG and PNG"
        default:
            return "cannot decode image '\(source)': \(kind.rawValue)" + (detail.isEmpty ? "" : " (\(detail))")
        }
    }
    public var errorDescription: String? { description }
}

/// Decodes the JPEG or PNG file at `path` to RGB as Pillow's `Image.open(path).convert("RGB")`
/// does, choosing the decoder by the file's first bytes (not its extension): see ``JPEGDecoder``
/// and ``PNGDecoder`` for the rules. EXIF orientation is not applied (Pillow's `open`, torchvision
/// and CoOp's loaders do not apply it).
///
/// Throws ``ImageFileError`` for a missing, unreadable or empty file or one in another format
/// (e.g. "unsupported image format (GIF); PromptTune reads JPEG and PNG"), and the decoder's error
/// (``JPEGDecodingError``, ``PNGDecodingError``) for a damaged file, and ``ImageTooLargeError`` for
/// a header declaring more than `limits.maxPixels` pixels (``ImageLimits``); all name the file.
public func decodeImage(path: String, limits: ImageLimits = .current) throws -> RGBImage {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw ImageFileError(source: path, kind: .fileNotFound, format: nil, detail: "")
    }
    if isDir.boolValue {
        throw ImageFileError(source: path, kind: .unreadable, format: nil, detail: "it is a directory")
    }
    if let kind = nonRegularFileKind(path) {
        throw ImageFileError(source: path, kind: .unreadable, format: nil, detail: "it is \(kind), not a regular file")
    }
    let data: Data
    do {
        data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw ImageFileError(source: path, kind: .unreadable, format: nil, detail: error.localizedDescription)
    }
    return try decodeImage(bytes: [UInt8](data), name: path, limits: limits)
}

/// Decodes in-memory JPEG or PNG data (see ``decodeImage(path:limits:)``); `name` appears in errors.
public func decodeImage(data: Data, name: String = "<memory>", limits: ImageLimits = .current) throws -> RGBImage {
    try decodeImage(bytes: [UInt8](data), name: name, limits: limits)
}

/// Decodes in-memory JPEG or PNG bytes (see ``decodeImage(path:limits:)``); `name` appears in errors.
public func decodeImage(bytes: [UInt8], name: String = "<memory>", limits: ImageLimits = .current) throws -> RGBImage {
    if bytes.isEmpty { throw ImageFileError(source: name, kind: .empty, format: nil, detail: "") }
    // A JPEG needs only FF D8 to reach libjpeg (which then reports what is wrong), a PNG its
    // first byte (the PNG decoder reports a cut signature as truncation).
    if bytes.count >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8 { return try JPEGDecoder.decode(bytes: bytes, name: name, limits: limits) }
    if bytes[0] == 0x89 && Array(bytes.prefix(8)) == Array(PNGChunkScan.signature.prefix(min(8, bytes.count))) {
        return try PNGDecoder.decode(bytes: bytes, name: name, limits: limits)
    }
    let format = ImageFormat.sniff(bytes)
    let head = bytes.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
    throw ImageFileError(source: name, kind: .unsupportedFormat, format: format,
                         detail: format == nil ? "starts with \(head)" : "")
}
