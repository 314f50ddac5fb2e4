import ArgumentParser
import CLIP
import Datasets
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
    @Option(help: "coop, coop-csc, kgcoop, dekg, dapt-text, cocoop, npt (= coop+npt), cpt (= coop+cpt), or any of them +npt and/or +cpt; dapt, vpt, maple (and +npt, +cpt) train from images (`prompttune run`, or `train --augment per-iteration`).")
    var method: String = "coop"
    @Option(name: .customLong("n-ctx"), parsing: .unconditional, help: "Context vectors M, 1...\(TrainConfig.maxContextLength) (default: the method's).") var nCtx: Int?
    @Flag(help: "Class-specific contexts (CSC).") var csc = false
    @Option(help: "Class token position: end, middle or front.") var position: ClassTokenPosition?
    @Option(name: .customLong("ctx-init"), help: "Initialise the context from this text, e.g. \"a photo of a\".") var ctxInit: String?
    @Option(name: .customLong("kg-weight"), parsing: .unconditional, help: "KgCoOp's weight w (default 8).") var kgWeight: Float?
    @Option(name: .customLong("lambda-lc"), parsing: .unconditional, help: "NPT language-collapse weight (default 1).") var lambdaLC: Float?
    @Option(name: .customLong("lambda-mi"), parsing: .unconditional, help: "NPT modality-isomorphism weight (default 1).") var lambdaMI: Float?
    @Option(help: "NPT anchor rotation: aligned or random.") var etf: AnchorRotation?
    @Option(name: .customLong("beta-t"), parsing: .unconditional, help: "DAPT text dispersion weight (default 0.01).") var betaT: Float?
    @Option(parsing: .unconditional, help: "DAPT RBF temperature (default 2).") var tau: Float?
    @Option(name: .customLong("prompt-depth"), parsing: .unconditional,
            help: "MaPLe's prompt depth J, PromptSRC's depth of both towers: deep prompts in blocks 1..<J (default 9; their cross-dataset configs use 3).") var promptDepth: Int?
    @Option(name: .customLong("term"), parsing: .singleValue,
            help: ArgumentHelp("Set a loss term's weight (KEY=WEIGHT, e.g. kg=4) or parameter (KEY.PARAM=VALUE, e.g. inter.tau=1); repeatable, applied after the flags above.", valueName: "KEY[.PARAM]=VALUE"))
    var term: [String] = []

    /// The method with every override applied, or a clear error.
    func resolve() throws -> Method {
        if let nCtx {
            // Before any work: M sizes the context (M x width floats) and must fit the 77-token text context.
            try OptionLimits.range("--n-ctx", nCtx, 1...TrainConfig.maxContextLength,
                                   "a CLIP prompt is 77 tokens: SOS, the context, the class name, \".\" and EOT")
        }
        for (flag, value) in [("--kg-weight", kgWeight), ("--lambda-lc", lambdaLC), ("--lambda-mi", lambdaMI), ("--beta-t", betaT)] {
            try OptionLimits.nonNegativeFinite(flag, value)
        }
        if let tau, !(tau.isFinite && tau > 0) { throw ValidationError("--tau must be a positive, finite number (got \(tau))") }
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
        // The named flags are `--term` settings under older names.
        var settings: [(TermSetting, String)] = []
        for (flag, key, parameter, value) in [("--kg-weight", "kg", nil, kgWeight), ("--lambda-lc", "lc", nil, lambdaLC),
                                              ("--lambda-mi", "mi", nil, lambdaMI), ("--beta-t", "inter", nil, betaT),
                                              ("--tau", "inter", "tau", tau)] as [(String, String, String?, Float?)] {
            if let value { settings.append((TermSetting(term: key, parameter: parameter, value: Double(value)), flag)) }
        }
        for text in term {
            do { settings.append((try TermSetting(parsing: text), "--term \(text)")) } catch { throw ValidationError("\(error)") }
        }
        for (setting, flag) in settings {
            guard let i = m.terms.firstIndex(where: { $0.key == setting.term }) else {
                if flag.hasPrefix("--term") { throw ValidationError("\(flag): \(setting.problem(method: m.name) ?? "")") }
                throw ValidationError("\(flag) does not apply to --method \(method)")
            }
            if let problem = setting.problem(method: m.name) { throw ValidationError("\(flag): \(problem)") }
            if let parameter = setting.parameter {
                m.terms[i].parameters[parameter] = Float(setting.value)
            } else {
                m.terms[i].weight = Float(setting.value)
            }
        }
        if let promptDepth {
            guard m.maple != nil || m.promptsrc != nil else { throw ValidationError("--prompt-depth applies to --method maple and promptsrc") }
            guard promptDepth >= 1 else { throw ValidationError("--prompt-depth must be at least 1 (got \(promptDepth))") }
            m.maple?.promptDepth = promptDepth
            m.promptsrc?.textDepth = promptDepth
            m.promptsrc?.visionDepth = promptDepth
        }
        if let etf {
            guard m.anchors != nil else { throw ValidationError("--etf applies to NPT methods (add +npt to --method)") }
            m.anchors?.rotation = etf
        }
        return m
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a prompt on cached image features with the reference recipe (SGD, warm-up, cosine).",
        discussion: """
            By default the prompt trains on a features file's cached views (--features). With --augment per-iteration it \
            trains as CoOp does, from the dataset's images (--dataset, --root, --shots; --seed also draws the few-shot \
            images, as `features --seed`), each decoded, cropped, flipped and encoded afresh at every step; any method, \
            dapt and vpt included. Such a run traces each image's crop and flip. Every run checkpoints prompt.safetensors after each epoch.
            """)

    @OptionGroup var model: ModelOptions
    @Option(help: "Training features (from `prompttune features`).") var features: String?
    @Option(help: "Training images: views (the --features file's cached views) or per-iteration (--dataset's images augmented afresh at every step).")
    var augment: Augmentation = .views
    @Option(help: "With --augment per-iteration: the dataset to train on (see `prompttune datasets`).") var dataset: DatasetName?
    @Option(help: "With --augment per-iteration: folder holding the datasets in CoOp's layout (default: $DATA, else the current folder).")
    var root: String?
    @Option(parsing: .unconditional, help: "With --augment per-iteration: shots per class (default: all training images).") var shots: Int?
    @OptionGroup var methodOptions: MethodOptions
    @Option(help: "Output folder: config.json, prompt.safetensors (every epoch), initial.safetensors, history.json.") var out: String = "prompttune-run"
    @Option(parsing: .unconditional, help: "Epochs.") var epochs: Int = 50
    @Option(parsing: .unconditional, help: "Base learning rate.") var lr: Double = 0.002
    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Batch size.") var batchSize: Int = 32
    @Option(parsing: .unconditional, help: "Seed for the context draw, shuffling and view choice; with --augment per-iteration also the few-shot draw and the crops (0 or more).") var seed: UInt64 = 1
    @Option(help: "Hand template for zero-shot features, {} = class name (default: the dataset's, recorded in the features file).")
    var template: String?
    @Flag(help: "Continue from <out>/prompt.safetensors (or an earlier version's <out>/prompt.ptprompt).") var resume = false
    @Option(help: ArgumentHelp("Write one JSON line per step to FILE (sorted keys): epoch, step, lr, the batch's dataset indices, each image's cached view and every loss term; with --resume, appended. The initial context is saved as <out>/initial.safetensors.", valueName: "FILE"))
    var trace: String?
    @Option(help: ArgumentHelp("Write TensorBoard event files into DIR: every step's loss, loss terms, learning rate and batch accuracy, and each epoch's averages; with --resume, appended.", valueName: "DIR"))
    var tensorboard: String?
    @Option(parsing: .unconditional, help: "Threads for OpenBLAS (1...\(OptionLimits.maxThreads)).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: ArgumentHelp(PrecisionChoice.help)) var precision: PrecisionChoice = .fp32
    @Flag(help: "Print the final result as JSON.") var json = false

    func validate() throws {
        try OptionLimits.range("--epochs", epochs, 1...OptionLimits.maxEpochs)
        try OptionLimits.range("--batch-size", batchSize, 1...OptionLimits.maxBatchSize)
        try OptionLimits.positiveFinite("--lr", lr)
        try OptionLimits.threads(threads)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: out, isDirectory: &isDir), !isDir.boolValue {
            throw ValidationError("--out \(out) is a file; --out names a folder (it will hold config.json, prompt.safetensors and history.json)")
        }
        switch augment {
        case .views:
            guard features != nil else { throw ValidationError("give --features (or --augment per-iteration with --dataset)") }
            for (flag, given) in [("--dataset", dataset != nil), ("--root", root != nil), ("--shots", shots != nil)] where given {
                throw ValidationError("\(flag) goes with --augment per-iteration; with cached views the --features file says which images")
            }
        case .perIteration:
            guard dataset != nil else { throw ValidationError("--augment per-iteration trains from a dataset's images: give --dataset (and --root)") }
            if features != nil { throw ValidationError("--features and --augment per-iteration exclude each other: per-iteration decodes --dataset's images") }
            if let shots { try OptionLimits.range("--shots", shots, 1...OptionLimits.maxShots) }
            guard let s = Int(exactly: seed) else { throw ValidationError("--seed must be at most \(Int.max) with --augment per-iteration") }
            try OptionLimits.seed("--seed", s)
        }
        _ = try methodOptions.resolve()
    }

    func run() throws {
        Compute.threads = threads
        _ = try computeBackend(precision.compute)  // bf16 refused before anything is written where it cannot run
        let method = try methodOptions.resolve()
        // A run that fails before writing anything leaves no empty --out folder behind.
        let run = try removingEmptyFolderOnFailure(URL(fileURLWithPath: out)) { try prepare(method) }
        let trainer = run.tuner
        if let trace { trainer.trace = try TraceWriter(url: URL(fileURLWithPath: trace), append: resume) }
        let board = try tensorboard.map { try TensorBoardWriter(directory: URL(fileURLWithPath: $0), resumeStep: trainer.steps) }
        for w in trainer.warnings + run.warnings { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
        if run.resumed { FileHandle.standardError.write(Data("resuming after epoch \(trainer.epochsDone) of \(epochs)\n".utf8)) }
        let stepsPerEpoch = trainer.stepsPerEpoch
        let bar = ProgressBar(total: epochs * stepsPerEpoch, label: "train \(method.name)", unit: "step")
        try run.run(onStep: { r in
            board?.logStep(r)
            let terms = r.value.terms.sorted { $0.key < $1.key }.map { String(format: "%@ %.4f", $0.key, $0.value) }.joined(separator: " ")
            bar.update(r.epoch * stepsPerEpoch + r.step,
                       status: String(format: "epoch %d/%d lr %.2e loss %.4f (%@) acc %.1f%%", r.epoch + 1, epochs,
                                      r.learningRate, r.value.total, terms, 100 * r.value.accuracy))
        }, afterEpoch: { _ in
            guard let board, let last = trainer.history.last else { return }
            try board.rethrowDeferred()
            try board.addEpoch(last, step: trainer.steps)
        })
        bar.finish()
        guard let last = trainer.history.last else {
            throw PresentedError(message: "\(run.checkpoint.path): the run has no finished epoch to report; train again without --resume")
        }
        let summary: [String: Any] = ["prompt": run.checkpoint.path, "epochs": epochs, "final_loss": last.loss,
                                      "final_train_accuracy": last.accuracy, "method": method.name]
        if json { print(try jsonText(summary)) } else {
            printTable("trained \(method.name) for \(epochs) epochs", [
                ("prompt", run.checkpoint.path),
                ("last epoch", String(format: "loss %.4f, train accuracy %.1f%%", last.loss, 100 * last.accuracy)),
            ])
        }
    }
}

