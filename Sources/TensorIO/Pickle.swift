import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

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
    /// Built by `collections.OrderedDict` (a state dict); `Pickler` writes it back as one.
    public var isOrderedDict: Bool

    public init() { isOrderedDict = false }
    public convenience init(ordered: Bool) { self.init(); isOrderedDict = ordered }

    deinit {
        var children: [PickleValue] = []
        children.reserveCapacity(2 * entries.count)
        for e in entries { children.append(e.key); children.append(e.value) }
        entries = []
        PickleRelease.release(&children)
    }

    public var count: Int { entries.count }

    public func set(_ key: PickleValue, _ value: PickleValue) {
        if case .string(let s) = key {
            if let i = stringKeys[s] { entries[i].value = value; return }
            stringKeys[s] = entries.count
        }
        entries.append((key, value))
    }

    public subscript(key: String) -> PickleValue? { stringKeys[key].map { entries[$0].value } }

    /// The value under the byte-string key `key` (UTF-8), as dicts read with ``Unpickler/byteStrings``
    /// have them (Python 2's `str` keys, which Python 3 reads as `bytes` with `encoding='bytes'`).
    public subscript(bytesKey key: String) -> PickleValue? {
        let raw = Array(key.utf8)
        return entries.first { if case .bytes(let b) = $0.key { return b == raw }; return false }?.value
    }

    /// Entries whose key is a string, in order.
    public var stringKeyedEntries: [(key: String, value: PickleValue)] {
        entries.compactMap { e in e.key.string.map { ($0, e.value) } }
    }
}

/// A Python list.
public final class PickleList {
    public internal(set) var items: [PickleValue]
    public init(_ items: [PickleValue] = []) { self.items = items }

    deinit { PickleRelease.release(&items) }
}

/// An instance of a class the unpickler does not interpret.
public final class PickleObject {
    public let module: String
    public let name: String
    /// Arguments of NEWOBJ or REDUCE.
    public internal(set) var args: [PickleValue]
    /// The BUILD state: a dict of attributes, a `(dict, slots)` tuple, or a `__setstate__` value.
    public internal(set) var state: PickleValue?
    /// Items added by SETITEM(S) (dict subclasses).
    public internal(set) var dictItems: PickleDict?
    /// Items added by APPEND(S) (list subclasses).
    public internal(set) var listItems: [PickleValue] = []

    public init(module: String, name: String, args: [PickleValue] = [], state: PickleValue? = nil) {
        self.module = module; self.name = name; self.args = args; self.state = state
    }

    deinit {
        var children = args + listItems
        args = []; listItems = []
        if let s = state { children.append(s); state = nil }
        if let d = dictItems { children.append(.dict(d)); dictItems = nil }
        PickleRelease.release(&children)
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
        guard shape.count == stride.count else { return false }
        let c = TensorReference.contiguousStrides(shape)
        for i in shape.indices where shape[i] > 1 && stride[i] != c[i] { return false }
        return true
    }
}

// MARK: - Walking

extension PickleValue {
    /// How many values `tensorReferences` visits before giving up: far more than real checkpoints
    /// hold (a ViT-L/14 TorchScript archive has about 10,000 values), and a bound on the walk of a
    /// pickle whose shared tuples multiply the paths (each level doubling them: 2^n paths).
    public static let tensorWalkBudget = 2_000_000

    /// A walk budget for a pickle of `byteCount` bytes: every value takes at least one byte, so a
    /// tree walks at most `byteCount` values; only shared containers, seen once per path, walk more.
    public static func tensorWalkBudget(forPickleOf byteCount: Int) -> Int {
        min(tensorWalkBudget, 4 * byteCount + 10_000)
    }

    /// Every tensor reachable from this value, named by the dotted path of dict keys, object
    /// attributes (TorchScript modules) and list/tuple indices: `visual.conv1.weight`. A container
    /// reached again along its own path (a cycle) is skipped. Stops silently after
    /// `tensorWalkBudget` values; `checkedTensorReferences` throws instead.
    public func tensorReferences(prefix: String = "") -> [(name: String, tensor: TensorReference)] {
        walkTensors(prefix: prefix).references
    }

    /// `tensorReferences`, throwing a `FileError` naming `source` when the walk visits more than
    /// `budget` values (shared containers repeated over and over: a damaged or hostile pickle).
    public func checkedTensorReferences(prefix: String = "", source: String,
                                        budget: Int = PickleValue.tensorWalkBudget) throws -> [(name: String, tensor: TensorReference)] {
        let (references, complete) = walkTensors(prefix: prefix, budget: budget)
        guard complete else {
            throw FileError(.unsupported, path: source,
                            "the pickle has more than \(budget) values along its paths (shared containers "
                            + "repeated many times over); real checkpoints have far fewer. \(FileError.redownload)")
        }
        return references
    }

