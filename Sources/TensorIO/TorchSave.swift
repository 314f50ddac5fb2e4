import Foundation
import TensorCore

/// Serializes `PickleValue`s with pickle protocol 2, as `torch.save` does: tensors become
/// `torch._utils._rebuild_tensor_v2` calls on persistent-id storages. Output loads with
/// `torch.load(path, weights_only=True)` when it holds only dicts, lists, scalars, strings and tensors.
public enum Pickler {
    public static func dumps(_ value: PickleValue, source: String = "<pickle>") throws -> [UInt8] {
        var out: [UInt8] = [0x80, 0x02]
        try emit(value, into: &out, depth: 0, source: source)
        out.append(0x2e)
        return out
    }

    private static func global(_ module: String, _ name: String, into out: inout [UInt8]) {
        out.append(0x63)
        out += Array("\(module)\n\(name)\n".utf8)
    }

    private static func string(_ s: String, into out: inout [UInt8]) {
        let b = Array(s.utf8)
        out.append(0x58)
        withUnsafeBytes(of: UInt32(b.count).littleEndian) { out += $0 }
        out += b
    }

    private static func int(_ v: Int, into out: inout [UInt8]) {
        if v >= 0 && v < 256 {
            out += [0x4b, UInt8(v)]
        } else if v >= 0 && v < 65536 {
            out.append(0x4d); withUnsafeBytes(of: UInt16(v).littleEndian) { out += $0 }
        } else if let i = Int32(exactly: v) {
            out.append(0x4a); withUnsafeBytes(of: i.littleEndian) { out += $0 }
        } else {
            out += [0x8a, 8]; withUnsafeBytes(of: Int64(v).littleEndian) { out += $0 }
        }
    }

    private static func tuple(_ items: [PickleValue], into out: inout [UInt8], depth: Int, source: String) throws {
        switch items.count {
        case 0: out.append(0x29)
        case 1...3:
            for i in items { try emit(i, into: &out, depth: depth + 1, source: source) }
            out.append([0x85, 0x86, 0x87][items.count - 1])
        default:
            out.append(0x28)
            for i in items { try emit(i, into: &out, depth: depth + 1, source: source) }
            out.append(0x74)
        }
    }

    private static func storage(_ s: StorageReference, into out: inout [UInt8]) {
        out.append(0x28)
        string("storage", into: &out)
        global("torch", s.typeName, into: &out)
        string(s.key, into: &out)
        string(s.location.isEmpty ? "cpu" : s.location, into: &out)
        int(s.numel, into: &out)
        out += [0x74, 0x51]  // TUPLE, BINPERSID
    }

