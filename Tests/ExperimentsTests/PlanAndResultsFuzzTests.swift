import Experiments
import Foundation
import TestSupport
import XCTest

/// Seeded mutation campaigns over plans and results folders (issue 17): a `PlanError` or a plan
/// that lists, and a report that is written (unreadable records listed), never a trap or a hang.
/// PROMPTTUNE_FUZZ_ITERATIONS sets the inputs (2,000 plans, a quarter as many results folders).
final class PlanAndResultsFuzzTests: XCTestCase {
    static let iterations = Int(ProcessInfo.processInfo.environment["PROMPTTUNE_FUZZ_ITERATIONS"] ?? "") ?? 2000

    func testMutatedPlansAreErrorsOrPlans() throws {
        let seeds = BuiltInPlans.all.keys.sorted().map { Array(BuiltInPlans.all[$0]!.utf8) }
            + [Array("datasets: [dtd]\nmethods: [coop, kgcoop+npt]\nshots: [1, 16]\nimbalance: [1, 0.25]\noverrides:\n  kgcoop+npt: {epochs: 3, term_weights: {kg: 8, lc: 1}}\n".utf8)]
        var mutator = Mutator(seed: 23)
        var counts: [String: Int] = [:]
        let started = Date()
        for i in 0..<Self.iterations {
            var input = mutator.mutate(seeds[i % seeds.count])
            if i % 3 == 0 {   // structural: a line repeated, or brackets opened, as hostile plans do
                let text = String(decoding: input, as: UTF8.self)
                var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                let at = mutator.below(lines.count)
                switch mutator.below(3) {
                case 0: lines.insert(contentsOf: Array(repeating: lines[at], count: 1 + mutator.below(50)), at: at)
                case 1: lines[at] += String(repeating: "[", count: mutator.below(200))
                default: lines[at] = String(repeating: " ", count: mutator.below(300)) + lines[at]
                }
                input = Array(lines.joined(separator: "\n").utf8)
            }
            let text = String(decoding: input, as: UTF8.self)
            do {
                let plan = try GridPlan.read(yaml: text, source: "fuzz.yaml")
                let cells = try plan.cells()
                XCTAssertLessThanOrEqual(cells.count, GridPlan.maxCells, "input \(i)")
                counts["planned", default: 0] += 1
            } catch is PlanError {
                counts["PlanError", default: 0] += 1
            } catch {
                XCTFail("input \(i): not a PlanError: \(error)")
            }
        }
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("fuzz plans: \(Self.iterations) inputs in \(String(format: "%.1f", Date().timeIntervalSince(started))) s: \(summary), 0 crashes, 0 hangs")
    }

    func testMutatedResultsFoldersGiveAReport() throws {
        let dir = try makeTempDir(self)
        var r = RunRecord(spec: RunSpec(protocolKind: .baseToNovel, dataset: "dtd", shots: 16, seed: 1, imbalance: 0.25, method: "coop+npt",
                                        recipe: Recipe(epochs: 2, learningRate: 0.002, batchSize: 4, views: 1, termWeights: ["lc": 1])),
                          status: .ok)
        r.evaluations = [EvaluationSummary(name: "base", dataset: "dtd", classes: 2, count: 4, accuracy: 0.75, macroF1: 0.7, perClassAccuracy: ["a": 1, "b": 0.5]),
                         EvaluationSummary(name: "novel", dataset: "dtd", classes: 2, count: 4, accuracy: 0.5, macroF1: 0.4, perClassAccuracy: ["c": 0.5, "d": 0.5])]
        r.base = 0.75; r.novel = 0.5; r.hm = harmonicMean(0.75, 0.5); r.accuracy = r.hm
        r.model = "model.pt"; r.digests["model"] = "00112233445566778899"
        let seed = [UInt8](try encodeJSON(r))
        let good = dir.appendingPathComponent("runs/good/record.json")
        try FileManager.default.createDirectory(at: good.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(seed).write(to: good)
        let bad = dir.appendingPathComponent("runs/mutated/record.json")
        try FileManager.default.createDirectory(at: bad.deletingLastPathComponent(), withIntermediateDirectories: true)
        var mutator = Mutator(seed: 29)
        var counts: [String: Int] = [:]
        let started = Date()
        let n = max(1, Self.iterations / 4)
        for _ in 0..<n {
            try Data(mutator.mutate(seed)).write(to: bad)
            let summary = try writeReport(directory: dir)
            XCTAssertTrue(summary.records >= 1, "the good record is always read")
            counts[summary.unreadable.isEmpty ? "read" : "listed unreadable", default: 0] += 1
        }
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("fuzz results folders: \(n) inputs in \(String(format: "%.1f", Date().timeIntervalSince(started))) s: \(summary), 0 crashes")
    }
}
