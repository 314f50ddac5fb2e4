import ArgumentParser
import CLIP
import Experiments
import Features
import Foundation
import PromptLearning
import TensorCore
import TensorIO

extension ClassTokenPosition: ExpressibleByArgument {}
extension AnchorRotation: ExpressibleByArgument {}

/// Method options shared by `train` (and later protocol runners).
struct MethodOptions: ParsableArguments {
    @Option(help: "coop, coop-csc, kgcoop, dapt-text, npt (= coop+npt), or any of them +npt.")
    var method: String = "coop"
    @Option(name: .customLong("n-ctx"), help: "Context vectors M (default: the method's).") var nCtx: Int?
    @Flag(help: "Class-specific contexts (CSC).") var csc = false
    @Option(help: "Class token position: end, middle or front.") var position: ClassTokenPosition?
    @Option(name: .customLong("ctx-init"), help: "Initialise the context from this text, e.g. \"a photo of a\".") var ctxInit: String?
    @Option(name: .customLong("kg-weight"), help: "KgCoOp's weight w (default 8).") var kgWeight: Float?
    @Option(name: .customLong("lambda-lc"), help: "NPT language-collapse weight (default 1).") var lambdaLC: Float?
    @Option(name: .customLong("lambda-mi"), help: "NPT modality-isomorphism weight (default 1).") var lambdaMI: Float?
    @Option(help: "NPT anchor rotation: aligned or random.") var etf: AnchorRotation?
    @Option(name: .customLong("beta-t"), help: "DAPT text dispersion weight (default 0.01).") var betaT: Float?
    @Option(help: "DAPT RBF temperature (default 2).") var tau: Float?

