import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// Prompt checkpoints and training inputs a user can hand PromptTune (issue 8: K4-K7, K9, K10,
/// K14 and the mutation campaign): typed errors naming the file, before anything is allocated.
final class PromptCheckpointHardeningTests: XCTestCase {
    /// A consistent checkpoint of a shared 2 x 4 context after one of three epochs.
    static func sample(epochsDone: Int = 1, steps: Int = 1, history: Int? = nil, contextShape: [Int] = [2, 4]) -> PromptCheckpoint {
        var method = Method.coop
        method.prompt.contextLength = 2
        let records = (0..<(history ?? epochsDone)).map {
            EpochRecord(epoch: $0, learningRate: 1e-5, loss: 2.5, terms: ["ce": 2.5], accuracy: 0.25)
        }
        let header = PromptCheckpoint.Header(
            config: TrainConfig(method: method, epochs: 3, batchSize: 8, seed: 4), classNames: ["cat", "dog"],
            contextShape: contextShape, hasMomentum: true, epochsDone: epochsDone, steps: steps, rngState: "12345",
            history: records, modelDigest: "m", featuresDigest: "f")
        let n = contextShape.reduce(1, &*)
        let values = (0..<min(max(n, 0), 64)).map { Float($0) / 10 }
        return PromptCheckpoint(header: header, context: Tensor(shape: [values.count], data: values),
                                momentum: Tensor(shape: [values.count], data: values))
    }

    func bytes(_ c: PromptCheckpoint) throws -> Data {
        let url = try makeTempDir(self).appendingPathComponent("c.ptprompt")
        try c.write(to: url)
        return try Data(contentsOf: url)
    }

    func kind(_ data: Data) -> FileError.Kind? {
        do { _ = try PromptCheckpoint.decode(data, path: "x.ptprompt"); return nil } catch let e as FileError {
            XCTAssertTrue(e.message.hasPrefix("x.ptprompt: "), e.message)
            return e.kind
        } catch {
            XCTFail("not a FileError: \(error)")
            return nil
        }
    }

    func testAConsistentCheckpointRoundTrips() throws {
        let c = Self.sample()
        let back = try PromptCheckpoint.decode(try bytes(c), path: "x.ptprompt")
        XCTAssertEqual(back.header, c.header)
        XCTAssertEqual(back.context.data, c.context.data)
        XCTAssertEqual(try bytes(c), try bytes(c), "sorted keys: the same checkpoint, the same bytes")
    }

    /// K4: a huge contextShape overflowed the size arithmetic.
    func testHugeContextShapesAreRefusedBeforeAllocating() throws {
        for shape in [[2, 1 << 62], [2, Int.max], [1 << 40, 1 << 40], [2, -4], [2, 0]] {
            XCTAssertNotNil(kind(try bytes(Self.sample(contextShape: shape))), "\(shape)")
        }
        XCTAssertEqual(kind(try bytes(Self.sample(contextShape: [2, 1 << 30]))), .truncated)
    }

    /// K5, K6, K7: progress that contradicts itself.
    func testImpossibleProgressIsRefused() throws {
        XCTAssertEqual(kind(try bytes(Self.sample(epochsDone: -1, steps: 0, history: 0))), .inconsistent, "K6 negative epochs")
        XCTAssertEqual(kind(try bytes(Self.sample(epochsDone: 3, steps: 3, history: 0))), .inconsistent, "K7 finished without history")
        XCTAssertEqual(kind(try bytes(Self.sample(epochsDone: 7, steps: 7))), .inconsistent, "more epochs than the run has")
        XCTAssertEqual(kind(try bytes(Self.sample(epochsDone: 0, steps: 5, history: 0))), .inconsistent, "steps without epochs")
        // K5: steps = Int.max reads (the header alone cannot tell) but is refused on resume.
        XCTAssertNil(kind(try bytes(Self.sample(epochsDone: 1, steps: Int.max))))
    }

    func testNonFiniteContextsAreRefused() throws {
        var c = Self.sample()
        c.context[3] = .nan
        XCTAssertEqual(kind(try bytes(c)), .nonFinite)
        c = Self.sample()
        c.momentum![0] = -.infinity
        XCTAssertEqual(kind(try bytes(c)), .nonFinite)
    }

