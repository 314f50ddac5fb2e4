import Foundation
import TestSupport
import TensorCore
import XCTest

/// The GEMM path in a child process whose OpenBLAS runs Debian's misdetected kernels.
final class GEMMPathTests: XCTestCase {
    /// The built `prompttune` beside the test bundle.
    func binary() throws -> URL { try prompttuneBinary() }

    func run(_ args: [String], env: [String: String]) throws -> (out: String, err: String) {
        let r = try runProcess(try binary(), args, environment: env)
        XCTAssertEqual(r.status, 0, r.errText)
        return (r.outText, r.errText)
    }

    /// OPENBLAS_CORETYPE=PRESCOTT imitates Debian's misdetection (SSE3 kernels). The user's value is
    /// kept with a warning, the GEMMs still run on oneDNN's kernels for this CPU, and every
    /// product of `bench gemm` (oneDNN and OpenBLAS) equals the fp32 reference.
    func testMisdetectedOpenBLASStillGetsFastExactGEMMs() throws {
        let (out, err) = try run(["bench", "gemm", "--images", "1", "--text-rows", "40", "--threads", "1", "--json"],
                                 env: ["OPENBLAS_CORETYPE": "PRESCOTT"])
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], out)
        let gemm = try XCTUnwrap(obj["gemm"] as? [String: Any])
        XCTAssertEqual(gemm["backend"] as? String, "onednn")
        let kernel = try XCTUnwrap(gemm["onednn_kernel"] as? String)
        XCTAssertFalse(kernel.hasPrefix("none") || kernel.hasPrefix("ref"), kernel)
        // The kernel matches the ISA oneDNN runs at (the CPU's, unless ONEDNN_MAX_CPU_ISA limits it).
        if (gemm["onednn"] as? String ?? "").contains("avx512") { XCTAssertTrue(kernel.contains("avx512"), kernel) }
        let openblas = try XCTUnwrap(gemm["openblas"] as? String)
        if openblas.lowercased().hasPrefix("prescott") {  // a dynamic-dispatch OpenBLAS took the setting
            XCTAssertTrue(openblas.contains("weaker than this CPU supports") || CPU.featureSummary == "sse only", openblas)
            if CPU.featureSummary != "sse only" { XCTAssertTrue(err.contains("OPENBLAS_CORETYPE=PRESCOTT"), err) }
        }
        let shapes = try XCTUnwrap(obj["shapes"] as? [[String: Any]])
        XCTAssertEqual(shapes.count, 8)
        for s in shapes {
            XCTAssertLessThan(try XCTUnwrap(s["onednn_error"] as? Double), 1e-5, "\(s)")
            XCTAssertLessThan(try XCTUnwrap(s["openblas_error"] as? Double), 1e-5, "\(s)")
        }
    }

    func testInfoWithoutAModelPrintsTheComputePath() throws {
        let (out, _) = try run(["info"], env: [:])
        for row in ["gemm", "onednn", "openblas", "kernels", "cpu"] { XCTAssertTrue(out.contains("  \(row) "), out) }
    }
}
