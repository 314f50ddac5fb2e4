import Foundation
import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// Seeded mutation campaign over image-prompt checkpoints (`prompt.safetensors`), through the
/// reader and the resume checks (issue 17): a typed error, or a checkpoint the run can continue
/// from consistently; never a trap. PROMPTTUNE_FUZZ_ITERATIONS sets the inputs (2,000 by default).
final class ParameterCheckpointFuzzTests: XCTestCase {
    func testMutatedParameterCheckpointsNeverTrap() throws {
        let iterations = Int(ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"] ?? "") ?? 2000
        var config = DAPTParityTests.config()
        config.epochs = 3
        func tuner() throws -> PromptTuner {
            try PromptTuner(model: DAPTParityTests.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config)
        }
        let source = try tuner()
        try source.runEpoch()
        let dir = try makeTempDir(self, prefix: "pt-ckpt-fuzz")
        let good = dir.appendingPathComponent("good.safetensors")
        try source.checkpoint().write(to: good)
        let seed = [UInt8](try Data(contentsOf: good))
        // A refused restore changes nothing and an accepted one replaces every field a checkpoint
        // holds, so one tuner serves every input.
        let target = try tuner()
        var mutator = Mutator(seed: 17)
        var counts: [String: Int] = [:]
        let started = Date()
        let file = dir.appendingPathComponent("m.safetensors")
        for i in 0..<iterations {
            let input = i % 2 == 0 ? mutator.mutate(seed) : mutateNumbers(seed, &mutator)
            try Data(input).write(to: file)
            let checkpoint: ParameterCheckpoint
            do {
                checkpoint = try ParameterCheckpoint.read(path: file.path)
            } catch is PromptError {
                counts["refused by the reader", default: 0] += 1; continue
            } catch is FileError {
                counts["refused by the reader", default: 0] += 1; continue
            } catch {
                XCTFail("input \(i): untyped error \(error)"); continue
            }
            let fresh = target
            do {
                try fresh.restore(checkpoint)
                XCTAssertTrue(fresh.epochsDone >= 0 && fresh.epochsDone <= config.epochs && fresh.history.count == fresh.epochsDone, "input \(i)")
                XCTAssertEqual(fresh.steps, fresh.epochsDone * fresh.stepsPerEpoch, "input \(i)")
                XCTAssertTrue(fresh.parameters.allFinite, "input \(i)")
                counts["resumed", default: 0] += 1
            } catch is PromptError {
                counts["refused on resume", default: 0] += 1
            } catch {
                XCTFail("input \(i): untyped error \(error)")
            }
        }
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("fuzz prompt.safetensors: \(iterations) inputs in \(String(format: "%.1f", Date().timeIntervalSince(started))) s: \(summary), 0 crashes")
    }

    /// Replaces one number in the JSON header (epochs done, steps, shapes, history) by an extreme
    /// value, keeping the file's framing intact so that the header reaches the checks.
    func mutateNumbers(_ bytes: [UInt8], _ m: inout Mutator) -> [UInt8] {
        guard bytes.count > 8 else { return bytes }
        let length = Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        guard 8 + length <= bytes.count, var header = String(bytes: bytes[8..<(8 + length)], encoding: .utf8) else { return bytes }
        let digits = header.indices.filter { header[$0].isNumber }
        guard !digits.isEmpty else { return bytes }
        let at = digits[m.below(digits.count)]
        let extremes = ["9223372036854775807", "-9223372036854775808", "0", "-1", "99999", "1e308", "2"]
        header.replaceSubrange(at...at, with: extremes[m.below(extremes.count)])
        var body = Array(header.utf8)
        while body.count < length { body.append(UInt8(ascii: " ")) }
        guard body.count == length else { return bytes }   // longer: keep the framing, try another
        return Array(bytes[0..<8]) + body + Array(bytes[(8 + length)...])
    }
}