/// The images `eval` and `analyze` classify: a features file, or a dataset's split decoded and
/// encoded through the prompt's (prompted) image tower.
struct EvaluationImageOptions: ParsableArguments {
    @Option(help: "Features to classify (from `prompttune features`; view 0), encoded by the unprompted image tower.") var features: String?
    @Option(help: "Classify this dataset's images instead (see `prompttune datasets`): decoded, CLIP-preprocessed and encoded through the prompt's image tower, so methods with visual prompts (dapt, vpt) are evaluated as their run evaluated them.")
    var dataset: DatasetName?
    @Option(help: "With --dataset: folder holding the datasets in CoOp's layout (default: $DATA, else the current folder).") var root: String?
    @Option(help: "With --dataset: the split (train, val or test).") var split: SplitKind = .test
    @Option(help: "With --dataset: the classes, all, base (the first half) or new (the novel rest), as base-to-novel splits them.")
    var subset: ClassSubset = .all

    func validate() throws {
        switch (features, dataset) {
        case (nil, nil): throw ValidationError("give --features FILE, or --dataset D (with --root) to classify a dataset's images")
        case (.some, .some): throw ValidationError("--features and --dataset exclude each other: give one")
        case (.some, nil):
            for (flag, given) in [("--root", root != nil), ("--split", split != .test), ("--subset", subset != .all)] where given {
                throw ValidationError("\(flag) goes with --dataset; a --features file says which images it holds")
            }
        case (nil, .some): break
        }
    }

