import Features
import Foundation
import TensorCore
import TestSupport
import XCTest
@testable import prompttune

/// Inputs that made commands work without end (issue 17, item 10): a features file naming a
/// million classes, and FIFOs where a regular file is needed (opening one blocks until a writer
/// appears, so each of these used to hang).
final class UnboundedWorkTests: XCTestCase {
    static let model = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path
    static let features = repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path
    /// A real prompt: one epoch of CoOp on the engine goldens' features.
    static let prompt: String = {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("pt-unbounded-\(getpid())")
        let error = PromptTune.execute(["train", "--model", model, "--features", features, "--method", "coop", "--epochs", "1",
                                        "--out", out.path])
        precondition(error == nil, "training the fixture prompt failed: \(String(describing: error))")
        return out.appendingPathComponent("prompt.safetensors").path
    }()

    func message(_ args: [String]) -> String? {
        PromptTune.execute(args).map { PromptTune.message(for: $0) }
    }

    func testAMillionClassNamesAreRefusedBeforeAnyWork() throws {
        let file = try makeTempDir(self, prefix: "pt-million").appendingPathComponent("million.safetensors")
        try FeatureSet(features: Tensor(zeros: [1, 2, 32]), labels: [0, 1], classNames: (0..<1_000_000).map { "c\($0)" })
            .write(to: file)
        for args in [["analyze", "--model", Self.model, "--features", file.path],
                     ["eval", "--model", Self.model, "--prompt", Self.prompt, "--features", file.path]] {
            let started = Date()
            let text = try XCTUnwrap(message(args), "\(args[0]) ran")
            XCTAssertTrue(text.contains("1000000 classes; at most 100000"), "\(args[0]): \(text)")
            XCTAssertLessThan(Date().timeIntervalSince(started), 30, "refused before the work")
        }
    }

    func testFifosWhereAFileIsNeededAreRefused() throws {
        let dir = try makeTempDir(self, prefix: "pt-fifo")
        let fifo = dir.appendingPathComponent("fifo").path
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let cases: [[String]] = [
            ["info", "--model", fifo],
            ["embed", "--model", fifo, "--text", "a cat"],
            ["eval", "--model", Self.model, "--prompt", Self.prompt, "--features", fifo],
            ["eval", "--model", Self.model, "--prompt", fifo, "--features", Self.features],
            ["analyze", "--model", Self.model, "--features", fifo],
            ["features", "--model", Self.model, "--dataset", "fashion_mnist", "--out", fifo],
        ]
        for args in cases {
            let text = try XCTUnwrap(message(args), "\(args) succeeded")
            XCTAssertTrue(text.contains(fifo) && text.contains("FIFO"), "\(args): \(text)")
        }
    }
}