    /// Depth-first, in order, with an explicit stack: no recursion, whatever the nesting.
    private func walkTensors(prefix: String, budget: Int = PickleValue.tensorWalkBudget)
        -> (references: [(name: String, tensor: TensorReference)], complete: Bool) {
        enum Work { case visit(PickleValue, String), leave(ObjectIdentifier) }
        var out: [(name: String, tensor: TensorReference)] = []
        var onPath = Set<ObjectIdentifier>()
        var work: [Work] = [.visit(self, prefix)]
        var visits = 0
        func join(_ a: String, _ b: String) -> String { a.isEmpty ? b : "\(a).\(b)" }
        while let next = work.popLast() {
            let value: PickleValue, name: String
            switch next {
            case .leave(let id): onPath.remove(id); continue
            case .visit(let v, let n): value = v; name = n
            }
            visits += 1
            if visits > budget { return (out, false) }
            // Children are pushed in reverse so that they are visited in order.
            var children: [(PickleValue, String)] = []
            switch value {
            case .tensor(let t):
                out.append((name, t))
                continue
            case .dict(let d):
                let id = ObjectIdentifier(d)
                guard onPath.insert(id).inserted else { continue }
                work.append(.leave(id))
                for e in d.entries {
                    switch e.key {
                    case .string(let s): children.append((e.value, join(name, s)))
                    case .int(let i): children.append((e.value, join(name, String(i))))
                    default: continue
                    }
                }
            case .list(let l):
                let id = ObjectIdentifier(l)
                guard onPath.insert(id).inserted else { continue }
                work.append(.leave(id))
                for (i, item) in l.items.enumerated() { children.append((item, join(name, String(i)))) }
            case .tuple(let t):
                for (i, item) in t.enumerated() { children.append((item, join(name, String(i)))) }
            case .object(let o):
                let id = ObjectIdentifier(o)
                guard onPath.insert(id).inserted else { continue }
                work.append(.leave(id))
                switch o.state {
                case .dict?: for a in o.attributes { children.append((a.value, join(name, a.name))) }
                case .tuple(let t)? where t.count == 2 && t.contains(where: { $0.dict != nil }):
                    for a in o.attributes { children.append((a.value, join(name, a.name))) }
                case let s?: children.append((s, name))
                case nil: break
                }
                if let d = o.dictItems { children.append((.dict(d), name)) }
                for (i, item) in o.listItems.enumerated() { children.append((item, join(name, String(i)))) }
            default:
                continue
            }
            for c in children.reversed() { work.append(.visit(c.0, c.1)) }
        }
        return (out, true)
    }
}

// MARK: - Releasing without recursion

/// Frees pickled trees of any depth without recursion. Swift releases a value's children from
/// inside its own release, so a list nested 30,000 deep would overflow the stack when dropped.
/// Instead, each container's `deinit` hands its children to a per-thread queue; the outermost
/// release drains it in a loop (unpacking tuples, which have no `deinit` of their own), and the
/// nested `deinit`s it triggers only enqueue and return.
enum PickleRelease {
    final class Queue {
        var pending: [PickleValue] = []
        var draining = false
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        #if os(Linux)
        pthread_key_create(&key) { p in if let p { Unmanaged<Queue>.fromOpaque(p).release() } }
        #else
        pthread_key_create(&key) { p in Unmanaged<Queue>.fromOpaque(p).release() }
        #endif
        return key
    }()

    private static var queue: Queue {
        if let p = pthread_getspecific(key) { return Unmanaged<Queue>.fromOpaque(p).takeUnretainedValue() }
        let q = Queue()
        pthread_setspecific(key, Unmanaged.passRetained(q).toOpaque())
        return q
    }

