import Foundation

// MARK: - Values

/// A Python value as the unpickler rebuilds it. Containers and objects are classes, because pickle
/// fills them in place after they have been memoized.
public enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    /// A class or function named by GLOBAL / STACK_GLOBAL (never imported or run).
    case global(module: String, name: String)
    /// An instance made by NEWOBJ / REDUCE of a class the unpickler does not interpret
    /// (for example a TorchScript module `__torch__.clip.model.CLIP`), with its BUILD state.
    case object(PickleObject)
    /// A torch storage from a persistent id `('storage', torch.HalfStorage, key, location, numel)`.
    case storage(StorageReference)
    /// A tensor from `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    case tensor(TensorReference)

    public var int: Int? { if case .int(let v) = self { return v }; if case .bool(let b) = self { return b ? 1 : 0 }; return nil }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var tuple: [PickleValue]? {
        switch self {
        case .tuple(let t): return t
        case .list(let l): return l.items
        default: return nil
        }
    }
    public var tensor: TensorReference? { if case .tensor(let t) = self { return t }; return nil }
    public var dict: PickleDict? { if case .dict(let d) = self { return d }; return nil }
    public var object: PickleObject? { if case .object(let o) = self { return o }; return nil }
    public var isNone: Bool { if case .none = self { return true }; return false }

    /// `value[key]` for a dict (string key) or an object's attribute.
    public subscript(key: String) -> PickleValue? {
        switch self {
        case .dict(let d): return d[key]
        case .object(let o): return o[attribute: key]
        default: return nil
        }
    }

    /// A short description for error messages.
    public var typeDescription: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .tuple(let t): return "tuple of \(t.count)"
        case .list(let l): return "list of \(l.items.count)"
        case .dict(let d): return "dict of \(d.count)"
        case .global(let m, let n): return "global \(m).\(n)"
        case .object(let o): return "object \(o.qualifiedName)"
        case .storage(let s): return "storage \(s.typeName)"
        case .tensor(let t): return "tensor \(t.shape)"
        }
    }
}

/// A Python dict (also `collections.OrderedDict`), in insertion order.
public final class PickleDict {
    public private(set) var entries: [(key: PickleValue, value: PickleValue)] = []
    private var stringKeys: [String: Int] = [:]

    public init() {}

    public var count: Int { entries.count }

    public func set(_ key: PickleValue, _ value: PickleValue) {
        if case .string(let s) = key {
            if let i = stringKeys[s] { entries[i].value = value; return }
            stringKeys[s] = entries.count
        }
        entries.append((key, value))
    }

    public subscript(key: String) -> PickleValue? { stringKeys[key].map { entries[$0].value } }

    /// Entries whose key is a string, in order.
    public var stringKeyedEntries: [(key: String, value: PickleValue)] {
        entries.compactMap { e in e.key.string.map { ($0, e.value) } }
    }
}

/// A Python list.
public final class PickleList {
    public internal(set) var items: [PickleValue]
    public init(_ items: [PickleValue] = []) { self.items = items }
}

/// An instance of a class the unpickler does not interpret.
public final class PickleObject {
    public let module: String
    public let name: String
    /// Arguments of NEWOBJ or REDUCE.
    public let args: [PickleValue]
    /// The BUILD state: a dict of attributes, a `(dict, slots)` tuple, or a `__setstate__` value.
    public internal(set) var state: PickleValue?
    /// Items added by SETITEM(S) (dict subclasses).
    public internal(set) var dictItems: PickleDict?
    /// Items added by APPEND(S) (list subclasses).
    public internal(set) var listItems: [PickleValue] = []

    public init(module: String, name: String, args: [PickleValue] = [], state: PickleValue? = nil) {
        self.module = module; self.name = name; self.args = args; self.state = state
    }

    public var qualifiedName: String { "\(module).\(name)" }

    /// Attributes from a dict state (or the dicts of a `(dict, slots)` state), in order.
    public var attributes: [(name: String, value: PickleValue)] {
        switch state {
        case .dict(let d)?: return d.stringKeyedEntries.map { ($0.key, $0.value) }
        case .tuple(let t)? where t.count == 2:
            return t.flatMap { v -> [(name: String, value: PickleValue)] in
                if case .dict(let d) = v { return d.stringKeyedEntries.map { ($0.key, $0.value) } }
                return []
            }
        default: return []
        }
    }

