import CZlib
import Foundation

/// One entry of a zip archive's central directory.
public struct ZipEntry: Sendable, Equatable {
    public var name: String
    /// 0 = stored, 8 = deflated, ...
    public var compressionMethod: UInt16
    public var compressedSize: Int
    public var uncompressedSize: Int
    public var crc32: UInt32
    /// Offset of the entry's local file header.
    public var localHeaderOffset: Int
    public var flags: UInt16

    public var isStored: Bool { compressionMethod == 0 }
    public var isDirectory: Bool { name.hasSuffix("/") }
}

/// A read-only zip archive as PyTorch writes it (stored entries, 64-byte aligned data), with ZIP64
/// support for archives past 4 GB. Compressed entries are listed but cannot be read.
///
/// Every entry's CRC-32 is checked the first time the entry is read (`slice(of:)`, `contents(of:)`),
/// once per archive: bit flips in tensor data are reported, not loaded. With zlib's `crc32` this
/// costs about 0.3 s of CPU per GB (docs/HARDENING.md), against the seconds a model takes
/// to load, so it is on by default; `verifyCRC: false` skips it for a caller that checks otherwise.
public final class ZipArchive: @unchecked Sendable {
    public let path: String
    public let file: MappedFile
    /// Entries in central-directory order.
    public let entries: [ZipEntry]
    private let index: [String: Int]
    /// Entries (by index) whose CRC has been checked; guarded by `lock` (tensors load in parallel).
    private var verified = Set<Int>()
    private let lock = NSLock()

