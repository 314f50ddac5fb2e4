import Analysis
import ArgumentParser
import CLIP
import Features
import Experiments
import Foundation
import PromptLearning
import TensorCore
import TensorIO

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Neural-collapse measures (NC1-NC4, docs/METHODS.md section 6) of cached image features against a prompt's text features, or the hand template's.")

    @OptionGroup var model: ModelOptions
    @Option(help: "Features to analyse (from `prompttune features`; view 0).") var features: String
    @Option(help: "Prompt checkpoint: prompt.ptprompt from `prompttune train`, prompt.safetensors from `run`, or CoOp's, KgCoOp's or DAPT's prompt_learner/model.pth.tar-N (default: zero-shot text features of the features file's hand template).")
    var prompt: String?
    @Flag(name: .customLong("text-only"), help: "For a prompt with a visual prompt (DAPT, VPT): measure its text context alone against these unprompted features.")
    var textOnly = false
    @Option(parsing: .unconditional, help: "Threads for OpenBLAS (1...\(OptionLimits.maxThreads)).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print the report as JSON (sorted keys).") var json = false

    func validate() throws { try OptionLimits.threads(threads) }

    /// The report and a phrase naming the text features it used.
    func report() throws -> (report: NeuralCollapseReport, text: String) {
        Compute.threads = threads
        let set = try FeatureSet.read(path: features)
        let digest = try modelDigest(model.model)
        try checkFeatures(set, path: features, modelPath: model.model, digest: digest)
        let clip = try CLIPModel.load(path: model.model)
        guard set.dimension == clip.config.embedDim else {
            throw ValidationError("\(features) has features of dimension \(set.dimension), the model's is \(clip.config.embedDim): made with another model")
        }
        let tokenizer = try CLIPTokenizer()
        let text: Tensor, source: String
        if let prompt {
            text = try TrainedPrompt.read(path: prompt).textFeatures(model: clip, modelPath: model.model, modelDigest: digest,
                                                                     classNames: set.classNames, tokenizer: tokenizer, textOnly: textOnly)
            source = "prompt \(prompt)"
        } else {
            let template = set.provenance["template"] ?? "a photo of a {}."
            text = zeroShotTextFeatures(model: clip, tokenizer: tokenizer, template: template, classNames: set.classNames)
            source = "hand template \"\(template)\""
        }
        if !text.data.allSatisfy({ $0.isFinite }) {
            if let e = nonFiniteWeightsError(path: model.model, tensors: try loadCLIPWeights(path: model.model).tensors) { throw e }
            throw PresentedError(message: "the text features of the \(source) are not finite; nothing can be measured")
        }
        do {
            return (try NeuralCollapseReport.measure(images: set.view(0), labels: set.labels, text: text), source)
        } catch AnalysisError.emptyClass(let k) {
            throw ValidationError("\(features) has no images of class \(k) (\(set.classNames[k])); the class-mean measures need every class represented")
        } catch AnalysisError.tooFewClasses(let k) {
            throw ValidationError("\(features) has only \(k) class(es); the measures need at least 2")
        }
    }

    func run() throws {
        let (r, source) = try report()
        if json {
            print(try analysisJSON(r))
            return
        }
        func f(_ v: Double) -> String { String(format: "%.4f", v) }
        printTable("neural collapse of \(features) (view 0) against the \(source)", [
            ("NC1 tr(S_W S_B^+)/K", f(r.image.nc1)),
            ("image equinorm", f(r.image.equinorm)), ("image equiangularity", f(r.image.equiangularity)),
            ("image max-angle", f(r.image.maxAngle)), ("image ETF error", f(r.image.etfError)),
            ("text equinorm", f(r.text.equinorm)), ("text equiangularity", f(r.text.equiangularity)),
            ("text max-angle", f(r.text.maxAngle)), ("text ETF error", f(r.text.etfError)),
            ("NC3 text-image duality", f(r.nc3)),
            ("NC4 agreement with nearest mean", String(format: "%.2f%%", 100 * r.nc4)),
            ("accuracy", String(format: "%.2f%%", 100 * r.accuracy)),
        ])
    }
}

/// The report as one line of JSON with sorted keys.
func analysisJSON(_ report: NeuralCollapseReport) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(report), as: UTF8.self)
}
