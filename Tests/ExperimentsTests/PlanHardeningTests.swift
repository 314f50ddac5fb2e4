import Experiments
import Foundation
import TestSupport
import XCTest

/// Hostile plans (issue 17, item 5): each is a `PlanError` naming what is wrong, before anything runs.
final class PlanHardeningTests: XCTestCase {
    func error(_ yaml: String) -> String? {
        do {
            let plan = try GridPlan.read(yaml: yaml, source: "p.yaml")
            _ = try plan.cells()
            return nil
        } catch let e as PlanError {
            return e.description
        } catch {
            return "not a PlanError: \(error)"
        }
    }

    let base = "datasets: [dtd]\nmethods: [coop, kgcoop]\n"

    /// 5,000 levels in 10 KB overflowed the stack in Yams' recursive parser.
    func testDeepNestingIsRefusedBeforeParsing() throws {
        let flow = "datasets: " + String(repeating: "[", count: 5_000) + String(repeating: "]", count: 5_000) + "\n"
        let dashes = "datasets:\n" + String(repeating: "- ", count: 5_000) + "x\n"
        for text in [flow, dashes] {
            let e = try XCTUnwrap(error(text))
            XCTAssertTrue(e.contains("nested more than 64 levels deep"), e)
        }
        XCTAssertNil(error(base + "overrides:\n  kgcoop:\n    term_weights: {kg: 2}\n"))
    }

    /// `term_weights: {kg: .nan}` failed the cell and left a record no reader could decode.
    func testNonFiniteAndNegativeWeightsAreRefused() throws {
        for value in [".nan", ".inf", "-1"] {
            let e = try XCTUnwrap(error(base + "overrides: {kgcoop: {term_weights: {kg: \(value)}}}\n"))
            XCTAssertTrue(e.contains("term_weights kg must be a finite number of at least 0"), e)
        }
    }

    /// `name: ../..` put the default results folder outside results/.
    func testANameIsOneFolder() throws {
        for name in ["../..", "a/b", "..", "."] {
            let e = try XCTUnwrap(error(base + "name: '\(name)'\n"))
            XCTAssertTrue(e.contains("must be a plain folder name"), e)
        }
        XCTAssertNil(error(base + "name: my-grid\n"))
    }

    /// A 10^7-cell grid took 2.2 GB and a minute to list.
    func testTheGridSizeIsBounded() throws {
        let seeds = "[" + (0..<10_000).map(String.init).joined(separator: ", ") + "]"
        let e = try XCTUnwrap(error("datasets: [dtd, eurosat, ucf101, sun397, food101]\nmethods: [coop, kgcoop, coop+npt]\nshots: [1, 2, 4, 8, 16]\nseeds: \(seeds)\n"))
        XCTAssertTrue(e.contains("more than 100000 cells"), e)
    }

    /// Values of the wrong type name the key, the value, the expected type and the line.
    func testWrongTypesNameKeyValueTypeAndLine() throws {
        let cases: [(String, String)] = [
            (base + "epochs: ten\n", "line 3: 'epochs' is ten, but it must be a whole number"),
            (base + "shots: 16\n", "line 3: 'shots' is 16, but it must be a list of whole numbers"),
            (base + "lr: [0.1]\n", "line 3: 'lr' is [0.1], but it must be a number"),
            (base + "imbalance: [1, half]\n", "line 3: 'imbalance' is [1, half], but it must be a list of numbers"),
            (base + "overrides:\n  coop: {batch_size: 1.5}\n", "line 4: 'batch_size' in overrides of coop is 1.5, but it must be a whole number"),
            (base + "overrides:\n  kgcoop: {term_weights: {kg: high}}\n", "'term_weights' in overrides of kgcoop is {kg: high}, but it must be a map of term names to numbers"),
            (base + "overrides: [coop]\n", "'overrides' is [coop], but it must be a map of method names to settings"),
        ]
        for (text, needle) in cases {
            let e = try XCTUnwrap(error(text), text)
            XCTAssertTrue(e.contains("plan p.yaml, ") && e.contains(needle), "\(text): \(e)")
        }
    }
}
