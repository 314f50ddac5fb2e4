import CDNNL
import CKernels
import Foundation

/// A 2-D convolution over NHWC activations (square kernel, stride, symmetric zero padding) with a
/// bias, and optionally a residual added and a ReLU applied in the same pass: what a ResNet with
/// frozen batch norms folded into its convolutions needs (inference only; no backward).
///
/// On a CPU backend with oneDNN products it runs oneDNN's convolution primitive (created once per
/// shape and cached, the weight reordered once into the layout the kernel reads, fp32 or bf16 after
/// the backend's precision); elsewhere, or where oneDNN offers only its reference code, an im2col
/// product through `gemm`. (A CPU operation: the backend interface has no convolution, as only
/// ResNet image towers, which run forward only, need one.)
public struct Conv2D: Sendable {
    public let weight: Tensor   // O, I, K, K (PyTorch's layout)
    public let bias: Tensor     // O
    public let stride: Int
    public let padding: Int
    let packed = PackedWeight()
    /// Whose products run the convolution.
    public var backend: any ComputeBackend = defaultBackend

    public init(weight: Tensor, bias: Tensor, stride: Int = 1, padding: Int = 0) {
        precondition(weight.rank == 4 && weight.shape[2] == weight.shape[3], "Conv2D weight \(weight.shape), expected [O, I, K, K]")
        precondition(bias.shape == [weight.shape[0]], "Conv2D bias \(bias.shape) vs weight \(weight.shape)")
        precondition(stride >= 1 && padding >= 0, "Conv2D stride \(stride), padding \(padding)")
        self.weight = weight; self.bias = bias; self.stride = stride; self.padding = padding
    }

    /// The weight as O, K, K, I (the im2col product's layout; made per call, the fallback is rare).
    var weightOHWI: Tensor {
        let (o, i, k) = (weight.shape[0], weight.shape[1], weight.shape[2])
        var t = [Float](repeating: 0, count: weight.count)
        for a in 0..<o { for c in 0..<i { for y in 0..<k { for x in 0..<k {
            t[((a * k + y) * k + x) * i + c] = weight.data[((a * i + c) * k + y) * k + x]
        } } } }
        return Tensor(shape: [o, k, k, i], data: t)
    }

    /// A convolution (no bias) followed by a frozen batch norm, as one convolution:
    /// w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps).
    public static func folding(weight: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor,
                               eps: Double = 1e-5, stride: Int = 1, padding: Int = 0) -> Conv2D {
        let o = weight.shape[0], per = weight.count / max(o, 1)
        precondition([gamma, beta, mean, variance].allSatisfy { $0.shape == [o] }, "batch norm of \(o) channels expected")
        var w = weight.data, b = [Float](repeating: 0, count: o)
        for c in 0..<o {
            let scale = Double(gamma[c]) / (Double(variance[c]) + eps).squareRoot()
            for j in 0..<per { w[c * per + j] = Float(Double(w[c * per + j]) * scale) }
            b[c] = Float(Double(beta[c]) - Double(mean[c]) * scale)
        }
        return Conv2D(weight: Tensor(shape: weight.shape, data: w), bias: Tensor(shape: [o], data: b),
                      stride: stride, padding: padding)
    }

    /// The implementation oneDNN picks for a ResNet-sized convolution (3x3, 64 -> 64 channels at
    /// 56 x 56, 32 images, ReLU), e.g. "brg_conv_fwd:avx512_core", or why none.
    public static func oneDNNImplementation(bf16: Bool) -> String {
        let p = OneDNNConv.Problem(batch: 32, height: 56, width: 56, inChannels: 64, outChannels: 64, kernel: 3, stride: 1,
                                   padding: 1, relu: true, sum: false, bf16: bf16)
        return OneDNNConv.implementation(p) ?? "none (reference code only: im2col products instead)"
    }

    public var outChannels: Int { weight.shape[0] }
    public var inChannels: Int { weight.shape[1] }
    public var kernel: Int { weight.shape[2] }
    public func outputSize(_ n: Int) -> Int { (n + 2 * padding - kernel) / stride + 1 }

