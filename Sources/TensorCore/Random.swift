import Foundation

/// A small, explicit, seeded generator (SplitMix64). Every random draw in PromptTune takes one of
/// these by `inout`, so a run is a pure function of its seeds.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// The whole state: saving it and restoring it with `init(state:)` resumes the stream exactly.
    public var currentState: UInt64 { state }
    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / Float(1 << 24)) }

    /// Standard normal (Box-Muller).
    public mutating func nextNormal() -> Float {
        let u1 = max(Double(next() >> 11) * (1.0 / Double(1 << 53)), 1e-300)
        let u2 = Double(next() >> 11) * (1.0 / Double(1 << 53))
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

extension Tensor {
    /// Values drawn from N(0, std^2).
    public static func randomNormal(_ shape: [Int], std: Float = 1, using rng: inout SeededGenerator) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in rng.nextNormal() * std })
    }

    /// Values drawn uniformly from [low, high).
    public static func randomUniform(_ shape: [Int], _ low: Float, _ high: Float, using rng: inout SeededGenerator) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in low + (high - low) * rng.nextUniform() })
    }
}
