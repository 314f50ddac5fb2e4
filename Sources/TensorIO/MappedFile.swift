import Foundation
import TensorCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only, memory-mapped file with bounds-checked little-endian reads.
///
/// Falls back to reading the file into memory when `mmap` is unavailable. Never traps on file
/// content: every accessor returns `nil` (or throws) for a range outside the file.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    /// Size of the file in bytes.
    public let count: Int
    private let base: UnsafeRawPointer?
    private let mappedLength: Int        // > 0 when `base` came from mmap
    private let ownsAllocation: Bool     // true when `base` was allocated for a read fallback

    public init(path: String) throws {
        self.path = path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FileError(.fileNotFound, path: path, "no such file. Check the path (relative paths are resolved "
                            + "against \(FileManager.default.currentDirectoryPath)).")
        }
        if isDirectory.boolValue {
            throw FileError(.unreadable, path: path, "is a directory, expected a file.")
        }
        if let kind = nonRegularFileKind(path) {
            throw FileError(.unreadable, path: path, "is \(kind), not a regular file; give the path of the file itself.")
        }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw FileError(.unreadable, path: path, "cannot open the file (\(reason)). Check its permissions.")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            throw FileError(.unreadable, path: path, "cannot stat the file (\(reason)).")
        }
        let size = Int(st.st_size)
        count = size
        if size == 0 {
            base = nil; mappedLength = 0; ownsAllocation = false
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        if let p, p != UnsafeMutableRawPointer(bitPattern: -1) {
            base = UnsafeRawPointer(p); mappedLength = size; ownsAllocation = false
            return
        }
        // Fallback: read the whole file.
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        var done = 0
        while done < size {
            let n = pread(fd, buffer + done, size - done, off_t(done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                buffer.deallocate()
                throw FileError(.unreadable, path: path,
                                "cannot read the file (read \(done) of \(size) bytes: \(String(cString: strerror(errno)))).")
            }
            done += n
        }
        base = UnsafeRawPointer(buffer); mappedLength = 0; ownsAllocation = true
    }

    /// An in-memory copy of `bytes` read like a file named `path` (tests, data not on disk).
    public init(bytes: [UInt8], path: String) {
        self.path = path
        count = bytes.count
        mappedLength = 0
        if bytes.isEmpty {
            base = nil; ownsAllocation = false
            return
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
        bytes.withUnsafeBytes { if let src = $0.baseAddress { buffer.copyMemory(from: src, byteCount: $0.count) } }
        base = UnsafeRawPointer(buffer); ownsAllocation = true
    }

    deinit {
        if let base {
            if mappedLength > 0 { munmap(UnsafeMutableRawPointer(mutating: base), mappedLength) }
            if ownsAllocation { UnsafeMutableRawPointer(mutating: base).deallocate() }
        }
    }

    /// Whether `length` bytes at `offset` lie inside the file.
    @inlinable
    public func contains(offset: Int, length: Int) -> Bool {
        offset >= 0 && length >= 0 && offset <= count && length <= count - offset
    }

    /// Runs `body` on the bytes `offset ..< offset+length`; `nil` when the range leaves the file.
    /// The buffer is only valid inside `body`.
    public func withBytes<R>(offset: Int, length: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        guard contains(offset: offset, length: length) else { return nil }
        return try withValidatedBytes(offset: offset, length: length, body)
    }

    /// `withBytes` for a range the caller has already checked with `contains`.
    func withValidatedBytes<R>(offset: Int, length: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        guard let base, length > 0, contains(offset: offset, length: length) else {
            return try body(UnsafeRawBufferPointer(start: nil, count: 0))
        }
        return try body(UnsafeRawBufferPointer(start: base + offset, count: length))
    }

    /// A copy of the bytes `offset ..< offset+length`; `nil` when the range leaves the file.
    public func bytes(offset: Int, length: Int) -> [UInt8]? {
        withBytes(offset: offset, length: length) { Array($0) }
    }

    /// Little-endian integer at `offset`; `nil` when it leaves the file.
    public func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T? {
        guard contains(offset: offset, length: MemoryLayout<T>.size), let base else { return nil }
        return T(littleEndian: (base + offset).loadUnaligned(as: T.self))
    }
}

/// A byte range of a `MappedFile` (a zip entry, a tensor's data), kept alive with the file.
public struct FileSlice: @unchecked Sendable {
    public let file: MappedFile
    public let offset: Int
    public let count: Int

    /// `nil` when the range leaves the file.
    public init?(file: MappedFile, offset: Int, count: Int) {
        guard file.contains(offset: offset, length: count) else { return nil }
        self.file = file; self.offset = offset; self.count = count
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try file.withValidatedBytes(offset: offset, length: count, body)  // range validated at init
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
    public var data: Data { withUnsafeBytes { Data($0) } }
}