    var images: EvaluationImages {
        if let dataset {
            let root = URL(fileURLWithPath: self.root ?? ProcessInfo.processInfo.environment["DATA"] ?? FileManager.default.currentDirectoryPath)
            return .dataset(root: root, dataset: dataset, split: split, subset: subset)
        }
        return .features(path: features!)
    }
}

/// Class names, one per line, from `--classnames`.
func readClassNames(_ path: String) throws -> [String] {
    if let kind = nonRegularFileKind(path) { throw ValidationError("--classnames \(path) is \(kind), not a regular file") }
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read --classnames \(path)") }
    return text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accuracy and macro-F1 of a trained prompt on a features file or a dataset's images.",
        discussion: """
            Any method's prompt: PromptTune's prompt.safetensors (or an earlier version's prompt.ptprompt), or a CoOp, \
            KgCoOp or DAPT prompt_learner/model.pth.tar-N. A prompt that acts in the image tower (dapt, vpt) needs the \
            images: --dataset D --root R --split test gives the accuracy its run recorded.
            """)

    @OptionGroup var model: ModelOptions
    @Option(help: "Prompt checkpoint: prompt.safetensors from `train` or `run` (or an earlier version's prompt.ptprompt), or CoOp's, KgCoOp's or DAPT's prompt_learner/model.pth.tar-N (told apart by content).")
    var prompt: String
    @OptionGroup var images: EvaluationImageOptions
    @Option(help: "Class names, one per line, in label order (default: the features file's or the split's). For base-to-novel: the novel names.")
    var classnames: String?
    @Option(parsing: .unconditional, help: "Threads for OpenBLAS (1...\(OptionLimits.maxThreads)).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(name: .customLong("text-only"), help: "For a prompt that prompts the image tower (DAPT, VPT, MaPLe): evaluate its text side alone on the unprompted tower's features.")
    var textOnly = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws { try OptionLimits.threads(threads) }

    func run() throws {
        Compute.threads = threads
        print(try report(classNames: try classnames.map(readClassNames)))
    }

    /// What `run` prints: the JSON line with `--json`, else a table.
    func report(classNames names: [String]?) throws -> String {
        let job = PromptEvaluationJob(modelPath: model.model, promptPath: prompt, images: images.images, classNames: names, textOnly: textOnly)
        let e = try job.prepare()
        let result = evaluate(images: e.images, labels: e.labels, classifier: e.classifier, classNames: e.classNames)
        if json {
            return try jsonText(["accuracy": result.accuracy, "macro_f1": result.macroF1, "count": result.count,
                                 "per_class_accuracy": result.perClassAccuracy])
        }
        return String(format: "%@ on %@ (%d images, %d classes)\n  accuracy  %.2f%%\n  macro-F1  %.2f%%", prompt, images.features ?? e.imageSource,
                      result.count, e.classNames.count, 100 * result.accuracy, 100 * result.macroF1)
    }
}

func jsonObject<T: Encodable>(_ value: T) throws -> Any {
    try JSONSerialization.jsonObject(with: JSONEncoder().encode(value), options: [.fragmentsAllowed])
}
