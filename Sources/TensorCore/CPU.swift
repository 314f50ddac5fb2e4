import CDNNL
import CKernels
import COpenBLAS
import Foundation

/// What the CPU offers (cpuid and xgetbv, in CKernels' cpu.c).
public enum CPU {
    static let features = pt_cpu_features()

    /// AVX-512 BF16 or AMX-BF16: bf16 products in hardware.
    public static var hasBF16: Bool { features & (PT_CPU_AVX512_BF16 | PT_CPU_AMX_BF16) != 0 }

    /// "avx2 fma avx512 avx512_bf16", for messages.
    public static var featureSummary: String {
        let names: [(UInt32, String)] = [(PT_CPU_AVX, "avx"), (PT_CPU_FMA, "fma"), (PT_CPU_AVX2, "avx2"),
                                         (PT_CPU_AVX512, "avx512"), (PT_CPU_AVX512_BF16, "avx512_bf16"),
                                         (PT_CPU_AMX_BF16, "amx_bf16")]
        let have = names.filter { features & $0.0 != 0 }.map(\.1)
        return have.isEmpty ? "sse only" : have.joined(separator: " ")
    }
}

/// OpenBLAS's kernel choice checked against the CPU before its first use.
///
/// Debian's OpenBLAS 0.3.21 picks kernels by CPU model and falls back to Prescott (SSE3, about a
/// sixth of the speed) on models it does not know, such as Intel's Emerald Rapids. When the core it
/// chose is weaker than the CPU's vector level, PromptTune re-runs OpenBLAS's dynamic dispatch with
/// `OPENBLAS_CORETYPE` naming the right core (in-process, so it works for library users too). A
/// user's own `OPENBLAS_CORETYPE` is kept, with a warning on stderr when it is the weaker choice.
/// (GEMMs go to oneDNN by default anyway; OpenBLAS serves LAPACK and the `.openBLAS` backend.)
public enum OpenBLASCheck {
    public struct Status: Sendable {
        /// The core OpenBLAS reported at start-up, and the one in use now.
        public var detected: String
        public var current: String
        /// The core matching the CPU's vectors, when stronger than the detected one.
        public var expected: String?
        public var repaired: Bool
        /// Set when the user's OPENBLAS_CORETYPE names a weaker core than the CPU supports.
        public var warning: String?

        public var summary: String {
            if repaired { return "\(current) (repaired: OpenBLAS chose \(detected) for this CPU)" }
            if let warning { return "\(current) (\(warning))" }
            return current
        }
    }

    nonisolated(unsafe) public private(set) static var status: Status = check()

    static func corename() -> String { openblas_get_corename().map { String(cString: $0) } ?? "?" }

    private static func check() -> Status {
        let detected = corename()
        var s = Status(detected: detected, current: detected, expected: nil, repaired: false, warning: nil)
        let level = pt_cpu_level(CPU.features)
        guard pt_openblas_core_level(detected) < level, let want = pt_openblas_core_for_level(level) else { return s }
        s.expected = String(cString: want)
        if let user = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] {
            s.warning = "OPENBLAS_CORETYPE=\(user) is weaker than this CPU supports (\(s.expected!)); kept as set"
            FileHandle.standardError.write(Data("PromptTune: warning: \(s.warning!)\n".utf8))
            return s
        }
        if pt_openblas_reselect_core(want) == 0 {
            s.current = corename()
            s.repaired = pt_openblas_core_level(s.current) >= level
        }
        return s
    }

    /// Re-selects OpenBLAS's core (`nil`: what the CPU supports) and updates `status`; for tests
    /// and for users who want another core. Call it while no OpenBLAS call runs.
    @discardableResult
    public static func select(core: String?) -> Status {
        let want = core ?? pt_openblas_core_for_level(pt_cpu_level(CPU.features)).map { String(cString: $0) }
        if let want { _ = pt_openblas_reselect_core(want) }
        status.current = corename()
        status.repaired = false
        return status
    }
}

/// What runs the products, for `prompttune info` and every benchmark.
public struct GEMMDiagnostics: Sendable {
    public var backend: GEMMBackend
    public var precision: Precision
    public var oneDNN: String        // "2.6.3, avx512_core_bf16"
    public var oneDNNKernel: String  // the fp32 implementation, e.g. "brg:avx512_core"
    public var oneDNNKernelBF16: String?
    public var openBLAS: String      // the core and what the check did
    public var kernelsISA: String    // CKernels: "avx512" or "portable"
    public var cpu: String

    /// What runs the products of `backend` (a model's, or the default one).
    public static func current(_ backend: any ComputeBackend = defaultBackend) -> GEMMDiagnostics {
        let cpu = backend as? CPUBackend ?? .default
        return GEMMDiagnostics(
            backend: cpu.gemm, precision: cpu.precision,
            oneDNN: OneDNN.isAvailable ? "\(OneDNN.version), \(OneDNN.isa)" : "unavailable",
            oneDNNKernel: OneDNN.isAvailable ? OneDNN.kernelName(bf16: false) : "-",
            oneDNNKernelBF16: OneDNN.isAvailable && CPU.hasBF16 ? OneDNN.kernelName(bf16: true) : nil,
            openBLAS: OpenBLASCheck.status.summary,
            kernelsISA: pt_kernels_isa() == 1 ? "avx512" : "portable",
            cpu: CPU.featureSummary)
    }

    /// The GEMM path in one line: "onednn fp32 (brg:avx512_core)".
    public var gemmLine: String {
        switch backend {
        case .oneDNN: return "onednn \(precision.rawValue) (\(precision == .bf16 ? oneDNNKernelBF16 ?? "-" : oneDNNKernel))"
        case .openBLAS: return "openblas fp32 (core \(openBLAS))"
        case .naive: return "naive fp32 (reference loops)"
        }
    }

    public var rows: [(String, String)] {
        [("gemm", gemmLine), ("onednn", "\(oneDNN); fp32 \(oneDNNKernel)" + (oneDNNKernelBF16.map { ", bf16 \($0)" } ?? "")),
         ("openblas", openBLAS), ("kernels", kernelsISA), ("cpu", cpu)]
    }

    public var json: [String: Any] {
        var o: [String: Any] = ["backend": backend.rawValue, "precision": precision.rawValue, "onednn": oneDNN,
                                "onednn_kernel": oneDNNKernel, "openblas": openBLAS, "kernels": kernelsISA, "cpu": cpu]
        if let oneDNNKernelBF16 { o["onednn_kernel_bf16"] = oneDNNKernelBF16 }
        return o
    }
}
