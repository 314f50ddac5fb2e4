import CDNNL
import CKernels
import Foundation

// oneDNN's matmul primitive behind `gemm` and `Linear`. oneDNN picks its kernels from the CPU's
// cpuid features (AVX2, AVX-512, AVX-512 BF16, AMX), so it is right on CPUs that Debian's
// OpenBLAS misdetects. A primitive is created once per problem (shape, strides, alpha, beta,
// precision) and cached; `PackedWeight` keeps a weight in the layout the kernel reads.
//
// Thread safety: primitives run with a user-provided scratchpad and a stream per call, so the same
// primitive may run on several threads at once (the attention loops do that). The thread count is
// OpenMP's (Debian's oneDNN runs on libgomp), set on the calling thread before each call.

/// A weight's copies in oneDNN's blocked layouts (fp32 and bf16), made at first use and dropped
/// with the owner (`Linear` replaces it when its weight changes).
public final class PackedWeight: @unchecked Sendable {
    private struct Entry {
        var transposed: Bool
        var desc: dnnl_memory_desc_t
        var data: UnsafeMutableRawPointer
    }
    private let lock = NSLock()
    private var entries: [Entry] = []

    public init() {}

    deinit { for e in entries { free(e.data) } }

    /// Bytes held (both precisions, every layout asked for).
    public var bytes: Int {
        lock.lock(); defer { lock.unlock() }
        return entries.reduce(0) { s, e in var d = e.desc; return s + dnnl_memory_desc_get_size(&d) }
    }

    /// The weight in layout `desc`; `source` (with `plain`, its description) is read on first use.
    func data(desc: dnnl_memory_desc_t, transposed: Bool, plain: dnnl_memory_desc_t,
                          source: UnsafePointer<Float>) -> UnsafeMutableRawPointer? {
        lock.lock(); defer { lock.unlock() }
        var want = desc
        for i in entries.indices where entries[i].transposed == transposed {
            if dnnl_memory_desc_equal(&entries[i].desc, &want) != 0 { return entries[i].data }
        }
        guard let data = OneDNN.reorder(from: plain, source: UnsafeMutableRawPointer(mutating: source), to: desc)
        else { return nil }
        entries.append(Entry(transposed: transposed, desc: desc, data: data))
        return data
    }
}

enum OneDNN {
    nonisolated(unsafe) static let engine: dnnl_engine_t? = {
        var e: dnnl_engine_t?
        return dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success ? e : nil
    }()

    static var isAvailable: Bool { engine != nil }

    /// "2.6.3" and the widest ISA oneDNN's kernels use here ("avx512_core_bf16", ...).
    static var version: String {
        guard let v = dnnl_version()?.pointee else { return "?" }
        return "\(v.major).\(v.minor).\(v.patch)"
    }

