import Foundation

/// Seeded, deterministic byte mutations for the readers' mutation tests: the same seed gives the
/// same inputs on every machine, so a failure names an input that can be rebuilt exactly.
public struct Mutator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }

    /// SplitMix64.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }

    /// One mutated copy of `bytes`: 1-4 edits among bit flips, byte overwrites with interesting
    /// values (0, 0xFF, 0x7F, 0x80), truncation, insertion, deletion and duplication of a span.
    public mutating func mutate(_ bytes: [UInt8]) -> [UInt8] {
        var b = bytes
        for _ in 0...below(4) {
            guard !b.isEmpty else { b = [UInt8(truncatingIfNeeded: next())]; continue }
            let at = below(b.count)
            switch below(7) {
            case 0: b[at] ^= UInt8(1 << below(8))
            case 1: b[at] = [0, 0xFF, 0x7F, 0x80][below(4)]
            case 2: b.removeSubrange(at..<b.count)
            case 3: b.insert(contentsOf: (0..<(1 + below(8))).map { _ in UInt8(truncatingIfNeeded: next()) }, at: at)
            case 4: b.removeSubrange(at..<min(b.count, at + 1 + below(16)))
            case 5:
                let end = min(b.count, at + 1 + below(64))
                b.insert(contentsOf: Array(b[at..<end]), at: at)
            default:
                // An overwrite of 4 bytes with a boundary integer (sizes, offsets, counts).
                let values: [UInt32] = [0, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000, 65535]
                let v = values[below(values.count)]
                for i in 0..<4 where at + i < b.count { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
            }
        }
        return b
    }
}