    public subscript(attribute name: String) -> PickleValue? {
        switch state {
        case .dict(let d)?: return d[name]
        case .tuple(let t)? where t.count == 2:
            for v in t { if case .dict(let d) = v, let found = d[name] { return found } }
            return nil
        default: return nil
        }
    }
}

/// A torch storage: `<archive>/data/<key>` holding `numel` elements of `dtype`.
public struct StorageReference: Sendable, Equatable {
    /// "FloatStorage", "HalfStorage", ...
    public var typeName: String
    /// nil for a storage type TensorIO cannot convert (complex, quantized, ...).
    public var dtype: StorageDType?
    public var key: String
    public var location: String
    public var numel: Int
}

/// A view into a storage, as `_rebuild_tensor_v2` describes it.
public struct TensorReference: Sendable, Equatable {
    public var storage: StorageReference
    public var storageOffset: Int
    public var shape: [Int]
    public var stride: [Int]

    public var elementCount: Int { checkedElementCount(shape) ?? 0 }

    /// Row-major strides for `shape`.
    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var s = 1
        for i in Swift.stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = s
            s = s &* max(shape[i], 1)
        }
        return strides
    }

    public var isContiguous: Bool {
        let c = TensorReference.contiguousStrides(shape)
        for i in shape.indices where shape[i] > 1 && stride[i] != c[i] { return false }
        return true
    }
}

// MARK: - Walking

extension PickleValue {
    /// Every tensor reachable from this value, named by the dotted path of dict keys, object
    /// attributes (TorchScript modules) and list/tuple indices: `visual.conv1.weight`.
    public func tensorReferences(prefix: String = "") -> [(name: String, tensor: TensorReference)] {
        var out: [(name: String, tensor: TensorReference)] = []
        var onPath = Set<ObjectIdentifier>()
        func join(_ a: String, _ b: String) -> String { a.isEmpty ? b : "\(a).\(b)" }
        func walk(_ v: PickleValue, _ name: String, _ depth: Int) {
            guard depth < 128 else { return }
            switch v {
            case .tensor(let t):
                out.append((name, t))
            case .dict(let d):
                let id = ObjectIdentifier(d)
                guard onPath.insert(id).inserted else { return }
                for e in d.entries {
                    let key: String
                    switch e.key {
                    case .string(let s): key = s
                    case .int(let i): key = String(i)
                    default: continue
                    }
                    walk(e.value, join(name, key), depth + 1)
                }
                onPath.remove(id)
            case .list(let l):
                let id = ObjectIdentifier(l)
                guard onPath.insert(id).inserted else { return }
                for (i, item) in l.items.enumerated() { walk(item, join(name, String(i)), depth + 1) }
                onPath.remove(id)
            case .tuple(let t):
                for (i, item) in t.enumerated() { walk(item, join(name, String(i)), depth + 1) }
            case .object(let o):
                let id = ObjectIdentifier(o)
                guard onPath.insert(id).inserted else { return }
                switch o.state {
                case .dict?: for a in o.attributes { walk(a.value, join(name, a.name), depth + 1) }
                case .tuple(let t)? where t.count == 2 && t.contains(where: { $0.dict != nil }):
                    for a in o.attributes { walk(a.value, join(name, a.name), depth + 1) }
                case let s?: walk(s, name, depth + 1)
                case nil: break
                }
                if let d = o.dictItems { walk(.dict(d), name, depth + 1) }
                for (i, item) in o.listItems.enumerated() { walk(item, join(name, String(i)), depth + 1) }
                onPath.remove(id)
            default:
                break
            }
        }
        walk(self, prefix, 0)
        return out
    }
}

// MARK: - Unpickler

/// An unpickler for what PyTorch checkpoints contain (protocols 0-5 minus out-of-band buffers and
/// the extension registry). It never imports or runs anything: GLOBALs are names, and only a few
/// well-known callables (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
/// `_rebuild_parameter`, `_codecs.encode`, ...) are interpreted; any other call becomes a `PickleObject`.
public struct Unpickler {
    public typealias PersistentLoad = (PickleValue) throws -> PickleValue

