import Foundation

/// A 64-bit FNV-1a digest of a file's bytes (hex), to recognise the same checkpoint or image list
/// again. Not cryptographic: it identifies caches, it does not protect them.
public func contentDigest(path: String) throws -> String {
    let file = try MappedFile(path: path)
    return file.withBytes(offset: 0, length: file.count) { contentDigest($0) } ?? contentDigest(UnsafeRawBufferPointer(start: nil, count: 0))
}

public func contentDigest(_ bytes: UnsafeRawBufferPointer) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return String(format: "%016llx", h)
}