    public var entryNames: [String] { entries.map(\.name) }

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        self.path = file.path
        let entries = try ZipArchive.readCentralDirectory(file)
        var index: [String: Int] = [:]
        for (i, e) in entries.enumerated() where index[e.name] == nil { index[e.name] = i }
        self.entries = entries
        self.index = index
    }

    /// Whether the file starts like a zip archive (a local header or an empty archive's end record).
    public static func looksLikeZip(_ file: MappedFile) -> Bool {
        guard let sig = file.load(UInt32.self, at: 0) else { return false }
        return sig == ZipArchive.localHeaderSignature || sig == ZipArchive.endSignature
    }

    public func entry(named name: String) -> ZipEntry? {
        index[name].map { entries[$0] }
    }

    /// The bytes of a stored entry, without copying; its CRC-32 is checked on the first read.
    public func slice(of name: String, verifyCRC: Bool = true) throws -> FileSlice {
        guard let entry = entry(named: name) else {
            throw FileError(.missingEntry, path: path, "the archive has no entry '\(name)'. \(FileError.redownload)")
        }
        return try slice(of: entry, verifyCRC: verifyCRC)
    }

    /// The bytes of a stored entry, without copying; its CRC-32 is checked on the first read.
    public func slice(of entry: ZipEntry, verifyCRC: Bool = true) throws -> FileSlice {
        let slice = try unverifiedSlice(of: entry)
        if verifyCRC { try verify(entry, slice) }
        return slice
    }

    private func verify(_ entry: ZipEntry, _ slice: FileSlice) throws {
        // The entry's position in `entries`: the central directory may list a name twice.
        let i = index[entry.name].flatMap({ entries[$0] == entry ? $0 : nil }) ?? entries.firstIndex(of: entry)
        if let i {
            lock.lock()
            let done = verified.contains(i)
            lock.unlock()
            if done { return }
        }
        let crc = slice.withUnsafeBytes { CRC32.checksum($0) }
        guard crc == entry.crc32 else {
            throw FileError(.corrupt, path: path,
                            "corrupt zip archive: entry '\(entry.name)' fails its CRC-32 check (stored 0x\(String(entry.crc32, radix: 16)), "
                            + "computed 0x\(String(crc, radix: 16))): its bytes were changed after it was written. \(FileError.redownload)")
        }
        if let i {
            lock.lock()
            verified.insert(i)
            lock.unlock()
        }
    }

    private func unverifiedSlice(of entry: ZipEntry) throws -> FileSlice {
        let name = entry.name
        guard entry.isStored else {
            throw FileError(.unsupported, path: path,
                            "entry '\(name)' uses compression method \(entry.compressionMethod) (\(entry.compressionMethod == 8 ? "deflate" : "unknown")): "
                            + "compressed entries are not supported. PyTorch writes stored (uncompressed) entries; "
                            + "re-save the checkpoint with torch.save, or re-zip it with `zip -0`.")
        }
        if entry.flags & 0x1 != 0 {
            throw FileError(.unsupported, path: path, "entry '\(name)' is encrypted; encrypted zip entries are not supported.")
        }
        let h = entry.localHeaderOffset
        guard h >= 0, h <= file.count, let sig = file.load(UInt32.self, at: h),
              let nameLength = file.load(UInt16.self, at: h + 26),
              let extraLength = file.load(UInt16.self, at: h + 28) else {
            throw FileError(.truncated, path: path,
                            "truncated zip archive: the local header of entry '\(name)' at offset \(h) lies past the end of the file (\(file.count) bytes). \(FileError.redownload)")
        }
        guard sig == ZipArchive.localHeaderSignature else {
            throw FileError(.corrupt, path: path,
                            "corrupt zip archive: entry '\(name)' has no local header at offset \(h) (found signature 0x\(String(sig, radix: 16))). \(FileError.redownload)")
        }
        let dataOffset = h + 30 + Int(nameLength) + Int(extraLength)
        guard let slice = FileSlice(file: file, offset: dataOffset, count: entry.compressedSize) else {
            throw FileError(.truncated, path: path,
                            "truncated zip archive: entry '\(name)' extends past the end of the file (its \(entry.compressedSize) bytes start at offset \(dataOffset), "
                            + "the file has \(file.count) bytes). \(FileError.redownload)")
        }
        guard entry.compressedSize == entry.uncompressedSize else {
            throw FileError(.corrupt, path: path,
                            "corrupt zip archive: stored entry '\(name)' lists \(entry.compressedSize) bytes stored but \(entry.uncompressedSize) "
                            + "uncompressed; for a stored entry they are equal. \(FileError.redownload)")
        }
        return slice
    }

    /// A copy of a stored entry's bytes, optionally checking its CRC-32.
    public func contents(of name: String, verifyCRC: Bool = true) throws -> [UInt8] {
        try slice(of: name, verifyCRC: verifyCRC).bytes
    }

    // MARK: - Central directory

    static let localHeaderSignature: UInt32 = 0x0403_4b50
    static let centralHeaderSignature: UInt32 = 0x0201_4b50
    static let endSignature: UInt32 = 0x0605_4b50
    static let zip64EndSignature: UInt32 = 0x0606_4b50
    static let zip64LocatorSignature: UInt32 = 0x0706_4b50

    private static func readCentralDirectory(_ file: MappedFile) throws -> [ZipEntry] {
        let path = file.path
        let size = file.count
        let startsLikeZip = looksLikeZip(file)
        // End of central directory: 22 bytes plus a comment of up to 65535 bytes, at the end.
        var eocd = -1
        if size >= 22 {
            let lowest = max(0, size - 22 - 65_535)
            var p = size - 22
            while p >= lowest {
                if file.load(UInt32.self, at: p) == endSignature,
                   let commentLength = file.load(UInt16.self, at: p + 20), p + 22 + Int(commentLength) <= size {
                    eocd = p
                    break
                }
                p -= 1
            }
        }
        guard eocd >= 0 else {
            if startsLikeZip {
                throw FileError(.truncated, path: path,
                                "truncated zip archive: it starts like a zip file but has no end-of-central-directory record (\(size) bytes). \(FileError.redownload)")
            }
            throw FileError(.wrongFormat, path: path, "not a zip archive (no zip signature found).")
        }
        guard var entryCount = file.load(UInt16.self, at: eocd + 10).map(Int.init),
              var cdSize = file.load(UInt32.self, at: eocd + 12).map(Int.init),
              var cdOffset = file.load(UInt32.self, at: eocd + 16).map(Int.init) else {
            throw FileError(.truncated, path: path, "truncated zip archive: end-of-central-directory record cut short. \(FileError.redownload)")
        }
        // ZIP64: the 32-bit fields are saturated and a locator precedes the end record.
        if entryCount == 0xffff || cdSize == 0xffff_ffff || cdOffset == 0xffff_ffff || file.load(UInt32.self, at: eocd - 20) == zip64LocatorSignature {
            let locator = eocd - 20
            guard locator >= 0, file.load(UInt32.self, at: locator) == zip64LocatorSignature,
                  let recordOffset64 = file.load(UInt64.self, at: locator + 8) else {
                throw FileError(.corrupt, path: path,
                                "corrupt zip archive: the end record needs ZIP64 values but there is no ZIP64 locator before it. \(FileError.redownload)")
            }
            guard recordOffset64 < UInt64(size), let recordOffset = Optional(Int(recordOffset64)),
                  file.load(UInt32.self, at: recordOffset) == zip64EndSignature,
                  let count64 = file.load(UInt64.self, at: recordOffset + 32),
                  let size64 = file.load(UInt64.self, at: recordOffset + 40),
                  let offset64 = file.load(UInt64.self, at: recordOffset + 48) else {
                throw FileError(.truncated, path: path,
                                "truncated or corrupt zip archive: the ZIP64 end-of-central-directory record at offset \(recordOffset64) is missing or cut short. \(FileError.redownload)")
            }
            guard count64 <= UInt64(Int.max), size64 <= UInt64(Int.max), offset64 <= UInt64(Int.max) else {
                throw FileError(.corrupt, path: path, "corrupt zip archive: ZIP64 central directory values out of range. \(FileError.redownload)")
            }
            entryCount = Int(count64); cdSize = Int(size64); cdOffset = Int(offset64)
        }
        guard file.contains(offset: cdOffset, length: cdSize) else {
            throw FileError(.truncated, path: path,
                            "truncated zip archive: the central directory (\(cdSize) bytes at offset \(cdOffset)) extends past the end of the file (\(size) bytes). \(FileError.redownload)")
        }
        // Each central header is at least 46 bytes: a count beyond that is corrupt.
        guard entryCount <= cdSize / 46 + 1 else {
            throw FileError(.corrupt, path: path,
                            "corrupt zip archive: \(entryCount) entries cannot fit in a \(cdSize)-byte central directory. \(FileError.redownload)")
        }

        var entries: [ZipEntry] = []
        entries.reserveCapacity(entryCount)
        var p = cdOffset
        let end = cdOffset + cdSize
        for i in 0..<entryCount {
            func cut() -> FileError {
                FileError(.truncated, path: path,
                          "truncated zip archive: central directory entry \(i) of \(entryCount) at offset \(p) is cut short. \(FileError.redownload)")
            }
            guard p + 46 <= end, let sig = file.load(UInt32.self, at: p) else { throw cut() }
            guard sig == centralHeaderSignature else {
                throw FileError(.corrupt, path: path,
                                "corrupt zip archive: central directory entry \(i) at offset \(p) has signature 0x\(String(sig, radix: 16)). \(FileError.redownload)")
            }
            guard let flags = file.load(UInt16.self, at: p + 8),
                  let method = file.load(UInt16.self, at: p + 10),
                  let crc = file.load(UInt32.self, at: p + 16),
                  let csize32 = file.load(UInt32.self, at: p + 20),
                  let usize32 = file.load(UInt32.self, at: p + 24),
                  let nameLength = file.load(UInt16.self, at: p + 28).map(Int.init),
                  let extraLength = file.load(UInt16.self, at: p + 30).map(Int.init),
                  let commentLength = file.load(UInt16.self, at: p + 32).map(Int.init),
                  let offset32 = file.load(UInt32.self, at: p + 42) else { throw cut() }
            let headerEnd = p + 46 + nameLength + extraLength + commentLength
            guard headerEnd <= end, let nameBytes = file.bytes(offset: p + 46, length: nameLength) else { throw cut() }
            let name = String(decoding: nameBytes, as: UTF8.self)
            var compressed = Int(csize32), uncompressed = Int(usize32), offset = Int(offset32)
            if csize32 == 0xffff_ffff || usize32 == 0xffff_ffff || offset32 == 0xffff_ffff {
                // ZIP64 extended information extra field (id 0x0001): the saturated values, in order.
                var q = p + 46 + nameLength
                let extraEnd = q + extraLength
                var found = false
                while q + 4 <= extraEnd {
                    guard let id = file.load(UInt16.self, at: q), let len = file.load(UInt16.self, at: q + 2).map(Int.init) else { throw cut() }
                    if id == 0x0001 {
                        var r = q + 4
                        let fieldEnd = min(r + len, extraEnd)
                        func next() throws -> Int {
                            guard r + 8 <= fieldEnd, let v = file.load(UInt64.self, at: r), v <= UInt64(Int.max) else {
                                throw FileError(.corrupt, path: path,
                                                "corrupt zip archive: entry '\(name)' has a malformed ZIP64 extra field. \(FileError.redownload)")
                            }
                            r += 8
                            return Int(v)
                        }
                        if usize32 == 0xffff_ffff { uncompressed = try next() }
                        if csize32 == 0xffff_ffff { compressed = try next() }
                        if offset32 == 0xffff_ffff { offset = try next() }
                        found = true
                        break
                    }
                    q += 4 + len
                }
                if !found {
                    throw FileError(.corrupt, path: path,
                                    "corrupt zip archive: entry '\(name)' needs a ZIP64 extra field but has none. \(FileError.redownload)")
                }
            }
            entries.append(ZipEntry(name: name, compressionMethod: method, compressedSize: compressed,
                                    uncompressedSize: uncompressed, crc32: crc, localHeaderOffset: offset, flags: flags))
            p = headerEnd
        }
        return entries
    }
}

/// CRC-32 (IEEE 802.3), as zip uses: zlib's `crc32` (several GB/s; a table loop is ten times slower).
public enum CRC32 {
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        guard var p = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return initial }
        var c = UInt(initial)
        var left = bytes.count
        while left > 0 {  // zlib takes a 32-bit length
            let n = min(left, 1 << 30)
            c = crc32(c, p, uInt(n))
            p += n
            left -= n
        }
        return UInt32(truncatingIfNeeded: c)
    }
}
