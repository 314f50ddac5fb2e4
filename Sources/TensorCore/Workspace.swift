import Foundation

/// An arena of Float buffers reused across training steps: the activations a forward keeps for its
/// backward, and the backward's temporaries, come from here instead of fresh allocations, so a
/// steady-state step neither maps nor faults in new pages (a ViT-B/16 DAPT step at batch 32 keeps
/// gigabytes of activations).
///
/// Buffers are pooled by element count (each block of a tower asks for the same sizes, so a step
/// reuses what the previous block or step gave back). `tensor(_:zeroed:)` moves a buffer out of the
/// pool into a Tensor; `recycle(_:)` moves a Tensor's buffer back in; `reset()` drops every pooled
/// buffer (memory returns to the system).
///
/// **Ownership rule.** A tensor is recycled by its last user, once its values are no longer read
/// (the backward recycles each block's caches after that block's backward). Storage stays safe
/// regardless: `Tensor` keeps value semantics (its `[Float]` is reference-counted copy-on-write),
/// so there are no views into the arena. If a copy of a recycled tensor is still held somewhere,
/// the buffer is shared, and the next owner's first write copies it: the holder's values never
/// change. Breaking the rule costs only the reuse, never correctness.
///
/// Thread safety: a lock guards the pool, so concurrent users may share one workspace.
public final class Workspace: @unchecked Sendable {
    /// Where the buffers live: a tensor the pool cannot serve is made by this backend.
    public let backend: any ComputeBackend
    private var pool: [Int: [[Float]]] = [:]
    private let lock = NSLock()
    /// Buffers handed out that came from the pool / had to be allocated (for benches and tests).
    public private(set) var reused = 0
    public private(set) var allocated = 0

    public init(backend: any ComputeBackend = defaultBackend) { self.backend = backend }

    /// A tensor of `shape` from the pool. Values are zero when `zeroed`, otherwise unspecified
    /// (stale values of an earlier user): pass `zeroed: false` only when every value is written
    /// before it is read.
    public func tensor(_ shape: [Int], zeroed: Bool = true) -> Tensor {
        let n = shape.reduce(1, *)
        lock.lock()
        let buffer = pool[n]?.popLast()
        if buffer != nil { reused += 1 } else { allocated += 1 }
        lock.unlock()
        guard var data = buffer else { return backend.makeTensor(shape, zeroed: true) }
        if zeroed {
            data.withUnsafeMutableBufferPointer { b in
                if let base = b.baseAddress { base.update(repeating: 0, count: b.count) }
            }
        }
        return Tensor(shape: shape, data: data)
    }

    /// Gives a tensor's storage back to the pool (see the ownership rule).
    public func recycle(_ t: consuming Tensor) {
        let data = t.data
        guard !data.isEmpty else { return }
        lock.lock()
        pool[data.count, default: []].append(data)
        lock.unlock()
    }

    /// Drops every pooled buffer.
    public func reset() {
        lock.lock()
        pool = [:]
        lock.unlock()
    }

    /// Bytes held in the pool (not counting buffers handed out).
    public var pooledBytes: Int {
        lock.lock(); defer { lock.unlock() }
        return pool.reduce(0) { $0 + $1.key * $1.value.count } * MemoryLayout<Float>.stride
    }
}