    /// The method with every override applied, or a clear error.
    func resolve() throws -> Method {
        var m = try Method.named(method)
        if let ctxInit {
            m.prompt.initText = ctxInit
            let words = ctxInit.replacingOccurrences(of: "_", with: " ").split(separator: " ").count
            if let nCtx, nCtx != words {
                throw ValidationError("--ctx-init '\(ctxInit)' has \(words) words but --n-ctx is \(nCtx); leave --n-ctx out or make them agree")
            }
            m.prompt.contextLength = words
        } else if let nCtx {
            if m.prompt.initText != nil { m.prompt.initText = nil }  // an explicit M replaces the method's init text
            m.prompt.contextLength = nCtx
        }
        if m.prompt.contextLength < 1 { throw ValidationError("--n-ctx must be at least 1") }
        if csc { m.prompt.classSpecific = true }
        if let position { m.prompt.position = position }
        func set(_ key: String, _ value: Float?, _ flag: String) throws {
            guard let value else { return }
            guard let i = m.terms.firstIndex(where: { $0.key == key }) else {
                throw ValidationError("\(flag) does not apply to --method \(method)")
            }
            switch m.terms[i] {
            case .knowledgeConsistency: m.terms[i] = .knowledgeConsistency(weight: value)
            case .languageCollapse: m.terms[i] = .languageCollapse(weight: value)
            case .modalityIsomorphism: m.terms[i] = .modalityIsomorphism(weight: value)
            case .interClassDispersion(let w, let t): m.terms[i] = flag == "--tau" ? .interClassDispersion(weight: w, tau: value) : .interClassDispersion(weight: value, tau: t)
            }
        }
        try set("kg", kgWeight, "--kg-weight")
        try set("lc", lambdaLC, "--lambda-lc")
        try set("mi", lambdaMI, "--lambda-mi")
        try set("inter", betaT, "--beta-t")
        try set("inter", tau, "--tau")
        if let etf {
            guard m.anchors != nil else { throw ValidationError("--etf applies to NPT methods (add +npt to --method)") }
            m.anchors?.rotation = etf
        }
        return m
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a prompt on cached image features with the reference recipe (SGD, warm-up, cosine).")

    @OptionGroup var model: ModelOptions
    @Option(help: "Training features (from `prompttune features`).") var features: String
    @OptionGroup var methodOptions: MethodOptions
    @Option(help: "Output folder: config.json, prompt.ptprompt (every epoch), history.json.") var out: String = "prompttune-run"
    @Option(help: "Epochs.") var epochs: Int = 50
    @Option(help: "Base learning rate.") var lr: Double = 0.002
    @Option(name: .customLong("batch-size"), help: "Batch size.") var batchSize: Int = 32
    @Option(help: "Seed for the context draw, shuffling and view choice.") var seed: UInt64 = 1
    @Option(help: "Hand template for zero-shot features, {} = class name (default: the dataset's, recorded in the features file).")
    var template: String?
    @Flag(help: "Continue from <out>/prompt.ptprompt.") var resume = false
    @Option(help: "Threads for OpenBLAS.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print the final result as JSON.") var json = false

    func validate() throws {
        if epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if !(lr > 0) { throw ValidationError("--lr must be positive") }
        _ = try methodOptions.resolve()
    }

    func run() throws {
        Compute.threads = threads
        let method = try methodOptions.resolve()
        let job = TrainingJob(modelPath: model.model, featuresPath: features, method: method, epochs: epochs, learningRate: lr,
                              batchSize: batchSize, seed: seed, template: template, folder: RunFolder(URL(fileURLWithPath: out)),
                              resume: resume)
        let run = try job.prepare()
        let trainer = run.trainer
        for w in trainer.warnings { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
        if run.resumed { FileHandle.standardError.write(Data("resuming after epoch \(trainer.epochsDone) of \(epochs)\n".utf8)) }
        let stepsPerEpoch = trainer.stepsPerEpoch
        let bar = ProgressBar(total: epochs * stepsPerEpoch, label: "train \(method.name)", unit: "step")
        try run.run(onStep: { r in
            let terms = r.value.terms.sorted { $0.key < $1.key }.map { String(format: "%@ %.4f", $0.key, $0.value) }.joined(separator: " ")
            bar.update(r.epoch * stepsPerEpoch + r.step,
                       status: String(format: "epoch %d/%d lr %.2e loss %.4f (%@) acc %.1f%%", r.epoch + 1, epochs,
                                      r.learningRate, r.value.total, terms, 100 * r.value.accuracy))
        })
        bar.finish()
        guard let last = trainer.history.last else {
            throw ValidationError("the run in \(out) has no finished epoch to report")
        }
        let summary: [String: Any] = ["prompt": run.folder.checkpoint.path, "epochs": epochs, "final_loss": last.loss,
                                      "final_train_accuracy": last.accuracy, "method": method.name]
        if json { print(jsonLine(summary)) } else {
            printTable("trained \(method.name) for \(epochs) epochs", [
                ("prompt", run.folder.checkpoint.path),
                ("last epoch", String(format: "loss %.4f, train accuracy %.1f%%", last.loss, 100 * last.accuracy)),
            ])
        }
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Accuracy and macro-F1 of a trained prompt on a features file.")

    @OptionGroup var model: ModelOptions
    @Option(help: "Prompt checkpoint from `prompttune train`.") var prompt: String
    @Option(help: "Features to classify.") var features: String
    @Option(help: "Class names, one per line, in label order (default: the features file's). For base-to-novel: the novel names.")
    var classnames: String?
    @Option(help: "Threads for OpenBLAS.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        Compute.threads = threads
        var names: [String]?
        if let classnames {
            guard let text = try? String(contentsOfFile: classnames, encoding: .utf8) else {
                throw ValidationError("cannot read --classnames \(classnames)")
            }
            names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        print(try report(classNames: names))
    }

    /// What `run` prints: the JSON line with `--json`, else a table.
    func report(classNames names: [String]?) throws -> String {
        let (result, used) = try PromptEvaluationJob(modelPath: model.model, promptPath: prompt, featuresPath: features, classNames: names).run()
        if json {
            return jsonLine(["accuracy": result.accuracy, "macro_f1": result.macroF1, "count": result.count,
                             "per_class_accuracy": result.perClassAccuracy])
        }
        return String(format: "%@ on %@ (%d images, %d classes)\n  accuracy  %.2f%%\n  macro-F1  %.2f%%", prompt, features,
                      result.count, used.count, 100 * result.accuracy, 100 * result.macroF1)
    }
}

func jsonObject<T: Encodable>(_ value: T) throws -> Any {
    try JSONSerialization.jsonObject(with: JSONEncoder().encode(value), options: [.fragmentsAllowed])
}
