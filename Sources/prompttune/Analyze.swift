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
        abstract: "Neural-collapse measures (NC1-NC4, docs/METHODS.md section 6) of image features (a features file, or a dataset's images through the prompt's image tower) against a prompt's text features, or the hand template's.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var images: EvaluationImageOptions
    @Option(help: "Prompt checkpoint: prompt.safetensors from `train` or `run` (or an earlier version's prompt.ptprompt), or CoOp's, KgCoOp's or DAPT's prompt_learner/model.pth.tar-N (default: zero-shot text features of the hand template).")
    var prompt: String?
    @Flag(name: .customLong("text-only"), help: "For a prompt that prompts the image tower (DAPT, VPT, MaPLe): measure its text side alone against the unprompted tower's features.")
    var textOnly = false
    @Option(parsing: .unconditional, help: "Threads for OpenBLAS (1...\(OptionLimits.maxThreads)).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print the report as JSON (sorted keys).") var json = false

    func validate() throws { try OptionLimits.threads(threads) }

    /// The report and phrases naming the text features and the images it used.
    func report() throws -> (report: NeuralCollapseReport, text: String, images: String) {
        Compute.threads = threads
        let e = try PromptEvaluationJob(modelPath: model.model, promptPath: prompt, images: images.images, textOnly: textOnly).prepare()
        // A classifier made per image (CoCoOp) is measured with its class features averaged over the images.
        let text = classify(images: e.images, classifier: e.classifier).text
        if !text.data.allSatisfy({ $0.isFinite }) {
            if let err = nonFiniteWeightsError(path: model.model, tensors: try loadCLIPWeights(path: model.model).tensors) { throw err }
            throw PresentedError(message: "the text features of the \(e.textSource) are not finite; nothing can be measured")
        }
        let what = images.features ?? e.imageSource
        do {
            return (try NeuralCollapseReport.measure(images: e.images, labels: e.labels, text: text), e.textSource, what)
        } catch AnalysisError.emptyClass(let k) {
            throw ValidationError("\(what) has no images of class \(k) (\(e.classNames[k])); the class-mean measures need every class represented")
        } catch AnalysisError.tooFewClasses(let k) {
            throw ValidationError("\(what) has only \(k) class(es); the measures need at least 2")
        }
    }

    func run() throws {
        let (r, source, what) = try report()
        if json {
            print(try analysisJSON(r))
            return
        }
        func f(_ v: Double) -> String { String(format: "%.4f", v) }
        printTable("neural collapse of \(images.features.map { "\($0) (view 0)" } ?? what) against the \(source)", [
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
