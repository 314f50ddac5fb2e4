import Foundation

/// An exact emulation of CPython's `random.Random` (the Mersenne Twister of `_randommodule.c` and
/// the methods of `Lib/random.py`, CPython 3.11) for the calls Dassl and CoOp make: `seed(int)`,
/// `random()`, `getrandbits(k)`, `_randbelow(n)`, `sample`, `shuffle`, `choice` and `choices`.
///
/// For the same seed every method returns what Python returns and leaves the generator in the same
/// state, so a sequence of calls reproduces a Python run call for call (proven against
/// `Goldens/sampling/random.json`, written by `reference/sampling_goldens.py`). These algorithms
/// are unchanged from CPython 3.8 (which CoOp used) to 3.12.
///
/// A value type: copying it forks the stream. It is always seeded explicitly.
public struct PythonRandom: Sendable, Equatable {
    private static let n = 624
    private static let m = 397

    private var state: [UInt32]
    private var index: Int

    /// `random.Random(seed)`: as `random.seed(seed)` for an `int`.
    public init(seed: Int) {
        state = [UInt32](repeating: 0, count: Self.n)
        index = Self.n + 1
        self.seed(seed)
    }

    /// The twister seeded by `init_genrand(seed)` alone, as numpy's legacy `RandomState.seed(int)`
    /// seeds it (`mt19937_seed`); Python's own seeding goes through `init_by_array` instead. Only
    /// ``nextUInt32()`` is meant for a generator made this way (``NumpyRandomState`` uses it).
    init(genrandSeed seed: UInt32) {
        state = [UInt32](repeating: 0, count: Self.n)
        index = Self.n + 1
        initGenrand(seed)
    }

    /// The first `count` words of the twister's state (for tests against numpy's `get_state()`).
    func stateWords(_ count: Int) -> [UInt32] { Array(state.prefix(count)) }

    /// Seeds with an integer of any size, given as the little-endian 32-bit words of its absolute
    /// value (Python seeds with `abs(seed)`); `[]` is the same as `[0]`.
    public init(seedMagnitudeWords words: [UInt32]) {
        state = [UInt32](repeating: 0, count: Self.n)
        index = Self.n + 1
        seed(magnitudeWords: words)
    }

    /// `random.seed(a)` for an `int` `a`: `init_by_array` with the 32-bit words of `abs(a)`, least
    /// significant first, without leading zero words (the key of 0 is `[0]`).
    public mutating func seed(_ a: Int) {
        var magnitude = a.magnitude
        var words: [UInt32] = []
        while magnitude != 0 {
            words.append(UInt32(truncatingIfNeeded: magnitude))
            magnitude >>= 32
        }
        seed(magnitudeWords: words)
    }

    /// `random.seed(a)` for a non-negative integer of any size given as little-endian 32-bit words.
    public mutating func seed(magnitudeWords words: [UInt32]) {
        var key = words
        while key.count > 1, key.last == 0 { key.removeLast() }
        if key.isEmpty { key = [0] }
        initByArray(key)
    }

    // MARK: Mersenne Twister (MT19937, as in _randommodule.c)

    private mutating func initGenrand(_ s: UInt32) {
        state[0] = s
        for i in 1..<Self.n {
            let prev = state[i - 1]
            state[i] = 1_812_433_253 &* (prev ^ (prev >> 30)) &+ UInt32(i)
        }
        index = Self.n
    }

