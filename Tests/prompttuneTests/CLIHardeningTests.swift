import ArgumentParser
import Features
import Foundation
import TensorCore
import TensorIO
import TestSupport
import XCTest
@testable import prompttune

/// Invalid invocations, run in-process through the same path as `main` (`PromptTune.execute`):
/// each message names the option or file and says what is wrong, and none is a Foundation,
/// encoder or Swift dump (issue 8).
final class CLIHardeningTests: XCTestCase {
    static let model = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/state_dict.pt").path
    static let features = repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path
    static let fuzz = repoRoot.appendingPathComponent("Goldens/fuzz")
    static let banned = ["NSCocoaErrorDomain", "Error Domain", "EncodingError", "DecodingError", "Swift.", "Optional("]

    /// What the user would read, or nil when the command succeeded.
    func message(_ args: [String]) -> String? {
        guard let error = PromptTune.execute(args) else { return nil }
        return PromptTune.message(for: error)
    }

    func fixture(_ name: String) -> String { Self.fuzz.appendingPathComponent(name).path }

    func testInvalidInvocationsGetClearMessages() throws {
        let dir = try makeTempDir(self, prefix: "ptcli-bad")
        let aFile = dir.appendingPathComponent("a-file").path
        try Data("x".utf8).write(to: URL(fileURLWithPath: aFile))
        let prompt = fixture("prompt/k4-context-shape-huge.ptprompt")
        func resumeFolder(_ fixtureName: String) throws -> String {
            let out = dir.appendingPathComponent("resume-\(fixtureName)")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: fixture("prompt/\(fixtureName).ptprompt"), toPath: out.appendingPathComponent("prompt.ptprompt").path)
            return out.path
        }
        let train = ["train", "--model", Self.model, "--features", Self.features, "--epochs", "1"]
        let eval = ["eval", "--model", Self.model, "--prompt", prompt, "--features", Self.features]
        let features = ["features", "--model", Self.model, "--dataset", "fashion_mnist"]
        let run = ["run", "--datasets", "fashion_mnist", "--methods", "coop", "--model", Self.model]
        let missingOut = dir.appendingPathComponent("never-made").path
        // K10: 20,010 class names and NPT's K x K anchors (40 GB) are refused before allocating.
        let manyNames = dir.appendingPathComponent("many-names.safetensors").path
        try FeatureSet(features: Tensor(zeros: [1, 2, 32]), labels: [0, 1], classNames: (0..<20_010).map { "class \($0)" })
            .write(to: URL(fileURLWithPath: manyNames))
        // (arguments, what the message must contain)
        let cases: [([String], [String])] = [
            (train + ["--epochs", "0"], ["--epochs", "1...1000000"]),
            (train + ["--epochs", "-3"], ["--epochs"]),
            (train + ["--epochs", "99999999999"], ["--epochs"]),
            (train + ["--epochs", "abc"], ["--epochs"]),
            (train + ["--lr", "inf"], ["--lr", "finite"]),
            (train + ["--lr", "nan"], ["--lr"]),
            (train + ["--lr", "-1"], ["--lr"]),
            (train + ["--lr", "0"], ["--lr"]),
            (train + ["--batch-size", "0"], ["--batch-size"]),
            (train + ["--batch-size", "-5"], ["--batch-size"]),
            (train + ["--threads", "99999999999"], ["--threads", "1...1024"]),             // K11
            (train + ["--threads", "0"], ["--threads"]),
            (train + ["--threads", "-2"], ["--threads"]),
            (train + ["--n-ctx", "100000000"], ["--n-ctx", "1...73"]),                     // K14
            (train + ["--n-ctx", "0"], ["--n-ctx"]),
            (train + ["--n-ctx", "-1"], ["--n-ctx"]),
            (train + ["--method", "kgcoop", "--kg-weight", "nan"], ["--kg-weight"]),
            (train + ["--method", "kgcoop", "--kg-weight", "inf"], ["--kg-weight"]),
            (train + ["--method", "kgcoop", "--kg-weight", "-1"], ["--kg-weight"]),
            (train + ["--method", "coop+npt", "--lambda-lc", "nan"], ["--lambda-lc"]),
            (train + ["--method", "coop+npt", "--lambda-mi", "inf"], ["--lambda-mi"]),
            (train + ["--method", "dapt-text", "--beta-t", "nan"], ["--beta-t"]),
            (train + ["--method", "dapt-text", "--tau", "0"], ["--tau"]),
            (train + ["--method", "dapt-text", "--tau", "nan"], ["--tau"]),
            (train + ["--method", "prograd"], ["prograd"]),
            (train + ["--seed", "-1"], ["--seed"]),
            (train + ["--out", aFile], ["--out", aFile, "is a file"]),
            (train + ["--out", aFile + "/run"], [aFile, "not a folder"]),
            (train + ["--out", "/sys/prompttune-h8-run"], ["/sys/prompttune-h8-run", "permission denied"]),
            (train + ["--out", missingOut, "--resume"], ["no checkpoint", missingOut]),
            (["train", "--model", Self.model, "--features", "/nonexistent/f.safetensors"], ["/nonexistent/f.safetensors"]),
            (["train", "--model", Self.model, "--features", fixture("features/k8-label-nan.safetensors")], ["k8-label-nan.safetensors", "label 1 is nan"]), // K8
            (["train", "--model", Self.model, "--features", fixture("features/k9-zero-views.safetensors")], ["k9-zero-views.safetensors"]),            // K9
            (["train", "--model", Self.model, "--features", fixture("features/features-nan.safetensors")], ["features-nan.safetensors", "non-finite"]),
            (["train", "--model", Self.model, "--features", Self.model], [Self.model]),
            (["train", "--model", "/nonexistent/m.pt", "--features", Self.features], ["/nonexistent/m.pt"]),
            (train + ["--resume", "--out", try resumeFolder("k7-finished-without-history")], ["k7-finished-without-history", "prompt.ptprompt", "history"]), // K7
            (train + ["--resume", "--out", try resumeFolder("k6-epochs-done-negative")], ["prompt.ptprompt", "epochs done (-5)"]),                        // K6
            (train + ["--resume", "--out", try resumeFolder("k4-context-shape-huge")], ["prompt.ptprompt", "context shape"]),                            // K4
            (train + ["--resume", "--out", try resumeFolder("k5-steps-int-max")], ["prompt.ptprompt", "step count"]),                                   // K5
            (["train", "--model", Self.model, "--features", manyNames, "--method", "kgcoop+npt"], ["20010 classes", "at most 16384"]), // K10
            (eval, ["k4-context-shape-huge.ptprompt"]),
            (eval + ["--threads", "0"], ["--threads"]),
            (["eval", "--model", Self.model, "--prompt", "/nonexistent.ptprompt", "--features", Self.features], ["/nonexistent.ptprompt"]),
            (["eval", "--model", Self.model, "--prompt", fixture("prompt/context-nan.ptprompt"), "--features", Self.features], ["context-nan.ptprompt", "non-finite"]),
            (["eval", "--model", Self.model, "--prompt", prompt, "--features", fixture("features/features-inf.safetensors")], ["ptprompt"]),
            (eval + ["--classnames", "/nonexistent/names.txt"], ["--classnames", "/nonexistent/names.txt"]),
            (features + ["--views", "100000"], ["--views", "1...10000"]),                      // K13
            (features + ["--views", "0"], ["--views"]),
            (features + ["--views", "-1"], ["--views"]),
            (features + ["--limit", "0"], ["--limit"]),
            (features + ["--limit", "-4"], ["--limit"]),
            (features + ["--shots", "-3"], ["--shots"]),
            (features + ["--shots", "0"], ["--shots"]),
            (features + ["--seed=-1"], ["--seed", "random.seed"]),                              // K12
            (features + ["--seed", "-1"], ["--seed"]),
            (features + ["--shots", "4", "--imbalance", "2"], ["--imbalance"]),
            (features + ["--shots", "4", "--imbalance", "nan"], ["--imbalance"]),
            (features + ["--threads", "99999999999"], ["--threads"]),
            (features + ["--out", dir.path], ["--out", "is a folder"]),
            (["features", "--model", Self.model, "--dataset", "nosuch"], ["nosuch"]),
            (["sample", "--dataset", "fashion_mnist", "--seed", "-1"], ["--seed"]),            // K12
            (["sample", "--dataset", "fashion_mnist", "--shots", "-3"], ["--shots"]),
            (["embed", "--model", Self.model, "--text", "a", "--threads", "0"], ["--threads"]),
            (["embed", "--model", Self.model], ["--text"]),
            (["embed", "--model", Self.model, "--image", "/nonexistent/a.png"], ["/nonexistent/a.png"]),
            (run + ["--lr", "inf"], ["--lr"]),
            (run + ["--epochs", "0"], ["--epochs"]),
            (run + ["--seeds", "-1"], ["--seeds"]),
            (run + ["--cell", "-1"], ["--cell"]),
            (run + ["--threads", "0"], ["--threads"]),
            (run + ["--nc-every", "-1"], ["--nc-every"]),
            (run + ["--views", "100000"], ["--views"]),
            (["analyze", "--model", Self.model, "--features", Self.features, "--threads", "0"], ["--threads"]),
            (["analyze", "--model", Self.model, "--features", "/nonexistent/f.safetensors"], ["/nonexistent/f.safetensors"]),
        ]
        XCTAssertGreaterThanOrEqual(cases.count, 60)
        var clear = 0
        for (args, expected) in cases {
            guard let text = message(args) else {
                XCTFail("succeeded but should fail: \(args.joined(separator: " "))")
                continue
            }
            let missing = expected.filter { !text.contains($0) }
            let dumps = Self.banned.filter { text.contains($0) }
            XCTAssertTrue(missing.isEmpty, "\(args.joined(separator: " ")):\n  \(text)\n  lacks \(missing)")
            XCTAssertTrue(dumps.isEmpty, "\(args.joined(separator: " ")):\n  \(text)\n  shows \(dumps)")
            if missing.isEmpty && dumps.isEmpty { clear += 1 }
        }
        print("CLI hardening: \(clear) of \(cases.count) invalid invocations got a clear message")
        XCTAssertFalse(FileManager.default.fileExists(atPath: missingOut), "a failed train leaves no empty --out folder")
    }

    /// Presentation of Foundation's file errors and encoder errors in plain words.
    func testFoundationErrorsArePresentedInPlainWords() throws {
        let dir = try makeTempDir(self, prefix: "ptcli-present")
        let file = dir.appendingPathComponent("f")
        try Data("x".utf8).write(to: file)
        func presented(_ body: () throws -> Void) -> String {
            do { try body(); return "" } catch { return ErrorPresenter.present(error) }
        }
        let notDir = presented { try FileManager.default.createDirectory(at: file.appendingPathComponent("sub"), withIntermediateDirectories: true) }
        XCTAssertTrue(notDir.contains(file.path) && notDir.contains("not a folder"), notDir)
        let exists = presented { try FileManager.default.createDirectory(at: file, withIntermediateDirectories: true) }
        XCTAssertTrue(exists.contains(file.path) && exists.contains("is a file"), exists)
        let missing = presented { _ = try Data(contentsOf: URL(fileURLWithPath: "/nonexistent/x")) }
        XCTAssertTrue(missing.contains("/nonexistent/x") && missing.contains("no such file"), missing)
        let encoding = presented { _ = try JSONEncoder().encode(["lr": Double.infinity]) }
        XCTAssertTrue(encoding.contains("'lr'") && encoding.contains("finite"), encoding)
        for text in [notDir, exists, missing, encoding] {
            XCTAssertTrue(Self.banned.allSatisfy { !text.contains($0) }, text)
        }
        XCTAssertThrowsError(try jsonText(["accuracy": Double.nan])) { XCTAssertTrue("\($0)".contains("'accuracy'"), "\($0)") }
    }

    /// NaN weights made `embed` print `{}` and exit 0; now the tensor is named.
    func testNonFiniteWeightsAreNamed() throws {
        let dir = try makeTempDir(self, prefix: "ptcli-nan")
        let source = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/open_clip_model.safetensors").path
        var (tensors, meta) = try Safetensors.read(path: source)
        let key = try XCTUnwrap(tensors.keys.first { $0.hasSuffix("logit_scale") })
        tensors[key]![0] = .nan
        let bad = dir.appendingPathComponent("nan.safetensors")
        try Safetensors.write(tensors: tensors, metadata: meta, to: bad)
        let text = try XCTUnwrap(message(["embed", "--model", bad.path, "--text", "a photo"]))
        XCTAssertTrue(text.contains("logit_scale") && text.contains(bad.path), text)
        XCTAssertTrue(Self.banned.allSatisfy { !text.contains($0) }, text)
    }

    /// Re-extracting identical features gives a byte-identical file (sorted keys everywhere), so
    /// `train --resume` keeps accepting it.
    func testFeaturesCommandIsByteReproducible() throws {
        guard FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") else {
            throw XCTSkip("dataset-fashion-mnist is not installed")
        }
        let dir = try makeTempDir(self, prefix: "ptcli-repro")
        let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path
        let a = dir.appendingPathComponent("a.safetensors").path, b = dir.appendingPathComponent("b.safetensors").path
        for out in [a, b] {
            XCTAssertNil(message(["features", "--model", tiny, "--dataset", "fashion_mnist", "--split", "test", "--limit", "6",
                                  "--threads", "1", "--out", out]))
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: a)), try Data(contentsOf: URL(fileURLWithPath: b)))
        XCTAssertFalse(FileManager.default.fileExists(atPath: a + ".partial"))
    }
}