    static var isa: String {
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_sse41: return "sse41"
        case dnnl_cpu_isa_avx: return "avx"
        case dnnl_cpu_isa_avx2: return "avx2"
        case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni"
        case dnnl_cpu_isa_avx512_core: return "avx512_core"
        case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni"
        case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16"
        case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx"
        default: return "other"
        }
    }

    /// One matmul problem: C = alpha * op(A) op(B) (+ bias) + beta * C, row-major.
    struct Problem: Hashable {
        var m, n, k, lda, ldb, ldc: Int
        var transA, transB: Bool
        var alpha, beta: Float
        var bias: Bool
        var bf16: Bool
        /// Weights (B) in the primitive's own layout, from a `PackedWeight`.
        var packedB: Bool
        /// A grid of `outer.0 x outer.1` such products in one primitive (e.g. images x heads), the
        /// operands of product (i, j) at i * stride.0 + j * stride.1 elements from a, b and c.
        /// Set by `GridGEMM` (a grid of one product is still described in 4-D, with dense bf16 copies).
        var isGrid = false
        var outer0 = 1, outer1 = 1
        var strideA0 = 0, strideA1 = 0, strideB0 = 0, strideB1 = 0, strideC0 = 0, strideC1 = 0
    }

    /// A created primitive with what running it needs.
    final class Matmul: @unchecked Sendable {
        let primitive: dnnl_primitive_t
        let src, dst, bias: dnnl_memory_desc_t
        let weights, plainWeights: dnnl_memory_desc_t
        let scratchpadBytes: Int
        /// f32 -> bf16 conversion of A (bf16 problems only) and its dense bf16 description.
        let convert: dnnl_primitive_t?
        let plainSrc: dnnl_memory_desc_t
        /// f32 -> bf16 conversion of B when it is not a packed weight (bf16 grids: both operands
        /// are activations), into `weights`.
        let convertB: dnnl_primitive_t?
        let name: String

        init(primitive: dnnl_primitive_t, src: dnnl_memory_desc_t, plainSrc: dnnl_memory_desc_t,
             convert: dnnl_primitive_t?, weights: dnnl_memory_desc_t, plainWeights: dnnl_memory_desc_t,
             convertB: dnnl_primitive_t?, bias: dnnl_memory_desc_t, dst: dnnl_memory_desc_t, scratchpadBytes: Int,
             name: String) {
            self.primitive = primitive; self.src = src; self.plainSrc = plainSrc; self.convert = convert
            self.weights = weights; self.plainWeights = plainWeights; self.convertB = convertB; self.bias = bias
            self.dst = dst; self.scratchpadBytes = scratchpadBytes; self.name = name
        }

        deinit {
            dnnl_primitive_destroy(primitive)
            if let convert { dnnl_primitive_destroy(convert) }
            if let convertB { dnnl_primitive_destroy(convertB) }
        }
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [Problem: Matmul?] = [:]
    /// Problems beyond this many distinct shapes are not cached (and created per call).
    static let cacheLimit = 4096

    /// A 2-D description: rows x cols of `type`, row-major with leading dimension `ld`, or its
    /// transpose stored (cols x rows, leading dimension `ld`) when `transposed`.
    static func desc(_ rows: Int, _ cols: Int, ld: Int, transposed: Bool = false,
                     _ type: dnnl_data_type_t = dnnl_f32) -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        let dims: [Int64] = [Int64(rows), Int64(cols)]
        let strides: [Int64] = transposed ? [1, Int64(ld)] : [Int64(ld), 1]
        _ = dnnl_memory_desc_init_by_strides(&d, 2, dims, type, strides)
        return d
    }

    /// A 4-D description of a grid of matrices: `outer` x rows x cols, matrix (i, j) at
    /// i * strides.0 + j * strides.1 elements, each as in `desc`.
    static func gridDesc(_ outer: (Int, Int), strides: (Int, Int), _ rows: Int, _ cols: Int, ld: Int,
                         transposed: Bool = false) -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        let dims: [Int64] = [Int64(outer.0), Int64(outer.1), Int64(rows), Int64(cols)]
        let inner: [Int64] = transposed ? [1, Int64(ld)] : [Int64(ld), 1]
        _ = dnnl_memory_desc_init_by_strides(&d, 4, dims, dnnl_f32, [Int64(strides.0), Int64(strides.1)] + inner)
        return d
    }

    /// The same grid stored densely (row-major matrices one after another) in `type`.
    static func denseGridDesc(_ outer: (Int, Int), _ rows: Int, _ cols: Int, _ type: dnnl_data_type_t) -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        _ = dnnl_memory_desc_init_by_tag(&d, 4, [Int64(outer.0), Int64(outer.1), Int64(rows), Int64(cols)], type, dnnl_abcd)
        return d
    }

    static func anyDesc(_ rows: Int, _ cols: Int, _ type: dnnl_data_type_t) -> dnnl_memory_desc_t {
        var d = dnnl_memory_desc_t()
        _ = dnnl_memory_desc_init_by_tag(&d, 2, [Int64(rows), Int64(cols)], type, dnnl_format_tag_any)
        return d
    }

    /// The cached primitive for `p`, or nil when oneDNN offers only its reference (slow) code.
    static func matmul(_ p: Problem) -> Matmul? {
        lock.lock()
        if let hit = cache[p] { lock.unlock(); return hit }
        lock.unlock()
        let made = create(p)
        lock.lock()
        if cache.count < cacheLimit { cache[p] = made }
        lock.unlock()
        return made
    }

    private static func create(_ p: Problem) -> Matmul? {
        guard let engine else { return nil }
        let type = p.bf16 ? dnnl_bf16 : dnnl_f32
        precondition(!p.isGrid || !(p.packedB || p.bias), "a grid of products has no packed weight or bias")
        precondition(!p.bf16 || p.packedB || p.isGrid, "bf16 products read a packed weight, or are grids")
        let grid = (p.outer0, p.outer1)
        let plainSrc = p.isGrid ? gridDesc(grid, strides: (p.strideA0, p.strideA1), p.m, p.k, ld: p.lda, transposed: p.transA)
                                : desc(p.m, p.k, ld: p.lda, transposed: p.transA)
        var src = !p.bf16 ? plainSrc : p.isGrid ? denseGridDesc(grid, p.m, p.k, dnnl_bf16) : desc(p.m, p.k, ld: p.k, dnnl_bf16)
        // B is k x n; a PyTorch-layout weight [n, k] is B transposed.
        let plainWeights = p.isGrid ? gridDesc(grid, strides: (p.strideB0, p.strideB1), p.k, p.n, ld: p.ldb, transposed: p.transB)
                                    : desc(p.k, p.n, ld: p.ldb, transposed: p.transB)
        var weights = p.packedB ? anyDesc(p.k, p.n, type) : p.bf16 ? denseGridDesc(grid, p.k, p.n, dnnl_bf16) : plainWeights
        var dst = p.isGrid ? gridDesc(grid, strides: (p.strideC0, p.strideC1), p.m, p.n, ld: p.ldc)
                           : desc(p.m, p.n, ld: p.ldc)
        var bias = desc(1, p.n, ld: p.n)

        var attr: dnnl_primitive_attr_t?
        guard dnnl_primitive_attr_create(&attr) == dnnl_success else { return nil }
        defer { dnnl_primitive_attr_destroy(attr) }
        _ = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)
        if p.alpha != 1 {
            var alpha = p.alpha
            guard dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success else { return nil }
        }
        if p.beta != 0 {
            var ops: dnnl_post_ops_t?
            guard dnnl_post_ops_create(&ops) == dnnl_success else { return nil }
            defer { dnnl_post_ops_destroy(ops) }
            _ = dnnl_post_ops_append_sum(ops, p.beta)
            guard dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success else { return nil }
        }
        var op = dnnl_matmul_desc_t()
        let opStatus = p.bias ? dnnl_matmul_desc_init(&op, &src, &weights, &bias, &dst)
                              : dnnl_matmul_desc_init(&op, &src, &weights, nil, &dst)
        guard opStatus == dnnl_success else { return nil }
        var pd: dnnl_primitive_desc_t?
        guard dnnl_primitive_desc_create(&pd, &op, attr, engine, nil) == dnnl_success, let pd else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        var info: UnsafePointer<CChar>?
        _ = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info)
        let name = info.map { String(cString: $0) } ?? "?"
        // The reference implementation is scalar code: leave such problems to OpenBLAS.
        if name.hasPrefix("ref") { return nil }
        if p.packedB, let chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) { weights = chosen.pointee }
        var scratch = 0
        if let s = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) { scratch = dnnl_memory_desc_get_size(s) }
        var primitive: dnnl_primitive_t?
        guard dnnl_primitive_create(&primitive, pd) == dnnl_success, let primitive else { return nil }

        var convert: dnnl_primitive_t?, convertB: dnnl_primitive_t?
        if p.bf16 {
            convert = reorderPrimitive(from: plainSrc, to: src)
            if !p.packedB { convertB = reorderPrimitive(from: plainWeights, to: weights) }
            guard convert != nil, p.packedB || convertB != nil else {
                dnnl_primitive_destroy(primitive)
                if let convert { dnnl_primitive_destroy(convert) }
                return nil
            }
        }
        return Matmul(primitive: primitive, src: src, plainSrc: plainSrc, convert: convert, weights: weights,
                      plainWeights: plainWeights, convertB: convertB, bias: bias, dst: dst, scratchpadBytes: scratch,
                      name: name)
    }

    /// Runs problem `p`; false when oneDNN cannot (the caller falls back to OpenBLAS).
    static func run(_ p: Problem, a: UnsafePointer<Float>, b: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                    c: UnsafeMutablePointer<Float>, packed: PackedWeight?) -> Bool {
        guard let mm = matmul(p) else { return false }
        var weightData = UnsafeMutableRawPointer(mutating: b)
        if p.packedB {
            guard let packed, let data = packed.data(desc: mm.weights, transposed: p.transB,
                                                    plain: mm.plainWeights, source: b) else { return false }
            weightData = data
        }
        guard let run = Execution() else { return false }
        var src = run.memory(mm.plainSrc, UnsafeMutableRawPointer(mutating: a))
        if let convert = mm.convert {
            guard let bf16 = run.converted(src, by: convert, to: mm.src) else { return false }
            src = bf16
        }
        var weights = run.memory(p.packedB ? mm.weights : mm.plainWeights, weightData)
        if let convertB = mm.convertB {
            guard let bf16 = run.converted(weights, by: convertB, to: mm.weights) else { return false }
            weights = bf16
        }
        var args = [
            dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: src),
            dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: weights),
            dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: run.memory(mm.dst, c)),
        ]
        if p.bias, let bias { args.append(dnnl_exec_arg_t(arg: DNNL_ARG_BIAS, memory: run.memory(mm.bias, UnsafeMutableRawPointer(mutating: bias)))) }
        return run.execute(mm.primitive, args, scratchpadBytes: mm.scratchpadBytes)
    }

    /// A reorder primitive from layout `plain` to `target` (nil when oneDNN has none).
    static func reorderPrimitive(from plain: dnnl_memory_desc_t, to target: dnnl_memory_desc_t) -> dnnl_primitive_t? {
        guard let engine else { return nil }
        var rpd: dnnl_primitive_desc_t?, made: dnnl_primitive_t?
        var from = plain, to = target
        guard dnnl_reorder_primitive_desc_create(&rpd, &from, engine, &to, engine, nil) == dnnl_success, let rpd
        else { return nil }
        defer { dnnl_primitive_desc_destroy(rpd) }
        return dnnl_primitive_create(&made, rpd) == dnnl_success ? made : nil
    }

    /// One primitive's run (a matmul's or a convolution's): a stream with the GEMM thread count,
    /// the memory objects and scratch buffers made for it, all released when the run ends.
    final class Execution {
        let engine: dnnl_engine_t
        private var stream: dnnl_stream_t?
        private var memories: [dnnl_memory_t?] = []
        private var buffers: [Buffer] = []

        init?() {
            guard let engine = OneDNN.engine else { return nil }
            self.engine = engine
            _ = pt_omp_set_threads(Int32(Compute.gemmThreads))
            guard dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue) == dnnl_success else { return nil }
        }

        deinit {
            for b in buffers { Buffer.giveBack(b) }
            for m in memories { dnnl_memory_destroy(m) }
            dnnl_stream_destroy(stream)
        }

        /// A memory object of layout `d` over `data` (nil on failure).
        func memory(_ d: dnnl_memory_desc_t, _ data: UnsafeMutableRawPointer?) -> dnnl_memory_t? {
            var d = d, m: dnnl_memory_t?
            guard dnnl_memory_create(&m, &d, engine, data) == dnnl_success else { return nil }
            memories.append(m)
            return m
        }

        /// Scratch memory of at least `bytes`, kept for later runs once this one ends.
        func buffer(_ bytes: Int) -> UnsafeMutableRawPointer? {
            guard let b = Buffer.take(bytes) else { return nil }
            buffers.append(b)
            return b.data
        }

        /// `from` converted by `reorder` into a scratch buffer of layout `to` (nil on failure).
        func converted(_ from: dnnl_memory_t?, by reorder: dnnl_primitive_t, to: dnnl_memory_desc_t) -> dnnl_memory_t? {
            var d = to
            let out = memory(to, buffer(dnnl_memory_desc_get_size(&d)))
            var args = [dnnl_exec_arg_t(arg: DNNL_ARG_FROM, memory: from), dnnl_exec_arg_t(arg: DNNL_ARG_TO, memory: out)]
            return out != nil && dnnl_primitive_execute(reorder, stream, 2, &args) == dnnl_success ? out : nil
        }

        /// Runs `primitive` on `args` plus a scratchpad of `scratchpadBytes`, and waits for it;
        /// false when any memory could not be made or oneDNN fails.
        func execute(_ primitive: dnnl_primitive_t, _ args: [dnnl_exec_arg_t], scratchpadBytes: Int) -> Bool {
            var args = args
            if scratchpadBytes > 0 {
                var d = dnnl_memory_desc_t()
                _ = dnnl_memory_desc_init_by_tag(&d, 1, [Int64(scratchpadBytes)], dnnl_u8, dnnl_a)
                args.append(dnnl_exec_arg_t(arg: DNNL_ARG_SCRATCHPAD, memory: memory(d, buffer(scratchpadBytes))))
            }
            guard args.allSatisfy({ $0.memory != nil }) else { return false }
            guard dnnl_primitive_execute(primitive, stream, Int32(args.count), &args) == dnnl_success else { return false }
            return dnnl_stream_wait(stream) == dnnl_success
        }
    }

    /// Scratch memory kept between calls (scratchpads and bf16 copies of A reach megabytes, and a
    /// fresh allocation of that size would fault its pages in on every call).
    struct Buffer {
        var data: UnsafeMutableRawPointer
        var bytes: Int
        nonisolated(unsafe) private static var spare: [Buffer] = []
        private static let lock = NSLock()

        static func take(_ bytes: Int) -> Buffer? {
            lock.lock()
            if let i = spare.firstIndex(where: { $0.bytes >= bytes }) {
                defer { lock.unlock() }
                return spare.remove(at: i)
            }
            lock.unlock()
            let size = max(64, (bytes + 63) / 64 * 64)
            return aligned_alloc(64, size).map { Buffer(data: $0, bytes: size) }
        }

        static func giveBack(_ b: Buffer) {
            lock.lock(); defer { lock.unlock() }
            spare.append(b)
            if spare.count > 8 {  // keep the largest few
                spare.sort { $0.bytes > $1.bytes }
                free(spare.removeLast().data)
            }
        }
    }

    /// A new buffer holding `source` (described by `plain`) in layout `to`; nil on failure.
    static func reorder(from plain: dnnl_memory_desc_t, source: UnsafeMutableRawPointer,
                        to target: dnnl_memory_desc_t) -> UnsafeMutableRawPointer? {
        guard let engine else { return nil }
        var from = plain, to = target
        let bytes = dnnl_memory_desc_get_size(&to)
        guard let out = aligned_alloc(64, (bytes + 63) / 64 * 64) else { return nil }
        var pd: dnnl_primitive_desc_t?, prim: dnnl_primitive_t?, stream: dnnl_stream_t?
        var a: dnnl_memory_t?, b: dnnl_memory_t?
        defer {
            dnnl_memory_destroy(a); dnnl_memory_destroy(b); dnnl_stream_destroy(stream)
            dnnl_primitive_destroy(prim); dnnl_primitive_desc_destroy(pd)
        }
        _ = pt_omp_set_threads(Int32(Compute.gemmThreads))
        guard dnnl_reorder_primitive_desc_create(&pd, &from, engine, &to, engine, nil) == dnnl_success,
              dnnl_primitive_create(&prim, pd) == dnnl_success,
              dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue) == dnnl_success,
              dnnl_memory_create(&a, &from, engine, source) == dnnl_success,
              dnnl_memory_create(&b, &to, engine, out) == dnnl_success
        else { free(out); return nil }
        var args = [dnnl_exec_arg_t(arg: DNNL_ARG_FROM, memory: a), dnnl_exec_arg_t(arg: DNNL_ARG_TO, memory: b)]
        guard dnnl_primitive_execute(prim, stream, 2, &args) == dnnl_success, dnnl_stream_wait(stream) == dnnl_success
        else { free(out); return nil }
        return out
    }

    /// Whether oneDNN runs bf16 products with a kernel here (not only its reference code: that
    /// is the case on CPUs without bf16 hardware, or with `ONEDNN_MAX_CPU_ISA` below it).
    static let hasBF16Kernel: Bool = isAvailable && CPU.hasBF16 && !kernelName(bf16: true).hasPrefix("none")

    /// The implementation oneDNN picks for a tower-sized product (e.g. "brg:avx512_core"), or why none.
    static func kernelName(bf16: Bool) -> String {
        let p = Problem(m: 1024, n: 768, k: 768, lda: 768, ldb: 768, ldc: 768, transA: false, transB: true,
                        alpha: 1, beta: 0, bias: true, bf16: bf16, packedB: true)
        return create(p)?.name ?? "none (reference code only)"
    }
}