    /// x: B, H, W, I -> B, H', W', O; `residual` (B, H', W', O) is added before the ReLU. The
    /// output's storage comes from `workspace` when given (without a residual).
    public func forward(_ x: Tensor, relu: Bool = false, residual: Tensor? = nil, workspace: Workspace? = nil) -> Tensor {
        if var y = residual {
            forward(x, relu: relu, accumulatingInto: &y)
            return y
        }
        let shape = outputShape(x)
        // oneDNN writes every value: the buffer is not cleared first.
        var y = workspace?.tensor(shape, zeroed: false)
            ?? Tensor(shape: shape, data: [Float](unsafeUninitializedCapacity: shape.reduce(1, *)) { _, count in count = shape.reduce(1, *) })
        if !oneDNNForward(x, into: &y, relu: relu, sum: false) {
            let n = y.count
            y.withMutablePointer { p in p.update(repeating: 0, count: n) }
            im2colForward(x, into: &y, relu: relu)
        }
        return y
    }

    /// y = relu?(conv(x) + y) in place: y (B, H', W', O) holds the residual and receives the output
    /// (a ResNet block's last convolution, without copying the identity branch).
    public func forward(_ x: Tensor, relu: Bool, accumulatingInto y: inout Tensor) {
        let shape = outputShape(x)
        precondition(y.shape == shape, "Conv2D residual \(y.shape), expected \(shape)")
        if !oneDNNForward(x, into: &y, relu: relu, sum: true) { im2colForward(x, into: &y, relu: relu) }
    }

    func outputShape(_ x: Tensor) -> [Int] {
        precondition(x.rank == 4 && x.shape[3] == inChannels, "Conv2D input \(x.shape), expected [B, H, W, \(inChannels)]")
        return [x.shape[0], outputSize(x.shape[1]), outputSize(x.shape[2]), outChannels]
    }

    /// oneDNN's primitive into `y` (its values are the residual when `sum`); false when it does not run.
    private func oneDNNForward(_ x: Tensor, into y: inout Tensor, relu: Bool, sum: Bool) -> Bool {
        guard let cpu = backend as? CPUBackend, cpu.gemm == .oneDNN else { return false }
        let p = OneDNNConv.Problem(batch: x.shape[0], height: x.shape[1], width: x.shape[2], inChannels: inChannels,
                                   outChannels: outChannels, kernel: kernel, stride: stride, padding: padding, relu: relu,
                                   sum: sum, bf16: cpu.precision == .bf16)
        return y.withMutablePointer { py in x.withPointer { px in weight.withPointer { pw in bias.withPointer { pb in
            OneDNNConv.run(p, src: px, weight: pw, bias: pb, dst: py, packed: packed)
        } } } }
    }

    /// The fallback and reference: rows of (ky, kx, c) patches times the weight, through `gemm`.
    func im2colForward(_ x: Tensor, into y: inout Tensor, relu: Bool) {
        let (b, h, w, i) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow, o, k) = (y.shape[1], y.shape[2], outChannels, kernel)
        let rows = b * oh * ow, cols = k * k * i
        var patches: Tensor
        if k == 1 && stride == 1 && padding == 0 {
            patches = x
        } else {
            patches = Tensor(zeros: [rows, cols])
            patches.withMutablePointer { pp in x.withPointer { px in
                for n in 0..<b { for oy in 0..<oh { for ox in 0..<ow {
                    let row = pp + ((n * oh + oy) * ow + ox) * cols
                    for ky in 0..<k {
                        let iy = oy * stride - padding + ky
                        guard iy >= 0 && iy < h else { continue }
                        for kx in 0..<k {
                            let ix = ox * stride - padding + kx
                            guard ix >= 0 && ix < w else { continue }
                            (row + (ky * k + kx) * i).update(from: px + ((n * h + iy) * w + ix) * i, count: i)
                        }
                    }
                } } }
            } }
        }
        y.withMutablePointer { py in
            bias.withPointer { pb in
                for r in 0..<rows { for c in 0..<o { py[r * o + c] += pb[c] } }
            }
            let ohwi = weightOHWI
            patches.withPointer { pa in ohwi.withPointer { pw in
                gemm(transB: true, m: rows, n: o, k: cols, a: pa, lda: cols, b: pw, ldb: cols, beta: 1, c: py, ldc: o,
                     backend: (backend as? CPUBackend ?? .default).gemm)
            } }
            if relu { for j in 0..<(rows * o) { py[j] = max(py[j], 0) } }
        }
    }
}

