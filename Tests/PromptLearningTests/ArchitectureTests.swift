import CLIP
import Foundation
@testable import PromptLearning
import TensorCore
import TensorIO
import TestSupport
import XCTest

/// The prompt architectures: one type per method family, what they learn, their classifiers
/// (shared or per image), and the checkpoint reader's checks of a header against the method.
final class ArchitectureTests: XCTestCase {
    var rng = SeededGenerator(seed: 21)

    /// Per-image text features (B x K x E, CoCoOp's classifier): the objective's gradients to the
    /// text and to the image features, by finite differences.
    func testPerImageObjectiveGradients() {
        let (b, k, e) = (3, 4, 6)
        let text = Tensor.randomNormal([b, k, e], using: &rng)
        let images = L2Normalize.forward(.randomNormal([b, e], using: &rng)).0
        let labels = [1, 3, 0]
        let method = Method(name: "per-image", prompt: PromptConfig(contextLength: 4))
        func value(_ t: Tensor, _ f: Tensor) -> Double {
            objective(method: method, textFeatures: t, images: f, labels: labels, logitScale: 7, inputs: TermInputs(), imageGradient: true).total
        }
        let v = objective(method: method, textFeatures: text, images: images, labels: labels, logitScale: 7, inputs: TermInputs(),
                          imageGradient: true)
        XCTAssertEqual(v.dText.shape, [b, k, e])
        checkGradient("per-image text", at: text, analytic: v.dText, tolerance: .lossTerms) { value($0, images) }
        checkGradient("per-image images", at: images, analytic: v.dImages!, tolerance: .lossTerms) { value(text, $0) }
        // The same text for every image is the shared classifier: same loss.
        let shared = Tensor.randomNormal([k, e], using: &rng)
        let repeated = Tensor(shape: [b, k, e], data: Array((0..<b).map { _ in shared.data }.joined()))
        let a = objective(method: method, textFeatures: shared, images: images, labels: labels, logitScale: 7, inputs: TermInputs())
        XCTAssertEqual(value(repeated, images), a.total, accuracy: 1e-5)
    }

    /// NPT's terms on per-image text features (cocoop+npt): each image's classifier's terms,
    /// averaged over the batch; their gradient by finite differences.
    func testPerImageTermsGradients() throws {
        let (b, k, e) = (3, 4, 6)
        let method = try Method.named("cocoop+npt")
        XCTAssertEqual(method.terms.map(\.key), ["lc", "mi"])
        let text = Tensor.randomNormal([b, k, e], using: &rng)
        let images = L2Normalize.forward(.randomNormal([b, e], using: &rng)).0
        let inputs = TermInputs(anchors: L2Normalize.forward(.randomNormal([k, e], using: &rng)).0,
                                prototypes: .randomNormal([k, e], std: 0.3, using: &rng))
        let labels = [1, 3, 0]
        let v = objective(method: method, textFeatures: text, images: images, labels: labels, logitScale: 7, inputs: inputs)
        XCTAssertEqual(Set(v.terms.keys), ["ce", "lc", "mi"])
        checkGradient("per-image npt", at: text, analytic: v.dText, tolerance: .lossTerms) {
            objective(method: method, textFeatures: $0, images: images, labels: labels, logitScale: 7, inputs: inputs).total
        }
        // One image: the terms are the shared objective's.
        let one = text.slice(rows: 0..<1)
        let shared = objective(method: method, textFeatures: one.reshaped([k, e]), images: images.slice(rows: 0..<1), labels: [1],
                               logitScale: 7, inputs: inputs)
        let perImage = objective(method: method, textFeatures: one, images: images.slice(rows: 0..<1), labels: [1], logitScale: 7, inputs: inputs)
        XCTAssertEqual(perImage.total, shared.total, accuracy: 1e-5)
    }

    /// Evaluation with a per-image classifier scores each image against its own text features: a
    /// classifier that swaps two classes' text for one image only changes that image's prediction.
    func testPerImageClassifierEvaluation() {
        let (n, k, e) = (5, 3, 4)
        let text = L2Normalize.forward(.randomNormal([k, e], using: &rng)).0
        // Each image is its class's text feature (so the shared classifier is always right).
        let labels = [0, 1, 2, 1, 0]
        let images = Tensor(shape: [n, e], data: labels.flatMap { Array(text.data[($0 * e)..<(($0 + 1) * e)]) })
        let names = ["a", "b", "c"]
        XCTAssertEqual(evaluate(images: images, labels: labels, classifier: .shared(text), classNames: names).accuracy, 1)
        let swapFirst: (Tensor) -> Tensor = { f in
            var rows: [Float] = []
            for i in 0..<f.rows {
                // The first image of every chunk gets classes 0 and 1 swapped.
                let order = i == 0 ? [1, 0, 2] : [0, 1, 2]
                for c in order { rows += text.data[(c * e)..<((c + 1) * e)] }
            }
            return Tensor(shape: [f.rows, k, e], data: rows)
        }
        let r = evaluate(images: images, labels: labels, classifier: .perImage(swapFirst), classNames: names, chunk: 2)
        // Chunks of 2: images 0, 2 and 4 are first in theirs; labels 0 and 0 are misread, label 2 is not.
        XCTAssertEqual(r.accuracy, 3.0 / 5.0, accuracy: 1e-12)
    }

