import ArgumentParser
import Foundation
import TestSupport
import XCTest
@testable import prompttune

/// `pretrain`'s options are range-checked before anything is built: a zero checkpoint interval used
/// to divide by zero, `--limit=-1` trapped in `prefix`, and huge epochs, resolutions or widths
/// overflowed or exhausted memory.
final class PretrainOptionsTests: XCTestCase {
    func testOutOfRangeOptionsAreUsageErrorsNamingTheOption() throws {
        let out = try makeTempDir(self, prefix: "pt-pretrain-opts").appendingPathComponent("never-made").path
        let base = ["pretrain", "--out", out]
        let cases: [([String], String)] = [
            (["--checkpoint-every", "0"], "--checkpoint-every"),
            (["--limit=-1"], "--limit"),
            (["--steps", "0"], "--steps"),
            (["--epochs", "9223372036854775807"], "--epochs"),
            (["--epochs", "0"], "--epochs"),
            (["--resolution", "100000"], "--resolution"),
            (["--resolution", "28", "--patch", "0"], "--patch"),
            (["--vision-width", "1000000000"], "--vision-width"),
            (["--text-layers", "0"], "--text-layers"),
            (["--batch-size", "1"], "--batch-size"),
            (["--lr", "nan"], "--lr"),
            (["--weight-decay", "-1"], "--weight-decay"),
            (["--vision-width", "129"], "heads"),
            (["--vision-width", "4096", "--vision-layers", "48", "--batch-size", "65536"], "memory"),
        ]
        for (args, needle) in cases {
            let error = try XCTUnwrap(PromptTune.execute(base + args), "\(args) ran")
            let text = PromptTune.message(for: error)
            XCTAssertTrue(text.contains(needle), "\(args): \(text)")
            XCTAssertEqual(PromptTune.exitCode(for: error).rawValue, 64, "\(args): a usage error")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing is written for a refused invocation")
    }
}