    /// Takes `values` (leaving it empty: the queue must hold the only references, or the children
    /// would be freed, recursively, when the caller's array is) and frees them without recursion.
    static func release(_ values: inout [PickleValue]) {
        guard !values.isEmpty else { return }
        let q = queue
        q.pending.append(contentsOf: values)
        values = []
        guard !q.draining else { return }
        q.draining = true
        while let value = q.pending.popLast() {
            if case .tuple(let items) = value { q.pending.append(contentsOf: items) }
            // `value` is dropped here: a container whose last reference it was enqueues its
            // children in its `deinit` and returns.
        }
        q.draining = false
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
    /// The deepest nesting of containers a pickle may build (`defaultMaxDepth`).
    public var maxDepth: Int
    /// Python 2 byte strings (`str`: BINSTRING, SHORT_BINSTRING) become ``PickleValue/bytes``, as
    /// Python 3's `pickle.load(f, encoding='bytes')` reads them (CIFAR's pickles, whose keys and
    /// numpy array data are such strings); false: Latin-1 text, as `encoding='latin1'` (the default here).
    public var byteStrings = false

    /// 1,000 levels: real checkpoints nest fewer than 20 (a TorchScript module tree: module, state
    /// dict, submodule, ..., tensor), so this only refuses damaged or hostile files, and a tuple
    /// chain this deep still frees in a few hundred KB of stack.
    public static let defaultMaxDepth = 1_000

    public init(source: String = "<pickle>", persistentLoad: PersistentLoad? = nil, maxDepth: Int = Unpickler.defaultMaxDepth) {
        self.source = source
        self.persistentLoad = persistentLoad
        self.maxDepth = maxDepth
    }

    public func load(_ bytes: [UInt8]) throws -> PickleValue {
        try bytes.withUnsafeBytes { try load($0) }
    }

    public func load(_ raw: UnsafeRawBufferPointer) throws -> PickleValue {
        var machine = Machine(data: raw, source: source, persistentLoad: persistentLoad, maxDepth: maxDepth)
        machine.byteStrings = byteStrings
        return try machine.run()
    }

    /// torch's persistent id for a storage: `('storage', torch.FloatStorage, '0', 'cpu', numel)`.
    public static func torchStorage(_ pid: PickleValue, source: String) throws -> PickleValue {
        guard let t = pid.tuple, t.count >= 5, t[0].string == "storage" else {
            throw FileError(.unsupported, path: source,
                            "unsupported persistent id \(pid.typeDescription) (expected ('storage', torch.<Type>Storage, key, location, numel)).")
        }
        let typeName: String
        switch t[1] {
        case .global(_, let name): typeName = name
        case .string(let s): typeName = s
        default:
            throw FileError(.corrupt, path: source, "corrupt pickle: storage persistent id has type \(t[1].typeDescription).")
        }
        let key: String
        switch t[2] {
        case .string(let s): key = s
        case .int(let i): key = String(i)
        default: throw FileError(.corrupt, path: source, "corrupt pickle: storage persistent id has key \(t[2].typeDescription).")
        }
        guard let numel = t[4].int, numel >= 0 else {
            throw FileError(.corrupt, path: source, "corrupt pickle: storage '\(key)' has element count \(t[4].typeDescription).")
        }
        return .storage(StorageReference(typeName: typeName, dtype: StorageDType(torchStorageName: typeName), key: key,
                                         location: t[3].string ?? "", numel: numel))
    }
}

/// A value on the unpickler's stack or in its memo, with the nesting depth it was built with.
private struct Slot {
    var value: PickleValue
    var depth: Int
}

private struct Machine {
    let data: UnsafeRawBufferPointer
    let source: String
    let persistentLoad: Unpickler.PersistentLoad?
    let maxDepth: Int
    var byteStrings = false
    var pos = 0
    var opcodeOffset = 0
    var opcode: UInt8 = 0
    var stack: [Slot] = []
    var marks: [Int] = []
    var memo: [Int: Slot] = [:]
    /// Bytes made by calls (`_codecs.encode`, `bytes(...)`) rather than read: bounded by the data's
    /// size, so a memoized string encoded over and over cannot grow memory without limit.
    var madeBytes = 0

    init(data: UnsafeRawBufferPointer, source: String, persistentLoad: Unpickler.PersistentLoad?, maxDepth: Int) {
        self.data = data; self.source = source; self.persistentLoad = persistentLoad; self.maxDepth = maxDepth
    }

    // MARK: errors

