import Foundation
import TensorCore

/// A backend that runs every operation on the CPU backend and counts the calls by name: a model on
/// it computes what it computes on the CPU, and a test can see that the model's work went through
/// the backend interface (an operation done on host memory instead would not be counted).
public final class RecordingBackend: ComputeBackend, @unchecked Sendable {
    let cpu: CPUBackend
    private let lock = NSLock()
    private var counts: [String: Int] = [:]

    public init(_ cpu: CPUBackend = .default) { self.cpu = cpu }

    /// Calls so far, by operation.
    public var calls: [String: Int] { lock.lock(); defer { lock.unlock() }; return counts }
    public func reset() { lock.lock(); counts = [:]; lock.unlock() }

    private func note(_ name: String) { lock.lock(); counts[name, default: 0] += 1; lock.unlock() }

    public var name: String { "recording " + cpu.name }
    public var precision: Precision { cpu.precision }
    public func withPrecision(_ precision: Precision) throws -> any ComputeBackend { RecordingBackend(try cpu.with(precision: precision)) }
    public func makeTensor(_ shape: [Int], zeroed: Bool) -> Tensor { note("makeTensor"); return cpu.makeTensor(shape, zeroed: zeroed) }
    public func matmul(_ a: Tensor, _ b: Tensor, transA: Bool, transB: Bool, alpha: Float, beta: Float, into c: inout Tensor) {
        note("matmul"); cpu.matmul(a, b, transA: transA, transB: transB, alpha: alpha, beta: beta, into: &c)
    }
    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, packed: PackedWeight, into y: inout Tensor) {
        note("linear"); cpu.linear(x, weight: weight, bias: bias, packed: packed, into: &y)
    }
    public func linearInputGradient(_ dy: Tensor, weight: Tensor, packed: PackedWeight, dx: inout Tensor) {
        note("linearInputGradient"); cpu.linearInputGradient(dy, weight: weight, packed: packed, dx: &dx)
    }
    public func attention(qkv: Tensor, layout: SequenceLayout, heads: Int, causal: Bool, rounding: ActivationRounding,
                          probs: inout Tensor, context: inout Tensor) {
        note("attention"); cpu.attention(qkv: qkv, layout: layout, heads: heads, causal: causal, rounding: rounding, probs: &probs, context: &context)
    }
    public func attentionBackward(qkv: Tensor, probs: Tensor, dContext: Tensor, layout: SequenceLayout, heads: Int,
                                  dqkv: inout Tensor, workspace: Workspace?) {
        note("attentionBackward")
        cpu.attentionBackward(qkv: qkv, probs: probs, dContext: dContext, layout: layout, heads: heads, dqkv: &dqkv, workspace: workspace)
    }
    public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, into y: inout Tensor, mean: inout Tensor, rstd: inout Tensor) {
        note("layerNorm"); cpu.layerNorm(x, weight: weight, bias: bias, eps: eps, into: &y, mean: &mean, rstd: &rstd)
    }
    public func layerNormBackward(_ dy: Tensor, input x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor,
                                  dx: inout Tensor, dWeight: inout Tensor?, dBias: inout Tensor?) {
        note("layerNormBackward")
        cpu.layerNormBackward(dy, input: x, weight: weight, mean: mean, rstd: rstd, dx: &dx, dWeight: &dWeight, dBias: &dBias)
    }
    public func softmaxRows(_ x: inout Tensor, columns: Int, causalOffset: Int) {
        note("softmaxRows"); cpu.softmaxRows(&x, columns: columns, causalOffset: causalOffset)
    }
    public func quickGELU(_ x: Tensor, into y: inout Tensor) { note("quickGELU"); cpu.quickGELU(x, into: &y) }
    public func quickGELUBackward(_ dy: Tensor, input x: Tensor, dx: inout Tensor) {
        note("quickGELUBackward"); cpu.quickGELUBackward(dy, input: x, dx: &dx)
    }
    public func l2Normalize(_ x: Tensor, into y: inout Tensor, norms: inout Tensor) { note("l2Normalize"); cpu.l2Normalize(x, into: &y, norms: &norms) }
    public func l2NormalizeBackward(_ dy: Tensor, output y: Tensor, norms: Tensor, dx: inout Tensor) {
        note("l2NormalizeBackward"); cpu.l2NormalizeBackward(dy, output: y, norms: norms, dx: &dx)
    }
    public func roundToHalf(_ x: inout Tensor) { note("roundToHalf"); cpu.roundToHalf(&x) }
    public func quickGELUHalf(_ x: Tensor, into y: inout Tensor) { note("quickGELUHalf"); cpu.quickGELUHalf(x, into: &y) }
    public func quickGELUHalfBackward(_ dy: Tensor, input x: Tensor, dx: inout Tensor) {
        note("quickGELUHalfBackward"); cpu.quickGELUHalfBackward(dy, input: x, dx: &dx)
    }
    public func add(_ x: Tensor, to y: inout Tensor) { note("add"); cpu.add(x, to: &y) }
    public func axpy(_ alpha: Float, _ x: Tensor, _ y: inout Tensor) { note("axpy"); cpu.axpy(alpha, x, &y) }
    public func addBroadcast(_ block: Tensor, to x: inout Tensor) { note("addBroadcast"); cpu.addBroadcast(block, to: &x) }
    public func columnSums(_ x: Tensor, accumulating out: inout Tensor) { note("columnSums"); cpu.columnSums(x, accumulating: &out) }
    public func gatherRows(_ x: Tensor, _ rows: [Int], into out: inout Tensor) { note("gatherRows"); cpu.gatherRows(x, rows, into: &out) }
    public func scatterAddRows(_ src: Tensor, rows: [Int], into dst: inout Tensor) { note("scatterAddRows"); cpu.scatterAddRows(src, rows: rows, into: &dst) }
    public func copyRows(_ src: Tensor, into dst: inout Tensor, spans: [RowSpan], accumulate: Bool) {
        note(accumulate ? "copyRows+" : "copyRows"); cpu.copyRows(src, into: &dst, spans: spans, accumulate: accumulate)
    }
    public func patchify(_ pixels: Tensor, patchSize: Int, into out: inout Tensor) { note("patchify"); cpu.patchify(pixels, patchSize: patchSize, into: &out) }
}