/// Average pooling with a square window of `size` and stride `size` (PyTorch's `AvgPool2d(size)`:
/// no padding, a partial window at the edge dropped). x: B, H, W, C -> B, H/size, W/size, C (from
/// `workspace` when given).
public func averagePool(_ x: Tensor, size: Int, workspace: Workspace? = nil) -> Tensor {
    precondition(x.rank == 4 && size >= 1, "averagePool input \(x.shape), expected [B, H, W, C]")
    if size == 1 { return x }
    let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (oh, ow) = (h / size, w / size)
    var y = CPUBackend.default.tensor(workspace, [b, oh, ow, c])
    let scale = 1 / Float(size * size)
    y.withMutablePointer { py in x.withPointer { px in
        for n in 0..<b { for oy in 0..<oh { for ox in 0..<ow {
            let dst = py + ((n * oh + oy) * ow + ox) * c
            for dy in 0..<size { for dx in 0..<size {
                let src = px + ((n * h + oy * size + dy) * w + ox * size + dx) * c
                for j in 0..<c { dst[j] += src[j] }
            } }
            for j in 0..<c { dst[j] *= scale }
        } } }
    } }
    return y
}

/// oneDNN's convolution primitive, created once per problem and cached.
enum OneDNNConv {
    struct Problem: Hashable {
        var batch, height, width, inChannels, outChannels, kernel, stride, padding: Int
        var relu, sum, bf16: Bool
        var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
        var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
    }

    final class Primitive: @unchecked Sendable {
        let primitive: dnnl_primitive_t
        let src, plainSrc, weights, plainWeights, bias, dst: dnnl_memory_desc_t
        /// f32 -> bf16 conversion of the input (bf16 problems).
        let convert: dnnl_primitive_t?
        let scratchpadBytes: Int
        let name: String
        init(primitive: dnnl_primitive_t, src: dnnl_memory_desc_t, plainSrc: dnnl_memory_desc_t, weights: dnnl_memory_desc_t,
             plainWeights: dnnl_memory_desc_t, bias: dnnl_memory_desc_t, dst: dnnl_memory_desc_t,
             convert: dnnl_primitive_t?, scratchpadBytes: Int, name: String) {
            self.primitive = primitive; self.src = src; self.plainSrc = plainSrc; self.weights = weights
            self.plainWeights = plainWeights; self.bias = bias; self.dst = dst; self.convert = convert
            self.scratchpadBytes = scratchpadBytes; self.name = name
        }
        deinit {
            dnnl_primitive_destroy(primitive)
            if let convert { dnnl_primitive_destroy(convert) }
        }
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [Problem: Primitive?] = [:]

    static func primitive(_ p: Problem) -> Primitive? {
        lock.lock()
        if let hit = cache[p] { lock.unlock(); return hit }
        lock.unlock()
        let made = create(p)
        lock.lock()
        if cache.count < OneDNN.cacheLimit { cache[p] = made }
        lock.unlock()
        return made
    }

    /// The implementation oneDNN picks for `p` ("brg_conv_fwd:avx512_core", ...), or nil for none.
    static func implementation(_ p: Problem) -> String? { primitive(p)?.name }

    static func tensorDesc(_ dims: [Int], _ type: dnnl_data_type_t, _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        _ = dnnl_memory_desc_init_by_tag(&d, Int32(dims.count), dims.map(Int64.init), type, tag)
        return d
    }

