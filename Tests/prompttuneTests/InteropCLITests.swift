import CLIP
import Experiments
import Foundation
import Imaging
@testable import PromptLearning
import TensorCore
import TestSupport
import XCTest
@testable import prompttune

/// `eval` and `analyze` on the prompt checkpoints CoOp, KgCoOp and DAPT write, and `export --format
/// coop`: the file torch verified (Goldens/interop/exported, reference/interop_checkpoints.py check)
/// is what export writes today, and reads back equal.
final class InteropCLITests: XCTestCase {
    static let tiny = repoRoot.appendingPathComponent("Goldens/tiny/checkpoints/openai.pt").path
    static let features = repoRoot.appendingPathComponent("Goldens/engine/features.safetensors").path
    static func golden(_ p: String) -> String { repoRoot.appendingPathComponent("Goldens/interop/\(p)").path }

    func json(_ args: [String]) throws -> [String: Any] {
        let cmd = try XCTUnwrap(try PromptTune.parseAsRoot(args) as? Eval)
        let text = try cmd.report(classNames: nil)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    func testEvalAndAnalyzeReadReferenceCheckpoints() throws {
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.golden("expected.json")))) as? [String: Any])
        let cases = try XCTUnwrap(expected["cases"] as? [String: [String: Any]])
        for c in ["coop", "coop_csc", "kgcoop", "dapt"] {
            let file = Self.golden("\(c)/prompt_learner/model.pth.tar-2")
            let args = ["eval", "--model", Self.tiny, "--prompt", file, "--features", Self.features, "--json"]
            let accuracy = try XCTUnwrap(cases[c]?["accuracy"] as? Double)
            if c == "dapt" {
                XCTAssertThrowsError(try json(args)) {
                    XCTAssertTrue("\($0)".contains("\(file) holds a visual prompt ('vis_ctx', 4 tokens of width 128)"), "\($0)")
                    XCTAssertTrue("\($0)".contains("--text-only"), "\($0)")
                }
                XCTAssertEqual(try XCTUnwrap(json(args + ["--text-only"])["accuracy"] as? Double), accuracy, accuracy: 1e-6)
                continue
            }
            XCTAssertEqual(try XCTUnwrap(json(args)["accuracy"] as? Double), accuracy, accuracy: 1e-6, c)
            let analyze = try XCTUnwrap(try PromptTune.parseAsRoot(["analyze", "--model", Self.tiny, "--features", Self.features, "--prompt", file]) as? Analyze)
            let (report, source, _) = try analyze.report()
            XCTAssertEqual(report.accuracy, accuracy, accuracy: 1e-6, c)
            XCTAssertEqual(source, "prompt \(file)")
        }
        // The demonstration model is another CLIP: refused, naming the file and the tensor.
        let demo = repoRoot.appendingPathComponent("models/fashion-clip/model.pt").path
        var onDemo = try PromptTune.parseAsRoot(["analyze", "--model", demo, "--features", Self.features,
                                                 "--prompt", Self.golden("coop/prompt_learner/model.pth.tar-2")])
        XCTAssertThrowsError(try onDemo.run())
    }

    /// `embed --prompt`: texts are class names through the prompt's context (equal to the reference's
    /// text features), images go through a DAPT prompt's vis_ctx.
    func testEmbedThroughAReferencePrompt() throws {
        let expected = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.golden("expected.json")))) as? [String: Any])
        let names = try XCTUnwrap(expected["classnames"] as? [String])
        let theirs = try XCTUnwrap((expected["cases"] as? [String: [String: Any]])?["kgcoop"]?["text_features"] as? [[Double]])
        let clip = try CLIPModel.load(path: Self.tiny)
        let kgcoop = try TrainedPrompt.read(path: Self.golden("kgcoop/prompt_learner/model.pth.tar-2"))
        let ours = try embed(clip, prompt: kgcoop, modelPath: Self.tiny, classNames: names, images: []).text
        XCTAssertLessThan(zip(ours.joined(), theirs.joined()).map { abs($0 - $1) }.max() ?? 1, 2e-5)

        let image = try decodeImage(path: repoRoot.appendingPathComponent("Goldens/tiny/model/embed_0.png").path)
        let dapt = try TrainedPrompt.read(path: Self.golden("dapt/prompt_learner/model.pth.tar-2"))
        let prompted = try embed(clip, prompt: dapt, modelPath: Self.tiny, classNames: [], images: [image]).image
        let plain = try embed(clip, texts: [], images: [image]).image
        let r = clip.config.imageResolution
        let direct = clip.image.forward(pixels: clipPreprocess(image, resolution: r).reshaped([1, 3, r, r]),
                                        extraTokens: try XCTUnwrap(dapt.visualPrompt)).0
        let norm = sqrt(direct.data.reduce(0) { $0 + Double($1) * Double($1) })
        XCTAssertEqual(prompted[0].count, clip.config.embedDim)
        XCTAssertLessThan(zip(prompted[0], direct.data).map { abs($0 - Double($1) / norm) }.max() ?? 1, 1e-6)
        XCTAssertGreaterThan(zip(prompted[0], plain[0]).map { abs($0 - $1) }.max() ?? 0, 1e-3, "the visual prompt changes the embedding")
    }

    func testExportWritesTheTorchVerifiedFileAndReadsBackEqual() throws {
        let dir = try makeTempDir(self)
        let source = Self.golden("exported/prompt.ptprompt")
        let out = dir.appendingPathComponent("prompt_learner/model.pth.tar-1").path
        var export = try PromptTune.parseAsRoot(["export", "--model", Self.tiny, "--format", "coop", source, out])
        try export.run()
        // Byte for byte the file reference/interop_checkpoints.py loaded with torch.load(weights_only=True).
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)),
                       try Data(contentsOf: URL(fileURLWithPath: Self.golden("exported/prompt_learner/model.pth.tar-1"))))
        let original = try PromptCheckpoint.read(path: source)
        let back = try ReferencePrompt.read(path: out)
        XCTAssertEqual(back.layout, .coop)
        XCTAssertEqual(back.epoch, original.header.epochsDone)
        XCTAssertEqual(back.context, original.context)
        XCTAssertEqual(back.tokenPrefix?.shape, [5, 1, 64])
        XCTAssertEqual(back.tokenSuffix?.shape, [5, 72, 64])
        // Evaluated through the reference format, the prompt classifies exactly as before.
        let a = try json(["eval", "--model", Self.tiny, "--prompt", source, "--features", Self.features, "--json"])
        let b = try json(["eval", "--model", Self.tiny, "--prompt", out, "--features", Self.features, "--json"])
        XCTAssertEqual(a["accuracy"] as? Double, b["accuracy"] as? Double)
        XCTAssertEqual(a["macro_f1"] as? Double, b["macro_f1"] as? Double)
        // torch's report: loaded with weights_only=True, CoOp's load_model missed only the dropped buffers,
        // token_prefix/suffix equal the model's own embeddings.
        let check = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.golden("exported/torch_check.json")))) as? [String: Any])
        XCTAssertEqual(check["weights_only"] as? Bool, true)
        XCTAssertEqual((check["load_state_dict"] as? [String: [String]])?["unexpected"], [])
        XCTAssertEqual((check["load_state_dict"] as? [String: [String]])?["missing"], ["token_prefix", "token_suffix"])
        XCTAssertEqual(check["token_prefix_max_abs_diff"] as? Double, 0)
        XCTAssertEqual(check["token_suffix_max_abs_diff"] as? Double, 0)

        // A prompt with a visual prompt gets DAPT's keys: a reference DAPT checkpoint rewritten, byte for byte
        // the file torch loaded (Goldens/interop/exported/dapt/torch_check.json), and one of ours.
        let daptOut = dir.appendingPathComponent("dapt/prompt_learner/model.pth.tar-2").path
        var rewrite = try PromptTune.parseAsRoot(["export", "--model", Self.tiny, "--format", "coop",
                                                  Self.golden("dapt/prompt_learner/model.pth.tar-2"), daptOut])
        try rewrite.run()
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: daptOut)),
                       try Data(contentsOf: URL(fileURLWithPath: Self.golden("exported/dapt/prompt_learner/model.pth.tar-2"))))
        XCTAssertEqual(try ReferencePrompt.read(path: daptOut), try ReferencePrompt.read(path: Self.golden("dapt/prompt_learner/model.pth.tar-2")))
        let daptCheck = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.golden("exported/dapt/torch_check.json")))) as? [String: Any])
        XCTAssertEqual((daptCheck["load_state_dict"] as? [String: [String]])?["unexpected"], [])
        XCTAssertEqual(Set((daptCheck["keys"] as? [String: Any])?.keys.map { $0 } ?? []), ["txt_ctx", "vis_ctx", "token_prefix", "token_suffix"])

        var rng = SeededGenerator(seed: 5)
        let ours = dir.appendingPathComponent("prompt.safetensors")
        let context = Tensor.randomNormal([4, 64], std: 0.02, using: &rng), visual = Tensor.randomNormal([4, 128], std: 0.1, using: &rng)
        var method = try Method.named("dapt")
        method.prompt.contextLength = 4
        method.visualPrompt = VisualPromptConfig(tokens: 4)
        try ParameterCheckpoint(header: .init(config: TrainConfig(method: method, epochs: 3), classNames: ["cat", "dog"],
                                              shapes: [ParameterName.textContext: [4, 64], ParameterName.visualPrompt: [4, 128]],
                                              epochsDone: 3, steps: 9, rngState: "1",
                                              history: (0..<3).map { EpochRecord(epoch: $0, learningRate: 0.002, loss: 1, terms: [:], accuracy: 0.5) },
                                              modelDigest: try modelDigest(Self.tiny),
                                              dataDigest: ""),
                                parameters: ParameterSet([(ParameterName.textContext, context), (ParameterName.visualPrompt, visual)]),
                                momentum: ParameterSet()).write(to: ours)
        let oursOut = dir.appendingPathComponent("ours.pth.tar-3").path
        var exportOurs = try PromptTune.parseAsRoot(["export", "--model", Self.tiny, "--format", "coop", ours.path, oursOut])
        try exportOurs.run()
        let d = try ReferencePrompt.read(path: oursOut)
        XCTAssertEqual(d.layout, .dapt)
        XCTAssertEqual(d.epoch, 3)
        XCTAssertEqual(d.context, context)
        XCTAssertEqual(d.visualPrompt, visual)
        XCTAssertEqual(d.tokenSuffix?.shape, [2, 72, 64])

        // Refusals: a folder as OUT; a model the prompt was not trained with.
        XCTAssertThrowsError(try PromptTune.parseAsRoot(["export", "--format", "coop", source, dir.path])) {
            XCTAssertTrue(PromptTune.message(for: $0).contains("is a folder"), PromptTune.message(for: $0))
        }
        var other = try PromptTune.parseAsRoot(["export", "--format", "coop", source, dir.appendingPathComponent("x").path])
        XCTAssertThrowsError(try other.run()) { XCTAssertTrue("\($0)".contains("trained with another model"), "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("x").path))
    }
}