    private static func emit(_ value: PickleValue, into out: inout [UInt8], depth: Int, source: String) throws {
        guard depth < 256 else {
            throw FileError(.writeFailed, path: source, "cannot pickle: the value nests deeper than 256 levels (a cycle?).")
        }
        switch value {
        case .none: out.append(0x4e)
        case .bool(let b): out.append(b ? 0x88 : 0x89)
        case .int(let v): int(v, into: &out)
        case .float(let d):
            out.append(0x47); withUnsafeBytes(of: d.bitPattern.bigEndian) { out += $0 }
        case .string(let s): string(s, into: &out)
        case .bytes(let b):  // protocol 2 has no bytes opcode: _codecs.encode(latin-1 text, 'latin1'), as Python writes it
            global("_codecs", "encode", into: &out)
            string(String(String.UnicodeScalarView(b.map { Unicode.Scalar($0) })), into: &out)
            string("latin1", into: &out)
            out += [0x86, 0x52]
        case .tuple(let items): try tuple(items, into: &out, depth: depth, source: source)
        case .list(let l):
            out.append(0x5d)
            if !l.items.isEmpty {
                out.append(0x28)
                for i in l.items { try emit(i, into: &out, depth: depth + 1, source: source) }
                out.append(0x65)
            }
        case .dict(let d):
            if d.isOrderedDict {  // collections.OrderedDict(), then its items: as pickle writes a state dict
                global("collections", "OrderedDict", into: &out)
                out += [0x29, 0x52]
            } else {
                out.append(0x7d)
            }
            if d.count > 0 {
                out.append(0x28)
                for e in d.entries {
                    try emit(e.key, into: &out, depth: depth + 1, source: source)
                    try emit(e.value, into: &out, depth: depth + 1, source: source)
                }
                out.append(0x75)
            }
        case .global(let m, let n): global(m, n, into: &out)
        case .object(let o):
            global(o.module, o.name, into: &out)
            try tuple(o.args, into: &out, depth: depth, source: source)
            out.append(0x81)
            if let state = o.state {
                try emit(state, into: &out, depth: depth + 1, source: source)
                out.append(0x62)
            }
        case .storage(let s): storage(s, into: &out)
        case .tensor(let t):
            global("torch._utils", "_rebuild_tensor_v2", into: &out)
            out.append(0x28)
            storage(t.storage, into: &out)
            int(t.storageOffset, into: &out)
            try tuple(t.shape.map { .int($0) }, into: &out, depth: depth, source: source)
            try tuple(t.stride.map { .int($0) }, into: &out, depth: depth, source: source)
            out.append(0x89)  // requires_grad=False
            global("collections", "OrderedDict", into: &out)
            out += [0x29, 0x52]  // OrderedDict()
            out += [0x74, 0x52]
        }
    }
}

/// Builds a `torch.save` zip archive (PyTorch >= 1.6 format) from Swift tensors.
///
///     var writer = TorchSaveWriter()
///     let root = PickleDict()
///     root.set(.string("ctx"), try writer.add(contextVectors))
///     try writer.write(root: .dict(root), to: url)     // torch.load(url, weights_only=True)["ctx"]
public struct TorchSaveWriter {
    public private(set) var storages: [(key: String, data: Data)] = []

    public init() {}

    /// Stores `tensor` (converted to `dtype`: F32, F16, BF16 or F64) as a new storage and returns the
    /// pickle value referring to it, to be placed anywhere in the root value.
    public mutating func add(_ tensor: Tensor, dtype: StorageDType = .float32) throws -> PickleValue {
        guard let data = ElementDecoder.encode(tensor.data, as: dtype) else {
            throw FileError(.unsupported, path: "<torch.save>", "cannot write tensors as \(dtype.rawValue); use F32, F16, BF16 or F64.")
        }
        let key = String(storages.count)
        storages.append((key, data))
        let storage = StorageReference(typeName: dtype.torchStorageName, dtype: dtype, key: key, location: "cpu", numel: tensor.count)
        return .tensor(TensorReference(storage: storage, storageOffset: 0, shape: tensor.shape,
                                       stride: TensorReference.contiguousStrides(tensor.shape)))
    }

    /// Writes the archive atomically; `archiveName` is the top folder inside the zip.
    public func write(root: PickleValue, to url: URL, archiveName: String = "archive") throws {
        let pickle = try Pickler.dumps(root, source: url.path)
        var entries: [(name: String, data: Data)] = [
            ("\(archiveName)/data.pkl", Data(pickle)),
            ("\(archiveName)/byteorder", Data("little".utf8)),
        ]
        for s in storages { entries.append(("\(archiveName)/data/\(s.key)", s.data)) }
        entries.append(("\(archiveName)/version", Data("3\n".utf8)))
        try ZipWriter.write(entries: entries, to: url)
    }
}

extension TorchArchive {
    /// Writes `tensors` as `torch.save(state_dict)` would: a dict of name -> tensor, sorted by name.
    public static func writeStateDict(_ tensors: [String: Tensor], to url: URL, dtype: StorageDType = .float32) throws {
        var writer = TorchSaveWriter()
        let root = PickleDict()
        for name in tensors.keys.sorted() {
            guard let t = tensors[name] else { continue }
            root.set(.string(name), try writer.add(t, dtype: dtype))
        }
        try writer.write(root: .dict(root), to: url)
    }
}
