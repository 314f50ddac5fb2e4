import Foundation

/// Element types found in checkpoint files. Everything converts to Float32 on load.
public enum StorageDType: String, CaseIterable, Sendable {
    case float64 = "F64"
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"
    case int64 = "I64"
    case int32 = "I32"
    case int16 = "I16"
    case int8 = "I8"
    case uint8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    /// The safetensors name ("F32", "F16", "BF16", ...).
    public var safetensorsName: String { rawValue }

    public init?(safetensorsName: String) { self.init(rawValue: safetensorsName) }

    /// The torch storage class name ("FloatStorage", "HalfStorage", ...).
    public var torchStorageName: String {
        switch self {
        case .float64: return "DoubleStorage"
        case .float32: return "FloatStorage"
        case .float16: return "HalfStorage"
        case .bfloat16: return "BFloat16Storage"
        case .int64: return "LongStorage"
        case .int32: return "IntStorage"
        case .int16: return "ShortStorage"
        case .int8: return "CharStorage"
        case .uint8: return "ByteStorage"
        case .bool: return "BoolStorage"
        }
    }

    /// From a torch storage class name: "FloatStorage", "HalfStorage", "BFloat16Storage", ...
    public init?(torchStorageName: String) {
        switch torchStorageName {
        case "DoubleStorage": self = .float64
        case "FloatStorage": self = .float32
        case "HalfStorage": self = .float16
        case "BFloat16Storage": self = .bfloat16
        case "LongStorage": self = .int64
        case "IntStorage": self = .int32
        case "ShortStorage": self = .int16
        case "CharStorage": self = .int8
        case "ByteStorage", "UntypedStorage": self = .uint8
        case "BoolStorage": self = .bool
        default: return nil
        }
    }
}

// MARK: - Half and bfloat16 conversion (by hand: Swift's Float16 is not available everywhere)

/// IEEE 754 binary16 bits to Float32 (exact).
@inlinable
public func floatFromHalfBits(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32((h >> 10) & 0x1f)
    let mantissa = UInt32(h & 0x3ff)
    if exponent == 0 {
        if mantissa == 0 { return Float(bitPattern: sign) }
        let magnitude = Float(mantissa) * (1.0 / 16_777_216.0)  // mantissa * 2^-24, exact
        return sign != 0 ? -magnitude : magnitude
    }
    if exponent == 31 {
        return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// Float32 to IEEE 754 binary16 bits, rounding to nearest, ties to even (overflow gives infinity).
@inlinable
public func halfBitsFromFloat(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    let sign = UInt16((x >> 16) & 0x8000)
    let exponent = Int((x >> 23) & 0xff)
    var mantissa = x & 0x7f_ffff
    if exponent == 255 {  // infinity or NaN
        return sign | 0x7c00 | (mantissa != 0 ? 0x200 | UInt16(truncatingIfNeeded: mantissa >> 13) : 0)
    }
    let e = exponent - 127 + 15
    if e >= 31 { return sign | 0x7c00 }
    if e <= 0 {  // subnormal half (or zero)
        if e < -10 { return sign }
        mantissa |= 0x80_0000
        let shift = UInt32(14 - e)
        var h = mantissa >> shift
        let rest = mantissa & ((UInt32(1) << shift) - 1)
        let halfway = UInt32(1) << (shift - 1)
        if rest > halfway || (rest == halfway && (h & 1) == 1) { h += 1 }
        return sign | UInt16(truncatingIfNeeded: h)
    }
    var h = (UInt32(e) << 10) | (mantissa >> 13)
    let rest = mantissa & 0x1fff
    if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) { h += 1 }  // a carry rounds up into the exponent
    return sign | UInt16(truncatingIfNeeded: h)
}

/// bfloat16 bits to Float32 (exact).
@inlinable
public func floatFromBFloat16Bits(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

/// Float32 to bfloat16 bits, rounding to nearest, ties to even (NaN stays NaN).
@inlinable
public func bfloat16BitsFromFloat(_ f: Float) -> UInt16 {
    let x = f.bitPattern
    if f.isNaN { return UInt16(truncatingIfNeeded: (x >> 16) | 0x40) }
    let rounded = x &+ 0x7fff &+ ((x >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

// MARK: - Bulk conversion

enum ElementDecoder {
    /// Decodes `count` contiguous little-endian elements of `dtype` from `raw` into `out`.
    /// The caller guarantees `raw.count >= count * dtype.byteSize`.
    static func decode(_ raw: UnsafeRawBufferPointer, dtype: StorageDType, count: Int,
                       into out: UnsafeMutablePointer<Float>) {
        guard count > 0, let src = raw.baseAddress, case let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize),
              !overflow, raw.count >= bytes else { return }
        switch dtype {
        case .float32:
            memcpy(out, src, count * 4)
            #if _endian(big)
            for i in 0..<count { out[i] = Float(bitPattern: UInt32(littleEndian: out[i].bitPattern)) }
            #endif
        case .float16:
            for i in 0..<count { out[i] = floatFromHalfBits(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .bfloat16:
            for i in 0..<count { out[i] = floatFromBFloat16Bits(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .float64:
            for i in 0..<count { out[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
        case .int64:
            for i in 0..<count { out[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
        case .int32:
            for i in 0..<count { out[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
        case .int16:
            for i in 0..<count { out[i] = Float(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
        case .int8:
            for i in 0..<count { out[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
        case .uint8:
            for i in 0..<count { out[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
        case .bool:
            for i in 0..<count { out[i] = src.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0 }
        }
    }

    /// Decodes `count` contiguous elements into a new array.
    /// Callers bound `count` by the bytes they hold; a count the bytes cannot hold gives `[]`.
    static func decode(_ raw: UnsafeRawBufferPointer, dtype: StorageDType, count: Int) -> [Float] {
        guard count > 0, case let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize), !overflow, raw.count >= bytes else {
            return []
        }
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let out = buffer.baseAddress {
                if raw.count >= bytes {
                    decode(raw, dtype: dtype, count: count, into: out)
                } else {
                    out.initialize(repeating: 0, count: count)
                }
            }
            initialized = count
        }
    }

    /// Encodes Float32 values as `dtype` (float dtypes only), little-endian.
    static func encode(_ values: [Float], as dtype: StorageDType) -> Data? {
        guard [.float32, .float16, .bfloat16, .float64].contains(dtype) else { return nil }
        let n = values.count
        var out = Data(count: n * dtype.byteSize)
        guard n > 0 else { return out }
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBytes { raw in
                guard let s = src.baseAddress, let d = raw.baseAddress else { return }
                switch dtype {
                case .float32:
                    #if _endian(little)
                    memcpy(d, s, n * 4)
                    #else
                    for i in 0..<n { d.storeBytes(of: s[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                    #endif
                case .float16:
                    let h = d.bindMemory(to: UInt16.self, capacity: n)
                    for i in 0..<n { h[i] = halfBitsFromFloat(s[i]).littleEndian }
                case .bfloat16:
                    let h = d.bindMemory(to: UInt16.self, capacity: n)
                    for i in 0..<n { h[i] = bfloat16BitsFromFloat(s[i]).littleEndian }
                default:
                    for i in 0..<n { d.storeBytes(of: Double(s[i]).bitPattern.littleEndian, toByteOffset: 8 * i, as: UInt64.self) }
                }
            }
        }
        return out
    }
}

/// Product of a shape's dimensions, or nil on overflow or a negative dimension.
func checkedElementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, overflow) = n.multipliedReportingOverflow(by: d)
        if overflow { return nil }
        n = p
    }
    return n
}