    /// Named in error messages (a file, or file:entry).
    public var source: String
    /// Resolves BINPERSID / PERSID. nil: torch's `('storage', type, key, location, numel)` convention.
    public var persistentLoad: PersistentLoad?

    public init(source: String = "<pickle>", persistentLoad: PersistentLoad? = nil) {
        self.source = source
        self.persistentLoad = persistentLoad
    }

    public func load(_ bytes: [UInt8]) throws -> PickleValue {
        try bytes.withUnsafeBytes { try load($0) }
    }

    public func load(_ raw: UnsafeRawBufferPointer) throws -> PickleValue {
        var machine = Machine(data: raw, source: source, persistentLoad: persistentLoad)
        return try machine.run()
    }

    /// torch's persistent id for a storage: `('storage', torch.FloatStorage, '0', 'cpu', numel)`.
    public static func torchStorage(_ pid: PickleValue, source: String) throws -> PickleValue {
        guard let t = pid.tuple, t.count >= 5, t[0].string == "storage" else {
            throw TensorIOError(.unsupported, path: source,
                                "unsupported persistent id \(pid.typeDescription) (expected ('storage', torch.<Type>Storage, key, location, numel)).")
        }
        let typeName: String
        switch t[1] {
        case .global(_, let name): typeName = name
        case .string(let s): typeName = s
        default:
            throw TensorIOError(.corrupt, path: source, "corrupt pickle: storage persistent id has type \(t[1].typeDescription).")
        }
        let key: String
        switch t[2] {
        case .string(let s): key = s
        case .int(let i): key = String(i)
        default: throw TensorIOError(.corrupt, path: source, "corrupt pickle: storage persistent id has key \(t[2].typeDescription).")
        }
        guard let numel = t[4].int, numel >= 0 else {
            throw TensorIOError(.corrupt, path: source, "corrupt pickle: storage '\(key)' has element count \(t[4].typeDescription).")
        }
        return .storage(StorageReference(typeName: typeName, dtype: StorageDType(torchStorageName: typeName), key: key,
                                         location: t[3].string ?? "", numel: numel))
    }
}

