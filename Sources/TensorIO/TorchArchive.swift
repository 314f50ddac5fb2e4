import Foundation
import TensorCore

/// A PyTorch zip checkpoint: `torch.save` files (PyTorch >= 1.6) and TorchScript archives
/// (`torch.jit.save`, e.g. openai's `ViT-B-16.pt`). The pickle `<top>/data.pkl` is read eagerly;
/// tensors are references into `<top>/data/<key>` and are converted only when asked for.
public final class TorchArchive: @unchecked Sendable {
    public let path: String
    public let zip: ZipArchive
    /// The archive's top folder with a trailing slash ("openai/", "archive/").
    public let prefix: String
    /// The unpickled `data.pkl`.
    public let root: PickleValue
    /// Every tensor in `data.pkl`, found once on open.
    private let references: [(name: String, tensor: TensorReference)]
    /// Whether each storage's CRC-32 is checked on its first read (`data.pkl`'s always is).
    public let verifiesCRC: Bool

    public convenience init(path: String, verifyCRC: Bool = true) throws {
        let file = try MappedFile(path: path)
        if !ZipArchive.looksLikeZip(file), file.load(UInt8.self, at: 0) == 0x80 {
            throw FileError(.unsupported, path: path,
                            "legacy (pre-zip) torch.save format is not supported. Re-save it with a recent PyTorch: "
                            + "torch.save(torch.load(path), new_path).")
        }
        try self.init(zip: ZipArchive(file: file), verifyCRC: verifyCRC)
    }

    /// `verifyCRC: false` skips the storages' CRC-32 checks: only for a caller that has checked the
    /// file's bytes otherwise (they cost about 0.3 s of CPU per GB; docs/HARDENING.md).
    public init(zip: ZipArchive, verifyCRC: Bool = true) throws {
        self.zip = zip
        self.verifiesCRC = verifyCRC
        self.path = zip.path
        let candidates = zip.entries.map(\.name).filter { name in
            guard name.hasSuffix("/data.pkl") else { return false }
            return !name.dropLast("/data.pkl".count).contains("/")
        }
        guard let pickleName = candidates.first else {
            throw FileError(.wrongFormat, path: path,
                            "a zip archive but not a PyTorch checkpoint: there is no '<name>/data.pkl' entry "
                            + "(entries: \(zip.entries.prefix(5).map(\.name).joined(separator: ", "))\(zip.entries.count > 5 ? ", ..." : "")).")
        }
        guard candidates.count == 1 else {
            throw FileError(.corrupt, path: path, "the archive has several top-level data.pkl entries: \(candidates.joined(separator: ", ")).")
        }
        prefix = String(pickleName.dropLast("data.pkl".count))
        let bytes = try zip.contents(of: pickleName, verifyCRC: true)
        let source = "\(path): \(pickleName)"
        let root = try Unpickler(source: source).load(bytes)
        self.root = root
        references = try root.checkedTensorReferences(source: source, budget: PickleValue.tensorWalkBudget(forPickleOf: bytes.count))
    }

    /// True for TorchScript archives (the pickled root is a `__torch__.*` module object).
    public var isTorchScript: Bool {
        if case .object(let o) = root, o.module.hasPrefix("__torch__") { return true }
        return false
    }

    /// Every tensor in `data.pkl`, named by its dotted path (dict keys / module attributes).
    public func tensorReferences() -> [(name: String, tensor: TensorReference)] {
        references
    }

