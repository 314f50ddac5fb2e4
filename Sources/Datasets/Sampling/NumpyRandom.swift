import Foundation

/// numpy's legacy generator, `np.random.RandomState` (what the module-level `np.random.seed` and
/// `np.random.shuffle` use), for the calls LIFT's CIFAR-100-LT makes: `seed(int)` and `shuffle` of a
/// 1-d array. MT19937 seeded by `init_genrand` (numpy's `mt19937_seed`), not by `init_by_array` as
/// Python's `random` is; `shuffle` is Fisher-Yates from the end, drawing each index with
/// `random_interval` (mask to the next power of two minus one, redraw while above the bound).
/// Proven against `Goldens/longtailed/numpy_random.json` (reference/make_lt_fixtures.py).
///
/// A value type: copying it forks the stream.
public struct NumpyRandomState: Sendable, Equatable {
    private var twister: PythonRandom

    /// `np.random.RandomState(seed)` / `np.random.seed(seed)` for `0 <= seed < 2**32`.
    public init(seed: UInt32) {
        twister = PythonRandom(genrandSeed: seed)
    }

    /// `random_interval(bitgen, max)`: uniform in `0...max`. Arrays have fewer than 2^32 items
    /// here, so only numpy's 32-bit branch is needed.
    public mutating func randomInterval(_ max: Int) -> Int {
        precondition(max >= 0 && max <= Int(UInt32.max), "randomInterval(\(max)): numpy's 64-bit branch is not implemented")
        if max == 0 { return 0 }
        var mask = UInt32(max)
        mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4; mask |= mask >> 8; mask |= mask >> 16
        while true {
            let value = twister.nextUInt32() & mask
            if value <= UInt32(max) { return Int(value) }
        }
    }

    /// `np.random.shuffle(x)` for a 1-d array: for i from n-1 down to 1, swap x[i] and x[random_interval(i)].
    public mutating func shuffle<T>(_ x: inout [T]) {
        var i = x.count - 1
        while i >= 1 {
            let j = randomInterval(i)
            x.swapAt(i, j)
            i -= 1
        }
    }

    /// The first `count` words of the MT19937 key (numpy's `get_state()[1][:count]`).
    func keyWords(_ count: Int) -> [UInt32] { twister.stateWords(count) }
}