    func testSettingsTheTrainerWouldRefuseAreRefused() throws {
        var c = Self.sample()
        c.header.config.optimizer.learningRate = -1
        XCTAssertEqual(kind(try bytes(c)), .inconsistent)
        c = Self.sample()
        c.header.config.method.prompt.contextLength = 100_000_000
        XCTAssertEqual(kind(try bytes(c)), .inconsistent)
        c = Self.sample()
        c.header.config.optimizer.learningRate = .nan
        XCTAssertThrowsError(try bytes(c)) { XCTAssertEqual(($0 as? FileError)?.kind, .nonFinite, "\($0)") }
    }

    /// K5 on resume, K9 zero views, K10 NPT with 100,010 classes, K14 a context of 10^8 vectors:
    /// each refused by the trainer before any allocation sized from it.
    func testTrainerRefusesHostileInputsUpFront() throws {
        let d = smallConfig.embedDim
        var config = TrainConfig(method: .coop, epochs: 2, batchSize: 2, seed: 1)
        config.method.prompt.contextLength = 2
        let features = LabeledFeatures(features: .randomNormal([1, 4, d], using: &rngForTests), labels: [0, 1, 0, 1], classNames: ["cat", "dog"])
        let trainer = try PromptTuner(model: smallModel, tokenizer: sharedTokenizer, data: .features(features), config: config)
        var c = trainer.checkpoint()
        XCTAssertNoThrow(try trainer.restore(c))
        c.header.epochsDone = 1
        c.header.history = [EpochRecord(epoch: 0, learningRate: 1e-5, loss: 1, terms: [:], accuracy: 0)]
        c.header.steps = Int.max
        c.momentum = c.parameters
        XCTAssertThrowsError(try trainer.restore(c)) { XCTAssertTrue("\($0)".contains("step count"), "K5: \($0)") }

        func refused(_ f: LabeledFeatures, _ cfg: TrainConfig, _ expect: String) {
            XCTAssertThrowsError(try PromptTuner(model: smallModel, tokenizer: sharedTokenizer, data: .features(f), config: cfg)) {
                XCTAssertTrue("\($0)".contains(expect), "\($0)")
            }
        }
        refused(LabeledFeatures(features: Tensor(zeros: [0, 2, d]), labels: [0, 1], classNames: ["a", "b"]), config, "at least one view")
        let many = (0..<100_010).map { "class \($0)" }
        var npt = config
        npt.method = try Method.named("kgcoop+npt")
        refused(LabeledFeatures(features: Tensor(zeros: [1, 2, d]), labels: [0, 1], classNames: many), npt, "at most 16384 classes")
        var long = config
        long.method.prompt.contextLength = 100_000_000
        refused(features, long, "context length must lie in 1...73")
        var nanFeatures = features
        nanFeatures.features[5] = .nan
        refused(nanFeatures, config, "not finite")
        refused(LabeledFeatures(features: Tensor(zeros: [1, 2, d]), labels: [0, 7], classNames: ["a", "b"]), config, "label 7")
        // The learner itself checks M against the text context before sizing anything from it.
        var rng = SeededGenerator(seed: 1)
        XCTAssertThrowsError(try PromptLearner(config: PromptConfig(contextLength: 74), classNames: ["a"], text: smallModel.text,
                                               tokenizer: sharedTokenizer, rng: &rng)) {
            XCTAssertTrue("\($0)".contains("can be at most 73"), "\($0)")
        }
    }