private struct Machine {
    let data: UnsafeRawBufferPointer
    let source: String
    let persistentLoad: Unpickler.PersistentLoad?
    var pos = 0
    var opcodeOffset = 0
    var opcode: UInt8 = 0
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]

    init(data: UnsafeRawBufferPointer, source: String, persistentLoad: Unpickler.PersistentLoad?) {
        self.data = data; self.source = source; self.persistentLoad = persistentLoad
    }

    // MARK: errors

    func corrupt(_ what: String) -> TensorIOError {
        TensorIOError(.corrupt, path: source,
                      "corrupt pickle: \(what) (opcode 0x\(hex(opcode)) at offset \(opcodeOffset)). \(TensorIOError.redownload)")
    }

    func hex(_ b: UInt8) -> String { b < 16 ? "0" + String(b, radix: 16) : String(b, radix: 16) }

    // MARK: reading

    mutating func readByte() throws -> UInt8 {
        guard pos < data.count else { throw corrupt("unexpected end of data") }
        defer { pos += 1 }
        return data[pos]
    }

    mutating func readInt<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        let n = MemoryLayout<T>.size
        guard pos <= data.count - n, let base = data.baseAddress else {
            throw corrupt("unexpected end of data (needs \(n) more bytes)")
        }
        defer { pos += n }
        return T(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: T.self))
    }

    mutating func readBytes(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= data.count - pos else {
            throw corrupt("length \(n) runs past the end of the data (\(data.count - pos) bytes left)")
        }
        defer { pos += n }
        return UnsafeRawBufferPointer(rebasing: data[pos ..< pos + n])
    }

    mutating func readLength<T: FixedWidthInteger>(_ type: T.Type) throws -> Int {
        let v = try readInt(T.self)
        guard v >= 0, UInt64(v) <= UInt64(Int.max) else { throw corrupt("negative or huge length \(v)") }
        return Int(v)
    }

    mutating func readLine() throws -> String {
        var end = pos
        while end < data.count && data[end] != 0x0a { end += 1 }
        guard end < data.count else { throw corrupt("unterminated text argument") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: data[pos ..< end]), as: UTF8.self)
        pos = end + 1
        return s
    }

    func decodeString(_ raw: UnsafeRawBufferPointer) -> String { String(decoding: raw, as: UTF8.self) }

    // MARK: stack

    mutating func pop() throws -> PickleValue {
        if let m = marks.last, stack.count <= m { throw corrupt("pop across a MARK") }
        guard let v = stack.popLast() else { throw corrupt("stack underflow") }
        return v
    }

    mutating func popMark() throws -> [PickleValue] {
        guard let m = marks.popLast() else { throw corrupt("no MARK on the stack") }
        guard m <= stack.count else { throw corrupt("MARK above the stack") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    mutating func top() throws -> PickleValue {
        guard let v = stack.last else { throw corrupt("stack underflow") }
        return v
    }

    mutating func memoGet(_ i: Int) throws -> PickleValue {
        guard let v = memo[i] else { throw corrupt("memo key \(i) not found") }
        return v
    }

    // MARK: main loop

    mutating func run() throws -> PickleValue {
        while true {
            opcodeOffset = pos
            guard pos < data.count else {
                throw TensorIOError(.corrupt, path: source,
                                    "corrupt pickle: data ends at offset \(pos) without a STOP opcode. \(TensorIOError.redownload)")
            }
            opcode = data[pos]
            pos += 1
            switch opcode {
            case 0x80: _ = try readByte()                                 // PROTO
            case 0x95: _ = try readInt(UInt64.self)                       // FRAME
            case 0x2e:                                                    // STOP
                guard stack.count == 1, let v = stack.last else {
                    throw corrupt("STOP with \(stack.count) values on the stack")
                }
                return v
            // Scalars
            case 0x4e: stack.append(.none)                                 // NONE
            case 0x88: stack.append(.bool(true))                           // NEWTRUE
            case 0x89: stack.append(.bool(false))                          // NEWFALSE
            case 0x4a: stack.append(.int(Int(try readInt(Int32.self))))    // BININT
            case 0x4b: stack.append(.int(Int(try readByte())))             // BININT1
            case 0x4d: stack.append(.int(Int(try readInt(UInt16.self))))   // BININT2
            case 0x8a: stack.append(.int(try readLong(try Int(readByte()))))          // LONG1
            case 0x8b: stack.append(.int(try readLong(try readLength(Int32.self))))    // LONG4
            case 0x49:                                                    // INT (text)
                let s = try readLine()
                if s == "01" { stack.append(.bool(true)) } else if s == "00" { stack.append(.bool(false)) }
                else if let v = Int(s) { stack.append(.int(v)) } else { throw corrupt("bad INT '\(s)'") }
            case 0x4c:                                                    // LONG (text)
                var s = try readLine()
                if s.hasSuffix("L") { s.removeLast() }
                guard let v = Int(s) else { throw corrupt("bad or too large LONG '\(s)'") }
                stack.append(.int(v))
            case 0x47:                                                    // BINFLOAT (big-endian)
                stack.append(.float(Double(bitPattern: try readInt(UInt64.self).byteSwapped)))
            case 0x46:                                                    // FLOAT (text)
                let s = try readLine()
                guard let v = Double(s) else { throw corrupt("bad FLOAT '\(s)'") }
                stack.append(.float(v))
            // Strings and bytes
            case 0x58: stack.append(.string(decodeString(try readBytes(try readLength(UInt32.self)))))  // BINUNICODE
            case 0x8c: stack.append(.string(decodeString(try readBytes(Int(try readByte())))))          // SHORT_BINUNICODE
            case 0x8d: stack.append(.string(decodeString(try readBytes(try readLength(UInt64.self)))))  // BINUNICODE8
            case 0x54: stack.append(.string(latin1(try readBytes(try readLength(Int32.self)))))         // BINSTRING
            case 0x55: stack.append(.string(latin1(try readBytes(Int(try readByte())))))                // SHORT_BINSTRING
            case 0x42: stack.append(.bytes(Array(try readBytes(try readLength(UInt32.self)))))          // BINBYTES
            case 0x43: stack.append(.bytes(Array(try readBytes(Int(try readByte())))))                  // SHORT_BINBYTES
            case 0x8e, 0x96: stack.append(.bytes(Array(try readBytes(try readLength(UInt64.self)))))    // BINBYTES8, BYTEARRAY8
            case 0x56:                                                    // UNICODE (raw-unicode-escape; plain text only)
                stack.append(.string(try readLine()))
            // Containers
            case 0x28: marks.append(stack.count)                           // MARK
            case 0x7d: stack.append(.dict(PickleDict()))                   // EMPTY_DICT
            case 0x5d: stack.append(.list(PickleList()))                   // EMPTY_LIST
            case 0x29: stack.append(.tuple([]))                            // EMPTY_TUPLE
            case 0x8f: stack.append(.list(PickleList()))                   // EMPTY_SET (as a list)
            case 0x85: let a = try pop(); stack.append(.tuple([a]))        // TUPLE1
            case 0x86: let b = try pop(); let a = try pop(); stack.append(.tuple([a, b]))               // TUPLE2
            case 0x87: let c = try pop(); let b = try pop(); let a = try pop(); stack.append(.tuple([a, b, c]))  // TUPLE3
            case 0x74: stack.append(.tuple(try popMark()))                 // TUPLE
            case 0x6c: stack.append(.list(PickleList(try popMark())))      // LIST
            case 0x91: stack.append(.list(PickleList(try popMark())))      // FROZENSET
            case 0x64:                                                    // DICT
                let items = try popMark()
                let d = PickleDict()
                try setItems(d, items)
                stack.append(.dict(d))
            case 0x73:                                                    // SETITEM
                let value = try pop(); let key = try pop()
                try setItems(into: try top(), [key, value])
            case 0x75:                                                    // SETITEMS
                let items = try popMark()
                try setItems(into: try top(), items)
            case 0x61:                                                    // APPEND
                let value = try pop()
                try append(into: try top(), [value])
            case 0x65, 0x90:                                              // APPENDS, ADDITEMS
                let items = try popMark()
                try append(into: try top(), items)
            // Memo
            case 0x71: memo[Int(try readByte())] = try top()               // BINPUT
            case 0x72: memo[try readLength(UInt32.self)] = try top()       // LONG_BINPUT
            case 0x94: memo[memo.count] = try top()                        // MEMOIZE
            case 0x68: stack.append(try memoGet(Int(try readByte())))      // BINGET
            case 0x6a: stack.append(try memoGet(try readLength(UInt32.self)))  // LONG_BINGET
            case 0x70:                                                    // PUT (text)
                let s = try readLine()
                guard let i = Int(s) else { throw corrupt("bad PUT '\(s)'") }
                memo[i] = try top()
            case 0x67:                                                    // GET (text)
                let s = try readLine()
                guard let i = Int(s) else { throw corrupt("bad GET '\(s)'") }
                stack.append(try memoGet(i))
            // Stack manipulation
            case 0x30: _ = try pop()                                       // POP
            case 0x31: _ = try popMark()                                   // POP_MARK
            case 0x32: stack.append(try top())                             // DUP
            // Classes, calls, objects
            case 0x63:                                                    // GLOBAL
                let module = try readLine(); let name = try readLine()
                stack.append(.global(module: module, name: name))
            case 0x93:                                                    // STACK_GLOBAL
                let name = try pop(); let module = try pop()
                guard let n = name.string, let m = module.string else { throw corrupt("STACK_GLOBAL needs two strings") }
                stack.append(.global(module: m, name: n))
            case 0x52:                                                    // REDUCE
                let args = try pop(); let callable = try pop()
                guard let a = args.tuple else { throw corrupt("REDUCE arguments are \(args.typeDescription), not a tuple") }
                stack.append(try call(callable, a))
            case 0x81:                                                    // NEWOBJ
                let args = try pop(); let cls = try pop()
                guard let a = args.tuple else { throw corrupt("NEWOBJ arguments are \(args.typeDescription), not a tuple") }
                stack.append(try instantiate(cls, a))
            case 0x92:                                                    // NEWOBJ_EX
                _ = try pop(); let args = try pop(); let cls = try pop()
                guard let a = args.tuple else { throw corrupt("NEWOBJ_EX arguments are \(args.typeDescription), not a tuple") }
                stack.append(try instantiate(cls, a))
            case 0x6f:                                                    // OBJ
                var items = try popMark()
                guard !items.isEmpty else { throw corrupt("OBJ without a class") }
                let cls = items.removeFirst()
                stack.append(try instantiate(cls, items))
            case 0x69:                                                    // INST
                let module = try readLine(); let name = try readLine()
                stack.append(try instantiate(.global(module: module, name: name), try popMark()))
            case 0x62:                                                    // BUILD
                let state = try pop()
                build(try top(), state)
            case 0x51:                                                    // BINPERSID
                stack.append(try persistent(try pop()))
            case 0x50:                                                    // PERSID (text)
                stack.append(try persistent(.string(try readLine())))
            case 0x82, 0x83, 0x84:
                throw TensorIOError(.unsupported, path: source,
                                    "unsupported pickle: extension-registry opcode 0x\(hex(opcode)) at offset \(opcodeOffset) (EXT1/2/4) is not supported.")
            case 0x97, 0x98:
                throw TensorIOError(.unsupported, path: source,
                                    "unsupported pickle: out-of-band buffer opcode 0x\(hex(opcode)) at offset \(opcodeOffset) (protocol 5 buffers) is not supported.")
            case 0x53:
                throw TensorIOError(.unsupported, path: source,
                                    "unsupported pickle: protocol-0 STRING opcode at offset \(opcodeOffset) is not supported.")
            default:
                throw TensorIOError(.corrupt, path: source,
                                    "corrupt pickle: unknown opcode 0x\(hex(opcode)) at offset \(opcodeOffset). "
                                    + "The file is damaged or not a PyTorch checkpoint; download or copy it again.")
            }
        }
    }

    mutating func readLong(_ n: Int) throws -> Int {
        let raw = try readBytes(n)
        guard n > 0 else { return 0 }
        guard n <= 8 else {
            // Accept wider encodings of values that still fit (sign extension only).
            let fill: UInt8 = (raw[n - 1] & 0x80) != 0 ? 0xff : 0
            guard raw[8...].allSatisfy({ $0 == fill }), (raw[7] & 0x80) == (fill & 0x80) else {
                throw TensorIOError(.unsupported, path: source,
                                    "unsupported pickle: integer of \(n) bytes at offset \(opcodeOffset) does not fit in 64 bits.")
            }
            return try decodeLong(UnsafeRawBufferPointer(rebasing: raw[0..<8]))
        }
        return try decodeLong(raw)
    }

    func decodeLong(_ raw: UnsafeRawBufferPointer) throws -> Int {
        var v: UInt64 = 0
        for (i, b) in raw.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        let n = raw.count
        if n < 8, let last = raw.last, (last & 0x80) != 0 {
            v |= ~UInt64(0) << (8 * UInt64(n))  // sign-extend
        }
        return Int(truncatingIfNeeded: v)
    }

    func latin1(_ raw: UnsafeRawBufferPointer) -> String {
        String(String.UnicodeScalarView(raw.map { Unicode.Scalar($0) }))
    }

    func setItems(_ d: PickleDict, _ items: [PickleValue]) throws {
        guard items.count % 2 == 0 else { throw corrupt("odd number of dict items (\(items.count))") }
        var i = 0
        while i < items.count { d.set(items[i], items[i + 1]); i += 2 }
    }

    func setItems(into target: PickleValue, _ items: [PickleValue]) throws {
        switch target {
        case .dict(let d): try setItems(d, items)
        case .object(let o):
            let d = o.dictItems ?? PickleDict()
            try setItems(d, items)
            o.dictItems = d
        default: throw corrupt("SETITEM(S) on \(target.typeDescription)")
        }
    }

    func append(into target: PickleValue, _ items: [PickleValue]) throws {
        switch target {
        case .list(let l): l.items.append(contentsOf: items)
        case .object(let o): o.listItems.append(contentsOf: items)
        default: throw corrupt("APPEND(S) on \(target.typeDescription)")
        }
    }

    func build(_ target: PickleValue, _ state: PickleValue) {
        guard case .object(let o) = target else { return }  // e.g. OrderedDict's `_metadata`: not needed
        if case .dict(let old)? = o.state, case .dict(let new) = state {
            for e in new.entries { old.set(e.key, e.value) }
        } else {
            o.state = state
        }
    }

    func persistent(_ pid: PickleValue) throws -> PickleValue {
        if let persistentLoad { return try persistentLoad(pid) }
        return try Unpickler.torchStorage(pid, source: source)
    }

    func instantiate(_ cls: PickleValue, _ args: [PickleValue]) throws -> PickleValue {
        guard case .global(let module, let name) = cls else { throw corrupt("NEWOBJ on \(cls.typeDescription)") }
        switch (module, name) {
        case ("collections", "OrderedDict"), ("builtins", "dict"), ("__builtin__", "dict"):
            return try call(cls, args)
        default:
            return .object(PickleObject(module: module, name: name, args: args))
        }
    }

    func call(_ callable: PickleValue, _ args: [PickleValue]) throws -> PickleValue {
        guard case .global(let module, let name) = callable else {
            throw corrupt("REDUCE on \(callable.typeDescription), not a global")
        }
        switch (module, name) {
        case ("collections", "OrderedDict"), ("builtins", "dict"), ("__builtin__", "dict"):
            let d = PickleDict()
            if let pairs = args.first?.tuple {
                for p in pairs {
                    guard let kv = p.tuple, kv.count == 2 else { throw corrupt("\(name)() with a non-pair item") }
                    d.set(kv[0], kv[1])
                }
            }
            return .dict(d)
        case ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"):
            return try rebuildTensor(args, name: name)
        case ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"):
            guard let data = args.first else { throw corrupt("\(name)() without arguments") }
            return data
        case ("torch._tensor", "_rebuild_from_type_v2"):
            guard args.count >= 3, let inner = args[2].tuple else { throw corrupt("_rebuild_from_type_v2() with bad arguments") }
            return try call(args[0], inner)
        case ("_codecs", "encode"):
            guard let s = args.first?.string else { throw corrupt("_codecs.encode() without a string") }
            let encoding = args.count > 1 ? (args[1].string ?? "utf-8").lowercased() : "utf-8"
            if encoding == "latin1" || encoding == "latin-1" || encoding == "iso-8859-1" {
                return .bytes(s.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) })
            }
            return .bytes(Array(s.utf8))
        case ("builtins", "bytearray"), ("__builtin__", "bytearray"), ("builtins", "bytes"):
            if case .bytes(let b)? = args.first { return .bytes(b) }
            return .bytes([])
        case ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "list"), ("__builtin__", "set"):
            return .list(PickleList(args.first?.tuple ?? []))
        case ("builtins", "tuple"):
            return .tuple(args.first?.tuple ?? [])
        default:
            return .object(PickleObject(module: module, name: name, args: args))
        }
    }

    func rebuildTensor(_ args: [PickleValue], name: String) throws -> PickleValue {
        guard args.count >= 4 else { throw corrupt("\(name)() with \(args.count) arguments, expected at least 4") }
        guard case .storage(let storage) = args[0] else {
            // A custom persistent loader produced something else: keep the call uninterpreted.
            return .object(PickleObject(module: "torch._utils", name: name, args: args))
        }
        guard let offset = args[1].int, offset >= 0 else { throw corrupt("\(name)() storage offset is \(args[1].typeDescription)") }
        guard let sizeItems = args[2].tuple, let strideItems = args[3].tuple else {
            throw corrupt("\(name)() size/stride are \(args[2].typeDescription)/\(args[3].typeDescription), not tuples")
        }
        let shape = sizeItems.compactMap(\.int)
        let stride = strideItems.compactMap(\.int)
        guard shape.count == sizeItems.count, stride.count == strideItems.count, shape.count == stride.count,
              shape.allSatisfy({ $0 >= 0 }), stride.allSatisfy({ $0 >= 0 }) else {
            throw corrupt("\(name)() has size \(shape) and stride \(stride) that do not match")
        }
        return .tensor(TensorReference(storage: storage, storageOffset: offset, shape: shape, stride: stride))
    }
}