    /// Converts one tensor to Float32, honouring storage offset and strides.
    public func tensor(_ ref: TensorReference, name: String) throws -> Tensor {
        let entryName = "\(prefix)data/\(ref.storage.key)"
        guard let dtype = ref.storage.dtype else {
            throw FileError(.unsupported, path: path,
                            "tensor '\(name)' has dtype \(ref.storage.typeName), which is not supported "
                            + "(supported: float64/32/16, bfloat16 and integer storages). Convert it to float32 in PyTorch first.")
        }
        let slice: FileSlice
        do { slice = try zip.slice(of: entryName, verifyCRC: verifiesCRC) } catch let e as FileError where e.kind == .missingEntry {
            throw FileError(.missingEntry, path: path,
                            "tensor '\(name)' refers to storage '\(entryName)', which the archive does not contain. \(FileError.redownload)")
        }
        let storageBytes = ref.storage.numel.multipliedReportingOverflow(by: dtype.byteSize)
        guard !storageBytes.overflow, slice.count >= storageBytes.partialValue else {
            throw FileError(.truncated, path: path,
                            "tensor '\(name)': storage '\(entryName)' has \(slice.count) bytes, but \(ref.storage.numel) \(ref.storage.typeName) elements need \(storageBytes.partialValue). \(FileError.redownload)")
        }
        return try StridedReader.read(slice, dtype: dtype, available: ref.storage.numel, offset: ref.storageOffset,
                                      shape: ref.shape, stride: ref.stride) { problem in
            FileError(.corrupt, path: path, "tensor '\(name)' (\(entryName)): \(problem). \(FileError.redownload)")
        }
    }

    /// All tensors, converted to Float32 (tensors of unsupported dtypes are skipped).
    public func loadAll() throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (name, ref) in tensorReferences() where out[name] == nil && ref.storage.dtype != nil {
            out[name] = try tensor(ref, name: name)
        }
        return out
    }
}

enum StridedReader {
    /// Reads a (possibly strided) view of `available` elements of `dtype` stored in `slice`.
    static func read(_ slice: FileSlice, dtype: StorageDType, available: Int, offset: Int, shape: [Int], stride: [Int],
                     error: (String) -> FileError) throws -> Tensor {
        guard shape.count == stride.count else { throw error("size \(shape) and stride \(stride) differ in rank") }
        guard let count = checkedElementCount(shape) else { throw error("invalid size \(shape)") }
        guard offset >= 0 else { throw error("negative storage offset \(offset)") }
        if count == 0 { return Tensor(shape: shape, data: []) }
        // Highest element index the view touches.
        var last = offset
        for (d, s) in zip(shape, stride) {
            guard s >= 0 else { throw error("negative stride \(stride)") }
            let (span, o1) = (d - 1).multipliedReportingOverflow(by: s)
            let (sum, o2) = last.addingReportingOverflow(span)
            guard !o1, !o2 else { throw error("size \(shape) with stride \(stride) overflows") }
            last = sum
        }
        guard last < available else {
            throw error("the view (offset \(offset), size \(shape), stride \(stride)) reaches element \(last) of a storage of \(available)")
        }
        let size = dtype.byteSize
        let contiguous = TensorReference(storage: StorageReference(typeName: "", dtype: dtype, key: "", location: "", numel: available),
                                         storageOffset: offset, shape: shape, stride: stride).isContiguous
        return slice.withUnsafeBytes { raw -> Tensor in
            if contiguous {
                let part = UnsafeRawBufferPointer(rebasing: raw[offset * size ..< (offset + count) * size])
                return Tensor(shape: shape, data: ElementDecoder.decode(part, dtype: dtype, count: count))
            }
            // General strided gather: decode element by element in row-major order.
            var data = [Float](repeating: 0, count: count)
            var index = [Int](repeating: 0, count: shape.count)
            var src = offset
            data.withUnsafeMutableBufferPointer { out in
                guard let dst = out.baseAddress else { return }
                for i in 0..<count {
                    let element = UnsafeRawBufferPointer(rebasing: raw[src * size ..< (src + 1) * size])
                    ElementDecoder.decode(element, dtype: dtype, count: 1, into: dst + i)
                    // Wrapping arithmetic: after the last element `src` may step past any bound (an axis of
                    // size 1 may carry any stride), but it is never read then. Every index read lies in
                    // offset...last, checked above.
                    var axis = shape.count - 1
                    while axis >= 0 {
                        index[axis] += 1
                        src = src &+ stride[axis]
                        if index[axis] < shape[axis] { break }
                        src = src &- stride[axis] &* shape[axis]
                        index[axis] = 0
                        axis -= 1
                    }
                }
            }
            return Tensor(shape: shape, data: data)
        }
    }
}
