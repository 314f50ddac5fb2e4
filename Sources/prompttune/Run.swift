import ArgumentParser
import CLIP
import Datasets
import Experiments
import Foundation
import PromptLearning
import TensorCore
import TensorIO

extension ProtocolKind: ExpressibleByArgument {}
extension ShotRule: ExpressibleByArgument {}
extension Augmentation: ExpressibleByArgument {}
extension ImbalanceProfile: ExpressibleByArgument {}

/// `prompttune run`: a grid of cells from flags or a plan, resumable, one cell at a time or all.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a grid of experiments (the papers' protocols over datasets, methods, shots, seeds and imbalance); resumable.",
        discussion: """
            The grid comes from --plan (a built-in name: \(BuiltInPlans.all.keys.sorted().joined(separator: ", ")); or a YAML \
            file with the same fields as the flags) and/or the flags, which replace the plan's fields. Lists take commas \
            or repeated flags. Cells are numbered from 0 (`--list` prints them); `--cell N` runs one of them, so a \
            scheduler can run cells in parallel. Finished cells are skipped, an interrupted cell resumes from its \
            last epoch, and a failing cell is recorded with its error while the grid goes on. A cell is keyed on its \
            spec, the model, the precision and its data: another model or precision runs into its own folder \
            (runs/<model>-<digest>/), and changed data runs the cell again. A plan file may hold only a recipe \
            (epochs, lr, overrides, ...) and take datasets and methods from the flags; a key it does not know is \
            an error. Every dataset and target is looked up before anything runs. At the end the results table is \
            printed and results.md, results.csv, results.tex and report.html are written into --out. Exit status: 0 done, 3 some \
            cells failed (recorded), 64 a plan, option or missing dataset error (nothing ran), 1 any other error.
            """)

    @Option(help: "A built-in plan name or a YAML plan file.") var plan: String?
    @Option(name: .customLong("protocol"), help: "few-shot, base-to-novel, cross-dataset, domain-generalization or long-tailed.")
    var protocolKind: ProtocolKind?

    @Option(name: .customLong("shot-rule"), help: "Many / medium / few-shot rule of the long-tailed protocol: lift (LIFT and BALLAD: many > 100, few < 20 training images; the default) or oltr (OLTR's: many >= 100, few <= 20).")
    var shotRule: ShotRule?
    @Option(parsing: .singleValue, help: "Training datasets (comma-separated or repeated).") var datasets: [String] = []
    @Option(parsing: .singleValue, help: "Test datasets of cross-dataset / domain-generalization (default: the protocol's).")
    var targets: [String] = []
    @Option(parsing: .singleValue, help: "Methods: zeroshot, linear-probe, coop, coop-csc, kgcoop, dekg, dapt-text, cocoop, dapt, vpt, maple, promptsrc, any +npt and/or +cpt; npt, cpt.")
    var methods: [String] = []
    @Option(parsing: .unconditionalSingleValue, help: "Shots per class (e.g. 1,2,4,8,16); under the long-tailed protocol a cap per class, 0 (its default) for every image.") var shots: [String] = []
    @Option(parsing: .unconditionalSingleValue, help: "Seeds (each derives the few-shot draw, the views and the trainer).") var seeds: [String] = []
    @Option(parsing: .unconditionalSingleValue, help: "Class-imbalance taus in (0, 1]; 1 = balanced.") var imbalance: [String] = []
    @Option(name: .customLong("imbalance-profile"),
            help: "How --imbalance thins the training draws: tau (NPT's: label order, 16-shot head, n_k = max(1, floor(16 tau^(k/(K-1))))) or candle (Candle's: classes ranked by count, n_i = int(max(img_max r^(i/(C-1)), 1)); --shots 0 draws from whole splits).")
    var imbalanceProfile: ImbalanceProfile?
    @Option(help: "CLIP checkpoint (default: the plan's, else the demonstration model models/fashion-clip/model.pt).") var model: String?
    @Option(help: "Folder holding the datasets in CoOp's layout (default: $DATA, else the current folder).") var root: String?
    @Option(help: "Results folder (default: results/<plan name or protocol>).") var out: String?
    @Option(parsing: .unconditional, help: "Epochs for every trained method (default: the recipe's).") var epochs: Int?
    @Option(parsing: .unconditional, help: "Learning rate for every trained method.") var lr: Double?
    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Batch size for every trained method.") var batchSize: Int?
    @Option(parsing: .unconditional, help: "Augmented training views per image (default: 4).") var views: Int?
    @Option(name: .customLong("term"), parsing: .singleValue,
            help: ArgumentHelp("Set a loss term's weight (KEY=WEIGHT, e.g. kg=4) or parameter (KEY.PARAM=VALUE, e.g. inter.tau=1) for every method of the grid that has the term; repeatable.", valueName: "KEY[.PARAM]=VALUE"))
    var term: [String] = []
    @Option(help: "Training images: views (the --views cached views, the default) or per-iteration (CoOp's: decoded, cropped, flipped and encoded afresh at every step; slower, see docs/EXPERIMENTS.md). dapt and vpt always augment per iteration.")
    var augment: Augmentation?
    @Option(name: .customLong("nc-every"), parsing: .unconditional, help: "Record the neural-collapse measures every E epochs (0: at the end only).")
    var ncEvery: Int?
    @Option(parsing: .unconditionalSingleValue,
            help: ArgumentHelp("Run only these cells: numbers from --list and ranges, e.g. 3, 0-7 or 0-3,5 (repeatable).", valueName: "N[-M],..."))
    var cell: [String] = []
    @Flag(help: "Print the grid's cells (number, identifier, and where the model and datasets are there: estimated time, peak memory, features cached or to encode, measured on this machine) and exit.") var list = false
    @Flag(name: .customLong("no-coop-cache"), help: "Draw few-shot sets anew even where CoOp's split_fewshot cache exists.")
    var noCoopCache = false
    @Flag(name: .customLong("no-report"), help: "Do not print the table or write the report at the end.") var noReport = false
    @Option(help: ArgumentHelp("Append one JSON line per training step of every trained cell that runs to FILE (sorted keys): cell, epoch, step, lr, the batch's dataset indices, each image's crop box and flip (dapt, vpt, --augment per-iteration) or cached view, and every loss term.", valueName: "FILE"))
    var trace: String?
    @Option(help: ArgumentHelp("Write TensorBoard event files, one run per cell in DIR/<model>/<cell identifier> (as under runs/): every step's loss, loss terms, learning rate and batch accuracy, each epoch's averages, the NC measures (every --nc-every epochs and at the end) and the cell's accuracies; a resumed cell appends.", valueName: "DIR"))
    var tensorboard: String?
    @Flag(name: .customLong("features-only"), help: "Make the features files of the cells (each once) and stop: no training. The first job of a --slurm grid.")
    var featuresOnly = false
    @OptionGroup var slurm: SlurmOptions
    @OptionGroup var imageOptions: ImageOptions
    @Option(help: ArgumentHelp(PrecisionChoice.help + " Records and features of each precision are kept apart."))
    var precision: PrecisionChoice = .fp32
    @Option(parsing: .unconditional, help: "Threads (1...\(OptionLimits.maxThreads)).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        if plan == nil && (datasets.isEmpty || methods.isEmpty) {
            throw ValidationError("give --plan, or at least --datasets and --methods")
        }
        if let epochs { try OptionLimits.range("--epochs", epochs, 1...OptionLimits.maxEpochs) }
        if let batchSize { try OptionLimits.range("--batch-size", batchSize, 1...OptionLimits.maxBatchSize) }
        if let views { try OptionLimits.range("--views", views, 1...OptionLimits.maxViews) }
        if let lr { try OptionLimits.positiveFinite("--lr", lr) }
        if let ncEvery { try OptionLimits.range("--nc-every", ncEvery, 0...OptionLimits.maxEpochs) }
        _ = try cellNumbers()
        try OptionLimits.threads(threads)
    }

    /// The cells `--cell` names (empty: all of them).
    func cellNumbers() throws -> [Int] {
        do { return try CellNumbers.parse(cell) } catch let e as PlanError { throw ValidationError(e.description) }
    }

    /// The plan with every flag applied.
    func resolvedPlan() throws -> GridPlan {
        var p: GridPlan
        if let plan {
            if BuiltInPlans.all[plan] != nil {
                p = try BuiltInPlans.plan(named: plan)
            } else if FileManager.default.fileExists(atPath: plan) {
                guard let text = try? String(contentsOfFile: plan, encoding: .utf8) else {
                    throw ValidationError("cannot read the plan file \(plan)")
                }
                p = try GridPlan.read(yaml: text, source: plan)
                if p.name == nil { p.name = URL(fileURLWithPath: plan).deletingPathExtension().lastPathComponent }
            } else {
                throw ValidationError("--plan \(plan) is neither a built-in plan (\(BuiltInPlans.all.keys.sorted().joined(separator: ", "))) nor a file")
            }
        } else {
            p = GridPlan(protocolKind: .fewShot, datasets: [], methods: [], shots: [protocolKind == .longTailed ? 0 : 16], seeds: [1, 2, 3])
        }
        func list(_ values: [String]) -> [String] {
            values.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        func numbers<T: LosslessStringConvertible>(_ values: [String], _ flag: String) throws -> [T] {
            try list(values).map {
                guard let v = T($0) else { throw ValidationError("\(flag): '\($0)' is not a number") }
                return v
            }
        }
        if let protocolKind { p.protocolKind = protocolKind }
        if !datasets.isEmpty { p.datasets = list(datasets) }
        if !targets.isEmpty { p.targets = list(targets) }
        if !methods.isEmpty { p.methods = list(methods) }
        if !shots.isEmpty { p.shots = try numbers(shots, "--shots") }
        if !seeds.isEmpty {
            p.seeds = try numbers(seeds, "--seeds")
            for s in p.seeds { try OptionLimits.seed("--seeds", s) }
        }
        if !imbalance.isEmpty { p.imbalance = try numbers(imbalance, "--imbalance") }
        if let imbalanceProfile { p.imbalanceProfile = imbalanceProfile }
        if let model { p.model = model }
        if let root { p.root = root }
        if let out { p.out = out }
        if let epochs { p.all.epochs = epochs }
        if let lr { p.all.lr = lr }
        if let batchSize { p.all.batchSize = batchSize }
        if let views { p.all.views = views }
        if let ncEvery { p.all.ncEvery = ncEvery }
        for text in term { try p.apply(TermSetting(parsing: text)) }
        if let augment { p.all.augment = augment }
        if let shotRule { p.shotRule = shotRule }
        try p.validate()
        return p
    }

    func run() throws {
        Compute.threads = threads
        try imageOptions.apply()
        let backend = try computeBackend(precision.compute)
        let plan = try resolvedPlan()
        let cells = try plan.cells()
        if list { return listCells(cells, plan: plan) }
        let (modelPath, out, root) = locations(plan)
        let only = try cellNumbers()
        if slurm.slurm {
            if featuresOnly { throw ValidationError("--features-only runs here; --slurm submits the whole grid (its first job makes the features): give one of them") }
            return try submitToSlurm(plan, only: only)
        }
        if featuresOnly {
            let runner = try ExperimentRunner(modelPath: modelPath, root: root, out: out, trainingPrecision: precision.training,
                                              backend: backend)
            runner.useCoOpCache = !noCoopCache
            return try prepareFeaturesOnly(runner, cells: cells, only: only)
        }
        let display = GridDisplay()
        let records = try removingEmptyFolderOnFailure(out) { () -> [RunRecord] in
            let runner = try ExperimentRunner(modelPath: modelPath, root: root, out: out, trainingPrecision: precision.training,
                                              backend: backend, events: display.handle)
            runner.useCoOpCache = !noCoopCache
            // Every dataset and target is looked up before anything is written.
            try runner.checkDatasets(only.isEmpty ? cells : only.filter { cells.indices.contains($0) }.map { cells[$0] })
            if let trace { runner.trace = try TraceWriter(url: URL(fileURLWithPath: trace), append: true) }
            runner.tensorboard = tensorboard.map { URL(fileURLWithPath: $0) }
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            if only.isEmpty { try writeAtomically(Data(plan.yaml().utf8), to: ResultsFolder(out).plan) }
            return try runner.run(cells, only: only.isEmpty ? nil : only)
        }
        let failed = records.filter { $0.status == .failed }.count
        FileHandle.standardError.write(Data("grid: \(records.count - failed) cells done, \(failed) failed; records under \(ResultsFolder(out).runs.path)\n".utf8))
        if !noReport && only.isEmpty {
            let summary = try writeReport(directory: out)
            for u in summary.unreadable { FileHandle.standardError.write(Data("warning: left out \(u.url.path): \(u.reason)\n".utf8)) }
            print(renderMarkdownTables(records: try loadRunRecords(under: out)))   // ends with a newline: a blank line follows
            fflush(stdout)
            FileHandle.standardError.write(Data("report: \(summary.written.map(\.path).joined(separator: ", "))\n".utf8))
        }
        if failed > 0 { throw ExitCode(3) }
    }
}