    func corrupt(_ what: String) -> FileError {
        FileError(.corrupt, path: source,
                  "corrupt pickle: \(what) (opcode 0x\(hex(opcode)) at offset \(opcodeOffset)). \(FileError.redownload)")
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

    mutating func popSlot() throws -> Slot {
        if let m = marks.last, stack.count <= m { throw corrupt("pop across a MARK") }
        guard let v = stack.popLast() else { throw corrupt("stack underflow") }
        return v
    }

    mutating func pop() throws -> PickleValue { try popSlot().value }

    mutating func popMarkSlots() throws -> [Slot] {
        guard let m = marks.popLast() else { throw corrupt("no MARK on the stack") }
        guard m <= stack.count else { throw corrupt("MARK above the stack") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    mutating func popMark() throws -> [PickleValue] { try popMarkSlots().map(\.value) }

    func topSlot() throws -> Slot {
        guard let v = stack.last else { throw corrupt("stack underflow") }
        return v
    }

    func top() throws -> PickleValue { try topSlot().value }

    func memoGet(_ i: Int) throws -> Slot {
        guard let v = memo[i] else { throw corrupt("memo key \(i) not found") }
        return v
    }

    /// Pushes a value that holds no other values.
    mutating func push(_ value: PickleValue) { stack.append(Slot(value: value, depth: 0)) }

    /// Pushes a value built from `children`, one level deeper than the deepest of them.
    mutating func push(_ value: PickleValue, over children: [Slot]) throws {
        stack.append(Slot(value: value, depth: try depth(over: children)))
    }

    /// Records that the top of the stack now also holds `children` (SETITEM, APPEND, BUILD).
    mutating func deepenTop(over children: [Slot]) throws {
        guard !stack.isEmpty else { throw corrupt("stack underflow") }
        stack[stack.count - 1].depth = max(stack[stack.count - 1].depth, try depth(over: children))
    }

    func depth(over children: [Slot]) throws -> Int {
        let d = 1 + children.reduce(0) { max($0, $1.depth) }
        guard d <= maxDepth else {
            throw FileError(.unsupported, path: source,
                            "the pickle nests containers deeper than \(maxDepth) levels (opcode 0x\(hex(opcode)) at offset \(opcodeOffset)); "
                            + "real checkpoints nest fewer than 20. The file is damaged or not a checkpoint; download or copy it again.")
        }
        return d
    }

    // MARK: main loop

    mutating func run() throws -> PickleValue {
        while true {
            opcodeOffset = pos
            guard pos < data.count else {
                throw FileError(.corrupt, path: source,
                                "corrupt pickle: data ends at offset \(pos) without a STOP opcode. \(FileError.redownload)")
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
                return v.value
            // Scalars
            case 0x4e: push(.none)                                 // NONE
            case 0x88: push(.bool(true))                           // NEWTRUE
            case 0x89: push(.bool(false))                          // NEWFALSE
            case 0x4a: push(.int(Int(try readInt(Int32.self))))    // BININT
            case 0x4b: push(.int(Int(try readByte())))             // BININT1
            case 0x4d: push(.int(Int(try readInt(UInt16.self))))   // BININT2
            case 0x8a: push(.int(try readLong(try Int(readByte()))))          // LONG1
            case 0x8b: push(.int(try readLong(try readLength(Int32.self))))    // LONG4
            case 0x49:                                                    // INT (text)
                let s = try readLine()
                if s == "01" { push(.bool(true)) } else if s == "00" { push(.bool(false)) }
                else if let v = Int(s) { push(.int(v)) } else { throw corrupt("bad INT '\(s)'") }
            case 0x4c:                                                    // LONG (text)
                var s = try readLine()
                if s.hasSuffix("L") { s.removeLast() }
                guard let v = Int(s) else { throw corrupt("bad or too large LONG '\(s)'") }
                push(.int(v))
            case 0x47:                                                    // BINFLOAT (big-endian)
                push(.float(Double(bitPattern: try readInt(UInt64.self).byteSwapped)))
            case 0x46:                                                    // FLOAT (text)
                let s = try readLine()
                guard let v = Double(s) else { throw corrupt("bad FLOAT '\(s)'") }
                push(.float(v))
            // Strings and bytes
            case 0x58: push(.string(decodeString(try readBytes(try readLength(UInt32.self)))))  // BINUNICODE
            case 0x8c: push(.string(decodeString(try readBytes(Int(try readByte())))))          // SHORT_BINUNICODE
            case 0x8d: push(.string(decodeString(try readBytes(try readLength(UInt64.self)))))  // BINUNICODE8
            case 0x54: push(python2String(try readBytes(try readLength(Int32.self))))            // BINSTRING
            case 0x55: push(python2String(try readBytes(Int(try readByte()))))                   // SHORT_BINSTRING
            case 0x42: push(.bytes(Array(try readBytes(try readLength(UInt32.self)))))          // BINBYTES
            case 0x43: push(.bytes(Array(try readBytes(Int(try readByte())))))                  // SHORT_BINBYTES
            case 0x8e, 0x96: push(.bytes(Array(try readBytes(try readLength(UInt64.self)))))    // BINBYTES8, BYTEARRAY8
            case 0x56:                                                    // UNICODE (raw-unicode-escape; plain text only)
                push(.string(try readLine()))
            // Containers
            case 0x28: marks.append(stack.count)                           // MARK
            case 0x7d: push(.dict(PickleDict()))                   // EMPTY_DICT
            case 0x5d: push(.list(PickleList()))                   // EMPTY_LIST
            case 0x29: push(.tuple([]))                            // EMPTY_TUPLE
            case 0x8f: push(.list(PickleList()))                   // EMPTY_SET (as a list)
            case 0x85: let a = try popSlot(); try push(.tuple([a.value]), over: [a])                   // TUPLE1
            case 0x86: let b = try popSlot(); let a = try popSlot(); try push(.tuple([a.value, b.value]), over: [a, b])  // TUPLE2
            case 0x87:                                                                                 // TUPLE3
                let c = try popSlot(); let b = try popSlot(); let a = try popSlot()
                try push(.tuple([a.value, b.value, c.value]), over: [a, b, c])
            case 0x74: let items = try popMarkSlots(); try push(.tuple(items.map(\.value)), over: items)               // TUPLE
            case 0x6c, 0x91: let items = try popMarkSlots(); try push(.list(PickleList(items.map(\.value))), over: items)  // LIST, FROZENSET
            case 0x64:                                                    // DICT
                let items = try popMarkSlots()
                let d = PickleDict()
                try setItems(d, items.map(\.value))
                try push(.dict(d), over: items)
            case 0x73:                                                    // SETITEM
                let value = try popSlot(); let key = try popSlot()
                try setItems(into: try top(), [key.value, value.value])
                try deepenTop(over: [key, value])
            case 0x75:                                                    // SETITEMS
                let items = try popMarkSlots()
                try setItems(into: try top(), items.map(\.value))
                try deepenTop(over: items)
            case 0x61:                                                    // APPEND
                let value = try popSlot()
                try append(into: try top(), [value.value])
                try deepenTop(over: [value])
            case 0x65, 0x90:                                              // APPENDS, ADDITEMS
                let items = try popMarkSlots()
                try append(into: try top(), items.map(\.value))
                try deepenTop(over: items)
            // Memo
            case 0x71: memo[Int(try readByte())] = try topSlot()           // BINPUT
            case 0x72: memo[try readLength(UInt32.self)] = try topSlot()   // LONG_BINPUT
            case 0x94: memo[memo.count] = try topSlot()                    // MEMOIZE
            case 0x68: stack.append(try memoGet(Int(try readByte())))      // BINGET
            case 0x6a: stack.append(try memoGet(try readLength(UInt32.self)))  // LONG_BINGET
            case 0x70:                                                    // PUT (text)
                let s = try readLine()
                guard let i = Int(s) else { throw corrupt("bad PUT '\(s)'") }
                memo[i] = try topSlot()
            case 0x67:                                                    // GET (text)
                let s = try readLine()
                guard let i = Int(s) else { throw corrupt("bad GET '\(s)'") }
                stack.append(try memoGet(i))
            // Stack manipulation
            case 0x30: _ = try pop()                                       // POP
            case 0x31: _ = try popMark()                                   // POP_MARK
            case 0x32: stack.append(try topSlot())                         // DUP
            // Classes, calls, objects
            case 0x63:                                                    // GLOBAL
                let module = try readLine(); let name = try readLine()
                push(.global(module: module, name: name))
            case 0x93:                                                    // STACK_GLOBAL
                let name = try pop(); let module = try pop()
                guard let n = name.string, let m = module.string else { throw corrupt("STACK_GLOBAL needs two strings") }
                push(.global(module: m, name: n))
            case 0x52:                                                    // REDUCE
                let args = try popSlot(); let callable = try popSlot()
                guard let a = args.value.tuple else { throw corrupt("REDUCE arguments are \(args.value.typeDescription), not a tuple") }
                try push(try call(callable.value, a), over: [args, callable])
            case 0x81:                                                    // NEWOBJ
                let args = try popSlot(); let cls = try popSlot()
                guard let a = args.value.tuple else { throw corrupt("NEWOBJ arguments are \(args.value.typeDescription), not a tuple") }
                try push(try instantiate(cls.value, a), over: [args, cls])
            case 0x92:                                                    // NEWOBJ_EX
                let kwargs = try popSlot(); let args = try popSlot(); let cls = try popSlot()
                guard let a = args.value.tuple else { throw corrupt("NEWOBJ_EX arguments are \(args.value.typeDescription), not a tuple") }
                try push(try instantiate(cls.value, a), over: [kwargs, args, cls])
            case 0x6f:                                                    // OBJ
                let items = try popMarkSlots()
                guard let cls = items.first else { throw corrupt("OBJ without a class") }
                try push(try instantiate(cls.value, items.dropFirst().map(\.value)), over: items)
            case 0x69:                                                    // INST
                let module = try readLine(); let name = try readLine()
                let items = try popMarkSlots()
                try push(try instantiate(.global(module: module, name: name), items.map(\.value)), over: items)
            case 0x62:                                                    // BUILD
                let state = try popSlot()
                build(try top(), state.value)
                try deepenTop(over: [state])
            case 0x51:                                                    // BINPERSID
                let pid = try popSlot()
                try push(try persistent(pid.value), over: [pid])
            case 0x50:                                                    // PERSID (text)
                push(try persistent(.string(try readLine())))
            case 0x82, 0x83, 0x84:
                throw FileError(.unsupported, path: source,
                                "unsupported pickle: extension-registry opcode 0x\(hex(opcode)) at offset \(opcodeOffset) (EXT1/2/4) is not supported.")
            case 0x97, 0x98:
                throw FileError(.unsupported, path: source,
                                "unsupported pickle: out-of-band buffer opcode 0x\(hex(opcode)) at offset \(opcodeOffset) (protocol 5 buffers) is not supported.")
            case 0x53:
                throw FileError(.unsupported, path: source,
                                "unsupported pickle: protocol-0 STRING opcode at offset \(opcodeOffset) is not supported.")
            default:
                throw FileError(.corrupt, path: source,
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
                throw FileError(.unsupported, path: source,
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

    /// A Python 2 `str`: bytes with ``Unpickler/byteStrings``, else Latin-1 text.
    func python2String(_ raw: UnsafeRawBufferPointer) -> PickleValue {
        byteStrings ? .bytes(Array(raw)) : .string(latin1(raw))
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

    mutating func instantiate(_ cls: PickleValue, _ args: [PickleValue]) throws -> PickleValue {
        guard case .global(let module, let name) = cls else { throw corrupt("NEWOBJ on \(cls.typeDescription)") }
        switch (module, name) {
        case ("collections", "OrderedDict"), ("builtins", "dict"), ("__builtin__", "dict"):
            return try call(cls, args)
        default:
            return .object(PickleObject(module: module, name: name, args: args))
        }
    }

    mutating func call(_ callable: PickleValue, _ args: [PickleValue], nested: Bool = false) throws -> PickleValue {
        guard case .global(let module, let name) = callable else {
            throw corrupt("REDUCE on \(callable.typeDescription), not a global")
        }
        switch (module, name) {
        case ("collections", "OrderedDict"), ("builtins", "dict"), ("__builtin__", "dict"):
            let d = PickleDict(ordered: name == "OrderedDict")
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
            // (func, type, args, state): func is a tensor rebuild, never this function again.
            guard !nested else { throw corrupt("_rebuild_from_type_v2() nested in itself") }
            return try call(args[0], inner, nested: true)
        case ("_codecs", "encode"):
            guard let s = args.first?.string else { throw corrupt("_codecs.encode() without a string") }
            let encoding = args.count > 1 ? (args[1].string ?? "utf-8").lowercased() : "utf-8"
            try spend(s.utf8.count)
            if encoding == "latin1" || encoding == "latin-1" || encoding == "iso-8859-1" {
                return .bytes(s.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) })
            }
            return .bytes(Array(s.utf8))
        case ("builtins", "bytearray"), ("__builtin__", "bytearray"), ("builtins", "bytes"):
            if case .bytes(let b)? = args.first { try spend(b.count); return .bytes(b) }
            return .bytes([])
        case ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "list"), ("__builtin__", "set"):
            return .list(PickleList(args.first?.tuple ?? []))
        case ("builtins", "tuple"):
            return .tuple(args.first?.tuple ?? [])
        default:
            return .object(PickleObject(module: module, name: name, args: args))
        }
    }

    /// Counts `n` bytes made by a call against the budget of twice the pickle's size.
    mutating func spend(_ n: Int) throws {
        madeBytes += n
        guard madeBytes <= 2 * data.count + 4096 else {
            throw corrupt("calls make more bytes (\(madeBytes)) than the pickle could hold")
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
