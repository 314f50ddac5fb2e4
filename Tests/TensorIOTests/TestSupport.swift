import Foundation
import TestSupport
import XCTest
@testable import TensorIO

let goldenCheckpoints = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints")

// MARK: - Little-endian byte building

struct Bytes {
    var b: [UInt8] = []
    mutating func u8(_ v: UInt8) { b.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
    mutating func raw(_ v: [UInt8]) { b += v }
    mutating func str(_ s: String) { b += Array(s.utf8) }
}

/// Writes a zip archive by hand: stored entries (or a fake "deflated" method), optionally with
/// ZIP64 records everywhere (sizes and offsets saturated to 0xFFFFFFFF, values in extra fields).
func buildZip(_ entries: [(name: String, data: [UInt8])], zip64: Bool = false, method: UInt16 = 0,
              comment: String = "") -> [UInt8] {
    var out = Bytes()
    var central = Bytes()
    for (name, data) in entries {
        let offset = UInt64(out.b.count)
        let crc = CRC32.checksum(data)
        let size = UInt64(data.count)
        // Local header
        out.u32(0x0403_4b50); out.u16(zip64 ? 45 : 20); out.u16(0x0800); out.u16(method); out.u16(0); out.u16(0)
        out.u32(crc)
        out.u32(zip64 ? 0xffff_ffff : UInt32(size)); out.u32(zip64 ? 0xffff_ffff : UInt32(size))
        out.u16(UInt16(name.utf8.count)); out.u16(zip64 ? 20 : 0)
        out.str(name)
        if zip64 { out.u16(1); out.u16(16); out.u64(size); out.u64(size) }
        out.raw(data)
        // Central header
        central.u32(0x0201_4b50); central.u16(zip64 ? 45 : 20); central.u16(zip64 ? 45 : 20); central.u16(0x0800)
        central.u16(method); central.u16(0); central.u16(0); central.u32(crc)
        central.u32(zip64 ? 0xffff_ffff : UInt32(size)); central.u32(zip64 ? 0xffff_ffff : UInt32(size))
        central.u16(UInt16(name.utf8.count)); central.u16(zip64 ? 28 : 0); central.u16(0)
        central.u16(0); central.u16(0); central.u32(0)
        central.u32(zip64 ? 0xffff_ffff : UInt32(offset))
        central.str(name)
        if zip64 { central.u16(1); central.u16(24); central.u64(size); central.u64(size); central.u64(offset) }
    }
    let cdOffset = UInt64(out.b.count)
    let cdSize = UInt64(central.b.count)
    out.raw(central.b)
    if zip64 {
        let recordOffset = UInt64(out.b.count)
        out.u32(0x0606_4b50); out.u64(44); out.u16(45); out.u16(45); out.u32(0); out.u32(0)
        out.u64(UInt64(entries.count)); out.u64(UInt64(entries.count)); out.u64(cdSize); out.u64(cdOffset)
        out.u32(0x0706_4b50); out.u32(0); out.u64(recordOffset); out.u32(1)
    }
    out.u32(0x0605_4b50); out.u16(0); out.u16(0)
    out.u16(zip64 ? 0xffff : UInt16(entries.count)); out.u16(zip64 ? 0xffff : UInt16(entries.count))
    out.u32(zip64 ? 0xffff_ffff : UInt32(cdSize)); out.u32(zip64 ? 0xffff_ffff : UInt32(cdOffset))
    out.u16(UInt16(comment.utf8.count)); out.str(comment)
    return out.b
}

func write(_ bytes: [UInt8], to url: URL) throws {
    try Data(bytes).write(to: url)
}