/// Progress on standard error: a grid line per cell (cells done / total, time left) above the
/// cell's own progress bars (features, then training steps).
final class GridDisplay {
    private let start = Date()
    private var ranCells = 0
    private var ranTime = 0.0
    private var cellStart = Date()
    private var bar: ProgressBar?
    private var barLabel = ""

    func handle(_ event: RunEvent) {
        switch event {
        case .cellStarted(let index, let position, let total, let spec):
            cellStart = Date()
            let left = ranCells > 0 ? ProgressBar.clock(ranTime / Double(ranCells) * Double(total - position)) : "--:--"
            say("[grid \(position + 1)/\(total), \(ProgressBar.clock(Date().timeIntervalSince(start))) elapsed, ~\(left) left] cell \(index): \(spec.identifier)")
        case .cellSkipped(let index, let position, let total, let record):
            say("[grid \(position + 1)/\(total)] cell \(index): \(record.spec.identifier) already done, skipped")
        case .features(let label, let done, let total):
            let key = "features \(label)"
            if barLabel != key { bar = ProgressBar(total: total, label: key, unit: "img"); barLabel = key }
            bar?.update(done)
            if done >= total { bar?.finish(); bar = nil; barLabel = "" }
        case .step(let r, let epochs):
            if barLabel != "train" { bar = ProgressBar(total: epochs * r.stepsPerEpoch, label: "  train", unit: "step"); barLabel = "train" }
            bar?.update(r.epoch * r.stepsPerEpoch + r.step,
                        status: String(format: "epoch %d/%d loss %.4f acc %.1f%%", r.epoch + 1, epochs, r.value.total, 100 * r.value.accuracy))
        case .resumed(let done, let epochs):
            say("  resumed from its checkpoint after epoch \(done) of \(epochs)")
        case .cellFinished(let index, _, _, let record):
            if barLabel == "train" { bar?.finish() }
            bar = nil; barLabel = ""
            ranCells += 1
            ranTime += Date().timeIntervalSince(cellStart)
            if record.status == .failed {
                say("  cell \(index) FAILED: \(record.error ?? "unknown error") (recorded; the grid goes on)")
            } else {
                let acc = record.accuracy.map { String(format: "%.2f%%", 100 * $0) } ?? "-"
                say("  cell \(index) done in \(ProgressBar.clock(record.timings.total)): accuracy \(acc)")
            }
        }
    }

    private func say(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
}