    private mutating func initByArray(_ key: [UInt32]) {
        initGenrand(19_650_218)
        let n = Self.n
        var i = 1, j = 0
        var k = max(n, key.count)
        while k > 0 {
            let prev = state[i - 1]
            state[i] = (state[i] ^ ((prev ^ (prev >> 30)) &* 1_664_525)) &+ key[j] &+ UInt32(truncatingIfNeeded: j)
            i += 1; j += 1
            if i >= n { state[0] = state[n - 1]; i = 1 }
            if j >= key.count { j = 0 }
            k -= 1
        }
        k = n - 1
        while k > 0 {
            let prev = state[i - 1]
            state[i] = (state[i] ^ ((prev ^ (prev >> 30)) &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= n { state[0] = state[n - 1]; i = 1 }
            k -= 1
        }
        state[0] = 0x8000_0000
    }

    /// `genrand_uint32`: the next 32-bit output of the twister.
    public mutating func nextUInt32() -> UInt32 {
        let n = Self.n, m = Self.m
        let upper: UInt32 = 0x8000_0000, lower: UInt32 = 0x7fff_ffff, matrixA: UInt32 = 0x9908_b0df
        if index >= n {
            state.withUnsafeMutableBufferPointer { mt in
                for kk in 0..<n {
                    let y = (mt[kk] & upper) | (mt[(kk + 1) % n] & lower)
                    mt[kk] = mt[(kk + m) % n] ^ (y >> 1) ^ ((y & 1) != 0 ? matrixA : 0)
                }
            }
            index = 0
        }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9d2c_5680
        y ^= (y << 15) & 0xefc6_0000
        y ^= y >> 18
        return y
    }

    // MARK: random.Random methods

    /// `random()`: a double in [0, 1) with 53 random bits.
    public mutating func random() -> Double {
        let a = Double(nextUInt32() >> 5), b = Double(nextUInt32() >> 6)
        return (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for `0 <= k <= 64`.
    public mutating func getrandbits(_ k: Int) -> UInt64 {
        precondition(k >= 0 && k <= 64, "getrandbits(\(k)): use getrandbitsWords for k > 64")
        if k == 0 { return 0 }
        if k <= 32 { return UInt64(nextUInt32() >> UInt32(32 - k)) }
        let words = getrandbitsWords(k)
        return UInt64(words[0]) | (UInt64(words[1]) << 32)
    }

    /// `getrandbits(k)` for any `k >= 0`, as the little-endian 32-bit words of the result
    /// (`(k + 31) / 32` of them; none for k = 0). Words are drawn least significant first and the
    /// last one keeps its top bits, as CPython does on little-endian machines.
    public mutating func getrandbitsWords(_ k: Int) -> [UInt32] {
        precondition(k >= 0, "getrandbits(\(k)): number of bits must be non-negative")
        if k == 0 { return [] }
        if k <= 32 { return [nextUInt32() >> UInt32(32 - k)] }
        var words: [UInt32] = []
        words.reserveCapacity((k - 1) / 32 + 1)
        var left = k
        while left > 0 {
            var r = nextUInt32()
            if left < 32 { r >>= UInt32(32 - left) }
            words.append(r)
            left -= 32
        }
        return words
    }

    /// `_randbelow(n)` (`_randbelow_with_getrandbits`): a uniform integer in `0..<n` by drawing
    /// `n.bit_length()` bits until the value is below `n`. `n` must be positive.
    public mutating func randbelow(_ n: Int) -> Int {
        precondition(n > 0, "_randbelow(\(n)): n must be positive")
        let k = Int.bitWidth - n.leadingZeroBitCount
        var r = getrandbits(k)
        while r >= UInt64(n) { r = getrandbits(k) }
        return Int(r)
    }

    /// `sample(range(n), k)`: `k` distinct indices of `0..<n` in selection order, by CPython's
    /// algorithm: a shrinking pool list when `n <= setsize`, otherwise rejection of repeats against
    /// a set, with `setsize = 21`, plus `4 ** ceil(log(3k, 4))` when `k > 5`.
    public mutating func sampleIndices(populationSize n: Int, count k: Int) -> [Int] {
        precondition(n >= 0 && k >= 0 && k <= n, "sample: sample larger than population or is negative (k = \(k), n = \(n))")
        if k == 0 { return [] }
        var result: [Int] = []
        result.reserveCapacity(k)
        if n <= Self.sampleSetSize(k) {
            var pool = Array(0..<n)
            for i in 0..<k {
                let j = randbelow(n - i)
                result.append(pool[j])
                pool[j] = pool[n - i - 1]
            }
        } else {
            var selected = Set<Int>(minimumCapacity: k)
            for _ in 0..<k {
                var j = randbelow(n)
                while selected.contains(j) { j = randbelow(n) }
                selected.insert(j)
                result.append(j)
            }
        }
        return result
    }

    /// The `setsize` threshold of `sample` for `k` items: `21`, plus `4 ** ceil(log(k * 3, 4))`
    /// when `k > 5` (`math.log(x, 4)` is `log(x) / log(4)` in doubles).
    static func sampleSetSize(_ k: Int) -> Int {
        var setsize = 21
        if k > 5 {
            let exponent = (Foundation.log(Double(k) * 3) / Foundation.log(4.0)).rounded(.up)
            // 4 ** 31 already exceeds any Int population size.
            if exponent >= 31 { return Int.max }
            setsize += 1 << (2 * Int(exponent))
        }
        return setsize
    }

    /// `sample(population, k)`: `k` elements without replacement, in selection order.
    public mutating func sample<T>(_ population: [T], k: Int) -> [T] {
        sampleIndices(populationSize: population.count, count: k).map { population[$0] }
    }

    /// `shuffle(x)`: Fisher-Yates from the end, `j = _randbelow(i + 1)`.
    public mutating func shuffle<T>(_ x: inout [T]) {
        guard x.count > 1 else { return }
        for i in stride(from: x.count - 1, through: 1, by: -1) {
            let j = randbelow(i + 1)
            x.swapAt(i, j)
        }
    }

    /// `choice(seq)`: `seq[_randbelow(len(seq))]`; nil (drawing nothing) for an empty sequence,
    /// where Python raises IndexError.
    public mutating func choice<T>(_ seq: [T]) -> T? {
        guard !seq.isEmpty else { return nil }
        return seq[randbelow(seq.count)]
    }

    /// `choices(range(n), k=k)` without weights: `floor(random() * n)` for each of the `k` draws.
    public mutating func choiceIndices(populationSize n: Int, k: Int) -> [Int] {
        precondition(k <= 0 || n > 0, "choices: cannot choose from an empty population")
        guard k > 0 else { return [] }
        let nf = Double(n)
        return (0..<k).map { _ in Int((random() * nf).rounded(.down)) }
    }

    /// `choices(population, k=k)` without weights (with replacement).
    public mutating func choices<T>(_ population: [T], k: Int) -> [T] {
        choiceIndices(populationSize: population.count, k: k).map { population[$0] }
    }
}
