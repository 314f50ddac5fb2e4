import CLIP
import Experiments
import Imaging
import Foundation
@testable import prompttune
import PromptLearning
import TensorCore
import TestSupport
import XCTest

/// `eval` and `analyze` take any method's checkpoint: prompts in the image tower (dapt, vpt) are
/// evaluated from the dataset's images through the prompted tower and give exactly the accuracy
/// (and measures) their grid cell recorded, few-shot and base-to-novel; CoCoOp's classifier made per
/// image likewise; MaPLe's deep prompts in both towers likewise.
final class EvalImagesTests: XCTestCase {
    func testEvalOfImagePromptCheckpointsReproducesTheRecords() throws {
        let dir = try makeTempDir(self)
        let data = dir.appendingPathComponent("data")
        try makeSyntheticDTD(in: data, test: 5)
        let out = dir.appendingPathComponent("out")
        let cells = try GridPlan(protocolKind: .fewShot, datasets: ["dtd"], methods: ["dapt", "vpt", "coop", "cocoop", "cocoop+npt", "maple"],
                                 shots: [2], seeds: [1],
                                 all: RecipeOverride(epochs: 2, batchSize: 2, views: 1, ncEvery: 0)).cells()
            + GridPlan(protocolKind: .baseToNovel, datasets: ["dtd"], methods: ["dapt", "cocoop", "maple"], shots: [2], seeds: [1],
                       all: RecipeOverride(epochs: 1, batchSize: 2, views: 1, ncEvery: 0)).cells()
        let runner = try ExperimentRunner(modelPath: CLITests.tiny, root: data, out: out)
        let records = try runner.run(cells)
        func json(_ args: [String]) throws -> [String: Any] {
            let eval = try XCTUnwrap(try PromptTune.parseAsRoot(args + ["--json"]) as? Eval)
            let text = try eval.report(classNames: nil)
            return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        }
        for (spec, record) in zip(cells, records) {
            XCTAssertEqual(record.status, .ok, record.error ?? "")
            let prompt = runner.folder(for: spec).checkpoint.path
            for e in record.evaluations {
                let subset = spec.protocolKind == .baseToNovel ? (e.name == "novel" ? "new" : "base") : "all"
                let args = ["eval", "--model", CLITests.tiny, "--prompt", prompt, "--dataset", "dtd", "--root", data.path, "--split", "test",
                            "--subset", subset]
                let printed = try json(args)
                XCTAssertEqual(printed["count"] as? Int, e.count, "\(spec.method) \(e.name)")
                XCTAssertEqual(try XCTUnwrap(printed["accuracy"] as? Double), e.accuracy, accuracy: 1e-12, "\(spec.method) \(e.name)")
                XCTAssertEqual(try XCTUnwrap(printed["macro_f1"] as? Double), e.macroF1, accuracy: 1e-12, "\(spec.method) \(e.name)")
                // analyze measures the same images against the same classifier as the cell's final measures.
                var a = ["analyze", "--model", CLITests.tiny, "--prompt", prompt, "--dataset", "dtd", "--root", data.path]
                if subset != "all" { a += ["--subset", subset] }
                let analyze = try XCTUnwrap(try PromptTune.parseAsRoot(a) as? Analyze)
                let report = try analyze.report().report
                XCTAssertEqual(report.accuracy, e.accuracy, accuracy: 1e-12, "\(spec.method) \(e.name)")
                XCTAssertEqual(report.nc3, try XCTUnwrap(record.nc[e.name]).nc3, accuracy: 1e-9, "\(spec.method) \(e.name)")
            }
        }
        // A prompt in the image tower on features of the unprompted tower: refused, saying what to give.
        let features = dir.appendingPathComponent("test.safetensors").path
        var f = try PromptTune.parseAsRoot(["features", "--model", CLITests.tiny, "--dataset", "dtd", "--root", data.path, "--split", "test",
                                            "--out", features])
        try f.run()
        let dapt = runner.folder(for: cells[0]).checkpoint.path
        XCTAssertThrowsError(try json(["eval", "--model", CLITests.tiny, "--prompt", dapt, "--features", features])) {
            XCTAssertTrue("\($0)".contains("give --dataset and --root instead of --features"), "\($0)")
        }
        // Its text context alone does act on those features.
        XCTAssertNotNil(try json(["eval", "--model", CLITests.tiny, "--prompt", dapt, "--features", features, "--text-only"])["accuracy"])
        // CoCoOp's prompts need only each image's feature: a features file of the same images gives the same accuracy.
        let cocoopCell = try XCTUnwrap(cells.first { $0.method == "cocoop" })
        let fromFeatures = try json(["eval", "--model", CLITests.tiny, "--prompt", runner.folder(for: cocoopCell).checkpoint.path,
                                     "--features", features])
        let cocoopRecord = try XCTUnwrap(zip(cells, records).first { $0.0 == cocoopCell }?.1)
        XCTAssertEqual(try XCTUnwrap(fromFeatures["accuracy"] as? Double), try XCTUnwrap(cocoopRecord.accuracy), accuracy: 1e-12)
        // MaPLe's image prompts come from its text prompts: refused on those features likewise; its
        // text side alone acts on them, as on the images through the unprompted tower.
        let maple = runner.folder(for: try XCTUnwrap(cells.first { $0.method == "maple" })).checkpoint.path
        XCTAssertThrowsError(try json(["eval", "--model", CLITests.tiny, "--prompt", maple, "--features", features])) {
            XCTAssertTrue("\($0)".contains("give --dataset and --root instead of --features"), "\($0)")
        }
        let mapleText = try json(["eval", "--model", CLITests.tiny, "--prompt", maple, "--features", features, "--text-only"])
        let mapleTextImages = try json(["eval", "--model", CLITests.tiny, "--prompt", maple, "--dataset", "dtd", "--root", data.path,
                                        "--split", "test", "--text-only"])
        XCTAssertEqual(try XCTUnwrap(mapleText["accuracy"] as? Double), try XCTUnwrap(mapleTextImages["accuracy"] as? Double), accuracy: 1e-12)
        // embed --prompt puts images through MaPLe's prompted tower.
        let clip = try CLIPModel.load(path: CLITests.tiny)
        let trained = try TrainedPrompt.read(path: maple)
        let image = RGBImage(width: 40, height: 36, pixels: (0..<(40 * 36 * 3)).map { UInt8($0 % 251) })
        let embedded = try embed(clip, prompt: trained, modelPath: CLITests.tiny, classNames: [], images: [image])
        let a = try trained.method.makeArchitecture(model: clip, tokenizer: try CLIPTokenizer(), classNames: trained.classNames!,
                                                    template: "{}", parameters: trained.parameters)
        let r = clip.config.imageResolution
        let want = L2Normalize.forward(a.encodeImages(trained.parameters, pixels: clipPreprocess(image, resolution: r).reshaped([1, 3, r, r]),
                                                      workspace: nil)).0
        XCTAssertEqual(embedded.image.first?.map(Float.init), want.data)
        let plain = try embed(clip, texts: [], images: [image]).image
        XCTAssertNotEqual(embedded.image, plain)
        // CoCoOp's meta-net and MaPLe's projections and deep prompts have no place in the reference
        // layouts `export` writes: refused, nothing written.
        for method in ["cocoop", "maple"] {
            let prompt = runner.folder(for: try XCTUnwrap(cells.first { $0.method == method })).checkpoint.path
            let exported = dir.appendingPathComponent("\(method).pth.tar-2").path
            var export = try PromptTune.parseAsRoot(["export", "--model", CLITests.tiny, "--format", "coop", prompt, exported])
            XCTAssertThrowsError(try export.run()) {
                XCTAssertTrue(PromptTune.message(for: $0).contains("nothing was written"), PromptTune.message(for: $0))
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: exported))
        }
        // --features and --dataset exclude each other; --subset goes with --dataset.
        for (args, says) in [(["--features", features, "--dataset", "dtd"], "exclude each other"), (["--features", features, "--subset", "base"], "--subset goes with --dataset"),
                             ([String](), "give --features FILE, or --dataset D")] {
            XCTAssertThrowsError(try PromptTune.parseAsRoot(["eval", "--model", CLITests.tiny, "--prompt", dapt] + args)) {
                XCTAssertTrue(PromptTune.message(for: $0).contains(says), PromptTune.message(for: $0))
            }
        }
    }
}