    private static func create(_ p: Problem) -> Primitive? {
        guard let engine = OneDNN.engine else { return nil }
        let type = p.bf16 ? dnnl_bf16 : dnnl_f32
        let plainSrc = tensorDesc([p.batch, p.inChannels, p.height, p.width], dnnl_f32, dnnl_nhwc)
        var src = tensorDesc([p.batch, p.inChannels, p.height, p.width], type, dnnl_nhwc)
        let wdims = [p.outChannels, p.inChannels, p.kernel, p.kernel]
        let plainWeights = tensorDesc(wdims, dnnl_f32, dnnl_oihw)
        var weights = tensorDesc(wdims, type, dnnl_format_tag_any)
        var bias = tensorDesc([p.outChannels], dnnl_f32, dnnl_a)
        var dst = tensorDesc([p.batch, p.outChannels, p.outHeight, p.outWidth], dnnl_f32, dnnl_nhwc)

        var attr: dnnl_primitive_attr_t?
        guard dnnl_primitive_attr_create(&attr) == dnnl_success else { return nil }
        defer { dnnl_primitive_attr_destroy(attr) }
        _ = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)
        if p.sum || p.relu {
            var ops: dnnl_post_ops_t?
            guard dnnl_post_ops_create(&ops) == dnnl_success else { return nil }
            defer { dnnl_post_ops_destroy(ops) }
            if p.sum { _ = dnnl_post_ops_append_sum(ops, 1) }
            if p.relu { _ = dnnl_post_ops_append_eltwise(ops, 1, dnnl_eltwise_relu, 0, 0) }
            guard dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success else { return nil }
        }
        var op = dnnl_convolution_desc_t()
        let strides: [Int64] = [Int64(p.stride), Int64(p.stride)]
        let pad: [Int64] = [Int64(p.padding), Int64(p.padding)]
        guard dnnl_convolution_forward_desc_init(&op, dnnl_forward_inference, dnnl_convolution_direct,
                                                 &src, &weights, &bias, &dst, strides, pad, pad) == dnnl_success
        else { return nil }
        var pd: dnnl_primitive_desc_t?
        guard dnnl_primitive_desc_create(&pd, &op, attr, engine, nil) == dnnl_success, let pd else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        var info: UnsafePointer<CChar>?
        _ = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info)
        let name = info.map { String(cString: $0) } ?? "?"
        if name.hasPrefix("ref") { return nil }  // scalar code: the im2col product is faster
        if let chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) { weights = chosen.pointee }
        var scratch = 0
        if let s = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) { scratch = dnnl_memory_desc_get_size(s) }
        var primitive: dnnl_primitive_t?
        guard dnnl_primitive_create(&primitive, pd) == dnnl_success, let primitive else { return nil }
        var convert: dnnl_primitive_t?
        if p.bf16 {
            convert = OneDNN.reorderPrimitive(from: plainSrc, to: src)
            guard convert != nil else { dnnl_primitive_destroy(primitive); return nil }
        }
        return Primitive(primitive: primitive, src: src, plainSrc: plainSrc, weights: weights, plainWeights: plainWeights,
                         bias: bias, dst: dst, convert: convert, scratchpadBytes: scratch, name: name)
    }

    /// Runs `p`; false when oneDNN cannot (the caller falls back to im2col).
    static func run(_ p: Problem, src: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                    dst: UnsafeMutablePointer<Float>, packed: PackedWeight) -> Bool {
        guard let conv = primitive(p),
              let weightData = packed.data(desc: conv.weights, transposed: false, plain: conv.plainWeights, source: weight)
        else { return false }
        guard let run = OneDNN.Execution() else { return false }
        var input = run.memory(conv.plainSrc, UnsafeMutableRawPointer(mutating: src))
        if let convert = conv.convert {
            guard let converted = run.converted(input, by: convert, to: conv.src) else { return false }
            input = converted
        }
        let args = [
            dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: input),
            dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: run.memory(conv.weights, weightData)),
            dnnl_exec_arg_t(arg: DNNL_ARG_BIAS, memory: run.memory(conv.bias, UnsafeMutableRawPointer(mutating: bias))),
            dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: run.memory(conv.dst, dst)),
        ]
        return run.execute(conv.primitive, args, scratchpadBytes: conv.scratchpadBytes)
    }
}