    /// Each built-in method gets its architecture; given parameters are checked by name and shape.
    func testMethodsMakeTheirArchitectures() throws {
        let model = DAPTParityTests.model
        let names = ["cat", "dog", "bird"]
        for (spec, kind, learned) in [("coop", ArchitectureKind.context, [ParameterName.textContext]),
                                      ("kgcoop+npt", .context, [ParameterName.textContext]),
                                      ("vpt", .visual, [ParameterName.visualPrompt]),
                                      ("dapt", .contextAndVisual, [ParameterName.textContext, ParameterName.visualPrompt])] {
            let method = try Method.named(spec)
            XCTAssertEqual(method.architecture, kind, spec)
            XCTAssertEqual(method.needsImages, kind != .context, spec)
            var g = SeededGenerator(seed: 1)
            let a = try method.makeArchitecture(model: model, tokenizer: sharedTokenizer, classNames: names, template: "a photo of a {}.", rng: &g)
            XCTAssertEqual(a.initialParameters.names, learned, spec)
            XCTAssertEqual(a.promptsImageTower, kind != .context, spec)
            var extra = a.initialParameters
            extra["meta.net"] = Tensor(zeros: [2])
            XCTAssertThrowsError(try method.makeArchitecture(model: model, tokenizer: sharedTokenizer, classNames: names, template: "{}",
                                                             parameters: extra)) {
                XCTAssertTrue("\($0)".contains("'meta.net' is not learned by method \(spec)"), "\($0)")
            }
            // Missing a learned tensor: refused, naming it.
            XCTAssertThrowsError(try method.makeArchitecture(model: model, tokenizer: sharedTokenizer, classNames: names, template: "{}",
                                                             parameters: ParameterSet())) {
                XCTAssertTrue("\($0)".contains(learned[0]), "\($0)")
            }
        }
        // The architecture is recorded only where the method's fields do not imply it: old headers read unchanged.
        let json = String(decoding: try JSONEncoder().encode(try Method.named("dapt")), as: UTF8.self)
        XCTAssertFalse(json.contains("architecture"), json)
        XCTAssertEqual(try JSONDecoder().decode(Method.self, from: Data(json.utf8)).architecture, .contextAndVisual)
    }

    /// A parameter checkpoint's header is held to its method: the tensors it learns, their shapes,
    /// its progress; each refusal a typed, inconsistent-file error naming the file.
    func testParameterCheckpointHeadersAreCheckedAgainstTheMethod() throws {
        var config = DAPTParityTests.config()
        config.epochs = 2
        let tuner = try PromptTuner(model: DAPTParityTests.model, tokenizer: sharedTokenizer, data: .images(SyntheticImages()), config: config)
        try tuner.runEpoch()
        let good = tuner.checkpoint()
        let dir = try makeTempDir(self)
        var cases: [(String, ParameterCheckpoint)] = []
        var c = good
        c.header.shapes[ParameterName.visualPrompt] = nil
        c.parameters[ParameterName.visualPrompt] = nil
        c.momentum[ParameterName.visualPrompt] = nil
        cases.append(("learns [\"text.context\", \"visual.prompt\"]", c))
        c = good
        let ctx = good.parameters[ParameterName.textContext]!
        c.header.shapes[ParameterName.textContext] = [ctx.shape[0] + 1, ctx.shape[1]]
        c.parameters[ParameterName.textContext] = Tensor(zeros: [ctx.shape[0] + 1, ctx.shape[1]])
        c.momentum[ParameterName.textContext] = Tensor(zeros: [ctx.shape[0] + 1, ctx.shape[1]])
        cases.append(("parameter 'text.context' has shape", c))
        c = good
        c.header.history = []
        cases.append(("a history of 0", c))
        c = good
        c.header.rngState = "seven"
        cases.append(("not a 64-bit integer", c))
        for (i, (says, bad)) in cases.enumerated() {
            let url = dir.appendingPathComponent("bad\(i).safetensors")
            try bad.write(to: url)
            XCTAssertThrowsError(try ParameterCheckpoint.read(path: url.path), says) {
                XCTAssertEqual(($0 as? FileError)?.kind, .inconsistent, "\($0)")
                XCTAssertTrue("\($0)".hasPrefix(url.path) && "\($0)".contains(says), "\(says): \($0)")
            }
        }
        let url = dir.appendingPathComponent("good.safetensors")
        try good.write(to: url)
        XCTAssertEqual(try ParameterCheckpoint.read(path: url.path), good)
    }
}
