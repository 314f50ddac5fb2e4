import Foundation

/// A contiguous, row-major Float32 tensor. Value semantics (copy-on-write through `Array`).
public struct Tensor: Equatable, Sendable {
    public private(set) var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count,
                     "Tensor: shape \(shape) needs \(shape.reduce(1, *)) values, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public init(scalar: Float) { self.init(shape: [], data: [scalar]) }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// The same values under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor { Tensor(shape: newShape, data: data) }

    /// Rows `range` of the first axis.
    public func slice(rows range: Range<Int>) -> Tensor {
        let inner = shape.dropFirst().reduce(1, *)
        return Tensor(shape: [range.count] + shape.dropFirst(),
                      data: Array(data[range.lowerBound * inner ..< range.upperBound * inner]))
    }

    public subscript(_ i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let head = data.prefix(6).map { String(format: "%.5g", $0) }.joined(separator: ", ")
        return "Tensor(\(shape), [\(head)\(data.count > 6 ? ", ..." : "")])"
    }
}

// MARK: - Raw access for kernels

extension Tensor {
    /// Runs `body` with a pointer to the values (never nil, even for an empty tensor).
    @inlinable
    public func withPointer<R>(_ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
        try data.withUnsafeBufferPointer { buf in
            try body(buf.baseAddress ?? UnsafePointer(bitPattern: MemoryLayout<Float>.alignment)!)
        }
    }

    @inlinable
    public mutating func withMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        try data.withUnsafeMutableBufferPointer { buf in
            try body(buf.baseAddress ?? UnsafeMutablePointer(bitPattern: MemoryLayout<Float>.alignment)!)
        }
    }

    /// Size of the last axis (1 for a scalar).
    public var lastDim: Int { shape.last ?? 1 }
    /// Product of all axes but the last: the number of rows of the 2-D view.
    public var rows: Int { lastDim == 0 ? 0 : count / lastDim }
}

// MARK: - Small value operations (not on hot paths)

extension Tensor {
    public static func + (a: Tensor, b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "Tensor +: shapes \(a.shape) and \(b.shape) differ")
        return Tensor(shape: a.shape, data: zip(a.data, b.data).map { $0 + $1 })
    }

    public static func * (a: Tensor, s: Float) -> Tensor { Tensor(shape: a.shape, data: a.data.map { $0 * s }) }

    /// Largest absolute value.
    public var maxAbs: Float { data.reduce(0) { max($0, abs($1)) } }

    /// Matrix transpose of a 2-D tensor.
    public func transposed() -> Tensor {
        precondition(rank == 2, "transposed() needs a 2-D tensor, got \(shape)")
        let (r, c) = (shape[0], shape[1])
        var out = [Float](repeating: 0, count: count)
        for i in 0..<r { for j in 0..<c { out[j * r + i] = data[i * c + j] } }
        return Tensor(shape: [c, r], data: out)
    }

    /// Rows gathered by index from a 2-D tensor (embedding lookup).
    public func gatherRows(_ indices: [Int]) -> Tensor {
        let c = lastDim
        var out = [Float](repeating: 0, count: indices.count * c)
        for (r, i) in indices.enumerated() {
            precondition(i >= 0 && i < rows, "gatherRows: index \(i) out of range 0..<\(rows)")
            for j in 0..<c { out[r * c + j] = data[i * c + j] }
        }
        return Tensor(shape: [indices.count, c], data: out)
    }
}
