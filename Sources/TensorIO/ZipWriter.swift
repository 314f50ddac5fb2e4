import Foundation

/// Writes zip archives the way PyTorch does: stored (uncompressed) entries whose data starts on a
/// 64-byte boundary, with ZIP64 records when sizes or offsets need them (or when forced).
public enum ZipWriter {
    public static func write(entries: [(name: String, data: Data)], to url: URL, alignment: Int = 64,
                             forceZip64: Bool = false) throws {
        let path = url.path
        guard alignment >= 1, alignment <= 4096 else {
            throw FileError(.writeFailed, path: path, "alignment \(alignment) is out of range (1...4096).")
        }
        var seen = Set<String>()
        for e in entries {
            guard seen.insert(e.name).inserted else {
                throw FileError(.writeFailed, path: path, "duplicate zip entry '\(e.name)'.")
            }
            guard e.name.utf8.count < 0xffff else {
                throw FileError(.writeFailed, path: path, "zip entry name too long: '\(e.name.prefix(40))...'.")
            }
        }
        try writeAtomically(to: url) { handle in
            var offset: UInt64 = 0
            var central = ByteBuffer()
            func emit(_ d: Data) throws { try handle.write(contentsOf: d); offset += UInt64(d.count) }
            for (name, data) in entries {
                let nameBytes = Array(name.utf8)
                let size = UInt64(data.count)
                let headerOffset = offset
                let zip64 = forceZip64 || size >= 0xffff_ffff || headerOffset >= 0xffff_ffff
                let crc = data.withUnsafeBytes { CRC32.checksum($0) }
                var local = ByteBuffer()
                local.u32(0x0403_4b50); local.u16(zip64 ? 45 : 20); local.u16(0x0800); local.u16(0)
                local.u16(0); local.u16(0); local.u32(crc)
                local.u32(zip64 ? 0xffff_ffff : UInt32(size)); local.u32(zip64 ? 0xffff_ffff : UInt32(size))
                let zip64Extra = zip64 ? 20 : 0
                let unpadded = Int(headerOffset % UInt64(alignment)) + 30 + nameBytes.count + zip64Extra + 4
                let padding = (alignment - unpadded % alignment) % alignment
                local.u16(UInt16(nameBytes.count)); local.u16(UInt16(zip64Extra + 4 + padding))
                local.raw(nameBytes)
                if zip64 { local.u16(1); local.u16(16); local.u64(size); local.u64(size) }
                local.u16(0x4246); local.u16(UInt16(padding)); local.raw([UInt8](repeating: 0x5a, count: padding))  // "FB" padding, as PyTorch
                try emit(local.data)
                try emit(data)

                central.u32(0x0201_4b50); central.u16(zip64 ? 45 : 20); central.u16(zip64 ? 45 : 20); central.u16(0x0800)
                central.u16(0); central.u16(0); central.u16(0); central.u32(crc)
                central.u32(zip64 ? 0xffff_ffff : UInt32(size)); central.u32(zip64 ? 0xffff_ffff : UInt32(size))
                central.u16(UInt16(nameBytes.count)); central.u16(zip64 ? 28 : 0); central.u16(0)
                central.u16(0); central.u16(0); central.u32(0)
                central.u32(zip64 ? 0xffff_ffff : UInt32(headerOffset))
                central.raw(nameBytes)
                if zip64 { central.u16(1); central.u16(24); central.u64(size); central.u64(size); central.u64(headerOffset) }
            }
            let cdOffset = offset
            let cdSize = UInt64(central.bytes.count)
            try emit(central.data)
            let count = UInt64(entries.count)
            let zip64End = forceZip64 || count >= 0xffff || cdOffset >= 0xffff_ffff || cdSize >= 0xffff_ffff
            var end = ByteBuffer()
            if zip64End {
                let recordOffset = offset
                end.u32(0x0606_4b50); end.u64(44); end.u16(45); end.u16(45); end.u32(0); end.u32(0)
                end.u64(count); end.u64(count); end.u64(cdSize); end.u64(cdOffset)
                end.u32(0x0706_4b50); end.u32(0); end.u64(recordOffset); end.u32(1)
            }
            end.u32(0x0605_4b50); end.u16(0); end.u16(0)
            end.u16(zip64End ? 0xffff : UInt16(count)); end.u16(zip64End ? 0xffff : UInt16(count))
            end.u32(zip64End ? 0xffff_ffff : UInt32(cdSize)); end.u32(zip64End ? 0xffff_ffff : UInt32(cdOffset))
            end.u16(0)
            try emit(end.data)
        }
    }
}

/// Little-endian byte building.
struct ByteBuffer {
    var bytes: [UInt8] = []
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func raw(_ v: [UInt8]) { bytes += v }
    var data: Data { Data(bytes) }
}
