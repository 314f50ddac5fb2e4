import Foundation

/// Tiny PNG, gzip and IDX writers (stored deflate blocks: no compressor needed).
public enum FileFixtures {

    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return c ^ 0xFFFF_FFFF
    }

    public static func bigEndian32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    public static func littleEndian32(_ v: UInt32) -> [UInt8] { bigEndian32(v).reversed() }

    /// Raw deflate data of stored (uncompressed) blocks.
    public static func storedDeflate(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        repeat {
            let n = min(65535, data.count - i)
            out.append(i + n == data.count ? 1 : 0)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[i..<(i + n)]
            i += n
        } while i < data.count
        return out
    }

    /// A gzip member holding `data` in stored blocks.
    public static func gzipStored(_ data: [UInt8]) -> [UInt8] {
        [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3] + storedDeflate(data) + littleEndian32(crc32(data)) + littleEndian32(UInt32(data.count))
    }

    /// An 8-bit RGB PNG of `width` x `height` with `pixels` (HWC).
    public static func makePNG(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
        func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
            let t = Array(type.utf8)
            return bigEndian32(UInt32(body.count)) + t + body + bigEndian32(crc32(t + body))
        }
        var raw: [UInt8] = []
        for y in 0..<height { raw.append(0); raw += pixels[(y * width * 3)..<((y + 1) * width * 3)] }
        var a: UInt32 = 1, b: UInt32 = 0
        for v in raw { a = (a + UInt32(v)) % 65521; b = (b + a) % 65521 }
        let zlib = [0x78, 0x01] + storedDeflate(raw) + bigEndian32(b << 16 | a)
        let ihdr = bigEndian32(UInt32(width)) + bigEndian32(UInt32(height)) + [8, 2, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", zlib) + chunk("IEND", [])
    }

    /// An unsigned-byte IDX file.
    public static func makeIDX(shape: [Int], data: [UInt8]) -> [UInt8] {
        [0, 0, 0x08, UInt8(shape.count)] + shape.flatMap { bigEndian32(UInt32($0)) } + data
    }
}