    /// Every crashing input (Goldens/fuzz/prompt, listed in its index.json with the error kind it
    /// must give) is now that typed error.
    func testRegressionFixturesAreTypedErrors() throws {
        let dir = repoRoot.appendingPathComponent("Goldens/fuzz/prompt")
        let index = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("index.json"))) as? [String: Any])
        let fixtures = try XCTUnwrap(index["fixtures"] as? [[String: String]])
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".ptprompt") }
        XCTAssertEqual(Set(files), Set(fixtures.compactMap { $0["file"] }), "every file has an index entry")
        for f in fixtures {
            let path = dir.appendingPathComponent(f["file"]!).path
            XCTAssertThrowsError(try PromptCheckpoint.read(path: path), f["file"]!) { error in
                XCTAssertEqual((error as? FileError).map { "FileError.\($0.kind.rawValue)" }, f["expect"], "\(f["file"]!): \(error)")
            }
        }
    }

    /// Seeded mutation campaign: >= 2,000 inputs (PROMPTTUNE_FUZZ_ITERATIONS for a longer run).
    func testMutatedCheckpointsNeverTrap() throws {
        let iterations = Int(ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"] ?? "") ?? 2000
        let seed = [UInt8](try bytes(Self.sample()))
        var mutator = Mutator(seed: 9)
        var counts: [String: Int] = [:]
        let start = Date()
        for i in 0..<iterations {
            let input = i % 2 == 0 ? mutator.mutate(seed) : mutateHeaderNumbers(seed, &mutator)
            do {
                let c = try PromptCheckpoint.decode(Data(input), path: "m.ptprompt")
                XCTAssertEqual(c.context.count, c.header.contextShape.reduce(1, *), "input \(i)")
                XCTAssertTrue(c.context.data.allSatisfy(\.isFinite) && c.header.epochsDone >= 0 && c.header.epochsDone <= c.header.config.epochs)
                counts["ok", default: 0] += 1
            } catch let e as FileError {
                counts[e.kind.rawValue, default: 0] += 1
                if formerReaderTraps(input) { counts["trapped the former reader", default: 0] += 1 }
            } catch {
                XCTFail("input \(i): untyped error \(error)")
            }
        }
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("fuzz PromptCheckpoint.decode: \(iterations) inputs in \(String(format: "%.1f", Date().timeIntervalSince(start))) s: \(summary)")
    }
}

/// Whether the reader before issue 8 trapped on `bytes`: it multiplied the header's context shape
/// (and 4 x that x 2) without overflow checks.
private func formerReaderTraps(_ bytes: [UInt8]) -> Bool {
    guard bytes.count >= 20, Array(bytes[0..<8]) == PromptCheckpoint.magic else { return false }
    let length = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[12 + $1]) << (8 * UInt64($1)) }
    guard length < UInt64(bytes.count), 20 + Int(length) <= bytes.count,
          let h = try? JSONDecoder().decode(PromptCheckpoint.Header.self, from: Data(bytes[20..<(20 + Int(length))])) else { return false }
    var n = 1
    for s in h.contextShape {
        let (p, o) = n.multipliedReportingOverflow(by: s)
        if o { return true }
        n = p
    }
    let (a, o1) = n.multipliedReportingOverflow(by: 4 * (h.hasMomentum ? 2 : 1))
    let (_, o2) = a.addingReportingOverflow(20 + Int(length))
    return o1 || o2
}

nonisolated(unsafe) private var rngForTests = SeededGenerator(seed: 5)

/// Replaces one number of the checkpoint's JSON header (length at byte 12, JSON from byte 20) by a
/// boundary value, keeping the declared length in step.
func mutateHeaderNumbers(_ bytes: [UInt8], _ m: inout Mutator) -> [UInt8] {
    guard bytes.count >= 20 else { return m.mutate(bytes) }
    let length = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[12 + $1]) << (8 * UInt64($1)) }
    let end = 20 + Int(min(length, UInt64(bytes.count - 20)))
    func digitOrSign(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || b == 0x2D }
    func numeric(_ b: UInt8) -> Bool { digitOrSign(b) || b == 0x2E || b == 0x65 || b == 0x2B }
    var spans: [Range<Int>] = []
    var i = 20
    while i < end {
        if digitOrSign(bytes[i]) {
            let s = i
            while i < end, numeric(bytes[i]) { i += 1 }
            spans.append(s..<i)
        } else { i += 1 }
    }
    guard !spans.isEmpty else { return m.mutate(bytes) }
    let values = ["0", "-1", "1", "4294967295", "9223372036854775807", "18446744073709551615", "1e308", "-0", "65536",
                  "2147483648", "100000000", "3.5", "-9223372036854775808"]
    var out = bytes
    out.replaceSubrange(spans[m.below(spans.count)], with: Array(values[m.below(values.count)].utf8))
    let newLength = length &+ UInt64(bitPattern: Int64(out.count - bytes.count))
    for k in 0..<8 { out[12 + k] = UInt8(truncatingIfNeeded: newLength >> (8 * UInt64(k))) }
    return out
}
