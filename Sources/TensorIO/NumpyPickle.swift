import Foundation

/// A numpy array as a pickle holds it: `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`
/// (numpy 2 writes `numpy._core.multiarray`) followed by BUILD with the state
/// `(version, shape, dtype, is_fortran, raw data)`, the dtype being `numpy.dtype(code, 0, 1)` with
/// BUILD state `(3, byte order, ...)`. This is what CIFAR's `data` arrays are. Only the raw bytes
/// are kept; callers read them for the dtype they expect (``elementSize``, ``dtype``).
public struct NumpyArray: Sendable, Equatable {
    /// The dtype code without byte order, e.g. `u1`, `i8`, `f4`.
    public var dtype: String
    /// `<`, `>` or `|` (not applicable, one-byte types); `=` is native.
    public var byteOrder: String
    public var shape: [Int]
    public var fortranOrder: Bool
    /// The elements' bytes, `shape.reduce(1, *) * elementSize` of them.
    public var bytes: [UInt8]

    public var elementCount: Int { shape.reduce(1, *) }

    /// Bytes per element of the fixed-size dtype codes numpy pickles (`b1 i1 u1 i2 u2 f2 i4 u4 f4 i8 u8 f8`).
    public static func elementSize(_ code: String) -> Int? {
        guard code.count == 2, let kind = code.first, "biuf".contains(kind), let n = Int(String(code.last!)) else { return nil }
        return [1, 2, 4, 8].contains(n) && !(kind == "b" && n != 1) && !(kind == "f" && n == 1) ? n : nil
    }

    /// The array `value` (a pickled ndarray) describes; `source` (file, and the key) is named in errors.
    public init(pickled value: PickleValue, source: String) throws {
        func bad(_ what: String) -> FileError {
            FileError(.corrupt, path: source, "\(source) is not a pickled numpy array: \(what). \(FileError.redownload)")
        }
        guard case .object(let o) = value else { throw bad("it is \(value.typeDescription)") }
        guard o.name == "_reconstruct", o.module == "numpy.core.multiarray" || o.module == "numpy._core.multiarray" else {
            throw bad("it is made by \(o.qualifiedName), not numpy.core.multiarray._reconstruct")
        }
        guard var state = o.state?.tuple else { throw bad("its state is missing") }
        // Version 1 states start with the version; version 0 states do not.
        if state.count == 5, state[0].int == 1 { state.removeFirst() }
        guard state.count == 4 else { throw bad("its state has \(state.count) items, not (shape, dtype, is_fortran, data)") }
        guard let dims = state[0].tuple else { throw bad("its shape is \(state[0].typeDescription)") }
        let shape = dims.compactMap(\.int)
        guard shape.count == dims.count, shape.allSatisfy({ $0 >= 0 }) else { throw bad("its shape \(dims.map(\.typeDescription)) is not non-negative integers") }
        guard case .object(let d) = state[1], d.name == "dtype", d.module == "numpy" || d.module.hasPrefix("numpy.") else {
            throw bad("its dtype is \(state[1].typeDescription)")
        }
        guard let code = d.args.first.flatMap(NumpyArray.text) else { throw bad("its dtype has no type code") }
        guard let size = NumpyArray.elementSize(code) else {
            throw FileError(.unsupported, path: source, "\(source): numpy dtype '\(code)' is not supported (only fixed-size booleans, integers and floats)")
        }
        let order = d.state?.tuple.flatMap { $0.count > 1 ? NumpyArray.text($0[1]) : nil } ?? "|"
        guard let fortran = state[2].int else { throw bad("its is_fortran flag is \(state[2].typeDescription)") }
        let raw: [UInt8]
        switch state[3] {
        case .bytes(let b): raw = b
        case .string(let s): raw = s.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) }  // read as Latin-1
        default: throw bad("its data are \(state[3].typeDescription), not bytes")
        }
        var count = 1
        for n in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: n)
            guard !overflow else { throw bad("its shape \(shape) overflows") }
            count = p
        }
        guard raw.count == count * size else {
            throw FileError(.truncated, path: source, "\(source): numpy array of shape \(shape) and dtype \(code) needs \(count * size) bytes but holds \(raw.count). \(FileError.redownload)")
        }
        self.dtype = code; self.byteOrder = order; self.shape = shape; self.fortranOrder = fortran != 0; self.bytes = raw
    }

    /// Text from a pickled `str` (string) or a Python 2 byte string read as bytes.
    public static func text(_ v: PickleValue) -> String? {
        switch v {
        case .string(let s): return s
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        default: return nil
        }
    }
}
