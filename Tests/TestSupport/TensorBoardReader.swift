import Foundation
import XCTest

/// The scalars of TensorBoard event files under `dir`, as tensorboard's own EventAccumulator reads
/// them (reference/read_tensorboard.py): run ("." for `dir` itself) -> tag -> [(step, value)]; values
/// are float32, as the files store them.
/// Skips the test when `python3 -c "import tensorboard"` fails, except under CI (the environment
/// variable CI set), where that is a failure: CI installs tensorboard (.ci/install-deps).
public func tensorBoardScalars(_ dir: URL) throws -> [String: [String: [(step: Int, value: Float)]]] {
    func python(_ args: [String]) throws -> (status: Int32, out: Data, err: String) {
        let r = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3"] + args)
        return (r.status, r.out, r.errText)
    }
    let probe = try? python(["-c", "import tensorboard"])
    if probe?.status != 0 {
        let last = probe?.err.split(separator: "\n").last.map { ": \($0)" } ?? ""
        let why = "python3 cannot import tensorboard\(last) (pip install tensorboard)"
        if ProcessInfo.processInfo.environment["CI"] != nil {
            throw NSError(domain: "TensorBoardReader", code: 1, userInfo: [NSLocalizedDescriptionKey: "CI is set but \(why); .ci/install-deps installs it"])
        }
        throw XCTSkip("TensorBoard read-back skipped: \(why)")
    }
    let script = repoRoot.appendingPathComponent("reference/read_tensorboard.py").path
    let r = try python([script, dir.path])
    guard r.status == 0 else {
        throw NSError(domain: "TensorBoardReader", code: 2, userInfo: [NSLocalizedDescriptionKey: "read_tensorboard.py failed: \(r.err)"])
    }
    let json = try JSONSerialization.jsonObject(with: r.out) as? [String: [String: [[Double]]]] ?? [:]
    return json.mapValues { tags in tags.mapValues { $0.map { (Int($0[0]), Float($0[1])) } } }
}
