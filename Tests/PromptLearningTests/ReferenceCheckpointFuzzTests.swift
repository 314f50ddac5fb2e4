import CLIP
import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest
@testable import PromptLearning

/// Seeded mutation campaign over the reference's prompt checkpoints (CoOp, CoOp-CSC, KgCoOp, DAPT
/// and our own export), through the reader and the validation against the model: a typed error, or
/// a prompt whose tensors are finite and of the shapes the model needs; never a trap.
/// PROMPTTUNE_FUZZ_ITERATIONS sets the inputs (2,000 by default).
final class ReferenceCheckpointFuzzTests: XCTestCase {
    func testMutatedReferenceCheckpointsNeverTrap() throws {
        let iterations = Int(ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"] ?? "") ?? 2000
        let seeds = try ["coop", "coop_csc", "kgcoop", "dapt"].map { [UInt8](try Data(contentsOf: URL(fileURLWithPath: ReferenceCheckpointTests.file($0)))) }
            + [[UInt8](try Data(contentsOf: repoRoot.appendingPathComponent("Goldens/interop/exported/prompt_learner/model.pth.tar-1")))]
        let model = try CLIPModel.load(path: ReferenceCheckpointTests.tiny)
        let classNames = ReferenceCheckpointTests.expected.classnames
        let file = try makeTempDir(self, prefix: "pt-ref-fuzz").appendingPathComponent("model.pth.tar-2")
        var mutator = Mutator(seed: 31)
        var counts: [String: Int] = [:]
        let started = Date()
        for i in 0..<iterations {
            try Data(mutator.mutate(seeds[i % seeds.count])).write(to: file)
            let prompt: ReferencePrompt
            do { prompt = try ReferencePrompt.read(path: file.path) } catch is PromptError {
                counts["refused by the reader", default: 0] += 1; continue
            } catch is FileError {
                counts["refused by the reader", default: 0] += 1; continue
            } catch {
                XCTFail("input \(i): untyped error \(error)"); continue
            }
            do {
                try prompt.validate(model: model, classNames: classNames, path: file.path)
                if let c = prompt.context {
                    XCTAssertTrue(c.data.allSatisfy(\.isFinite), "input \(i)")
                    XCTAssertEqual(c.lastDim, model.text.width, "input \(i)")
                }
                if let v = prompt.visualPrompt {
                    XCTAssertTrue(v.data.allSatisfy(\.isFinite), "input \(i)")
                    XCTAssertEqual(v.lastDim, model.image.width, "input \(i)")
                }
                counts["valid", default: 0] += 1
            } catch is PromptError {
                counts["refused against the model", default: 0] += 1
            } catch {
                XCTFail("input \(i): untyped error \(error)")
            }
        }
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("fuzz reference checkpoints: \(iterations) inputs in \(String(format: "%.1f", Date().timeIntervalSince(started))) s: \(summary), 0 crashes")
    }
}
