import Analysis
import CLIP
import Datasets
import Foundation
import Imaging
import PromptLearning
import TensorCore
import TensorIO

/// Measuring the rates `CostEstimator` lacks: real work on this machine with synthetic inputs of
/// the cells' shapes (random pixels at the model's resolution, random features of its width, the
/// cells' own class names and templates), and a few real images of each dataset for decoding.
extension CostEstimator {
    /// Measures into `r` whatever `plans` need and it lacks; returns what was measured.
    func calibrate(_ plans: [CellPlan], rates r: inout MachineRates) throws -> [String] {
        var done: [String] = []
        if r.processBytes == nil || r.loadPeakBytes == nil {
            // Before any piece resets it, the high-water mark is the model loading's.
            r.loadPeakBytes = ProcessMemory.field("VmHWM")
            ProcessMemory.trim()
            r.processBytes = ProcessMemory.resident
            done.append("process memory")
        }
        // Each method configuration at the class counts of its cells' training and test sets.
        var order: [String] = []
        var needs: [String: (trained: CellPlan.Trained?, names: [Int: ([String], String)])] = [:]
        for p in plans {
            let key: String, trained: CellPlan.Trained?
            switch p.kind {
            case .probe: continue
            case .zeroShot(let k): (key, trained) = (k, nil)
            case .trained(let t): (key, trained) = (t.key, t)
            }
            if needs[key] == nil { order.append(key); needs[key] = (trained, [:]) }
            for f in [p.files[0]] + p.tests where needs[key]!.names[f.classes] == nil { needs[key]!.names[f.classes] = (f.classNames, f.template) }
        }
        let work = order.map { key in
            (key, Self.classCountsToMeasure(measured: r.method(key)?.points.map(\.classes) ?? [], needed: Set(needs[key]!.names.keys)))
        }.filter { !$0.1.isEmpty }
        // The towers run once before any piece is measured, so each piece's peak is its own.
        let imagePrompts = plans.contains { if case .trained(let t) = $0.kind { return t.config.method.needsImages }; return false }
        if r.encode == nil || r.encodeRepeatedPeakBytes == nil || !work.isEmpty || r.packed == nil || (imagePrompts && r.packed?.imageBackward == nil) {
            if try warmUp(imageBackward: imagePrompts, rates: &r) { done.append("packed weights") }
        }
        if r.encode == nil || r.encodeRepeatedPeakBytes == nil {
            let (encode, repeated) = measureEncode()
            (r.encode, r.encodeRepeatedPeakBytes) = (encode, repeated)
            done.append("image tower")
        }
        var samples: [(String, [Datum])] = []
        for p in plans {
            for f in p.files where !f.sample.isEmpty && !samples.contains(where: { $0.0 == f.dataset }) { samples.append((f.dataset, f.sample)) }
        }
        for (dataset, items) in samples where r.decode[dataset] == nil {
            r.decode[dataset] = try measureDecode(dataset, items)
            done.append("decoding \(dataset)")
        }
        if r.probe == nil, plans.contains(where: { if case .probe = $0.kind { return true }; return false }) {
            r.probe = try measureProbe()
            done.append("linear probe")
        }
        if r.analysis == nil, let k = plans.map(\.maxClasses).max(), k >= 2 {
            r.analysis = try measureAnalysis(classes: min(k, 100))
            done.append("neural-collapse measures")
        }
        for (key, ks) in work {
            let need = needs[key]!
            let existing = r.method(key)
            var m = existing ?? MethodRates(key: key, points: [], epochSeconds: 0, perImageClassifier: false, promptedEncode: nil)
            for (i, k) in ks.enumerated() {
                let (names, template) = need.names[k]!
                if let t = need.trained {
                    try measureMethod(t, names: names, template: template, into: &m, first: existing == nil && i == 0)
                } else {
                    let c = ProcessMemory.measure { zeroShotTextFeatures(model: runner.model, tokenizer: runner.tokenizer, template: template, classNames: names) }
                    m.points.append(MethodPoint(classes: k, setupSeconds: 0, stepSeconds: 0, stepPeakBytes: 0,
                                                classifier: PieceRate(seconds: c.seconds, peakBytes: c.peakBytes)))
                }
            }
            if let i = r.methods.firstIndex(where: { $0.key == key }) { r.methods[i] = m } else { r.methods.append(m) }
            let parts = key.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let name = parts.count > 2 ? "\(parts[0]) (\(parts[1...2].joined(separator: ", ")))" : key
            done.append("\(name) at \(ks.map(String.init).joined(separator: " and ")) classes")
        }
        return done
    }

    /// Runs each tower forward and backward once (a CoOp step, an image forward, with
    /// `imageBackward` a VPT step: 2 classes, 1 image), so that what a first run leaves resident
    /// for good (the packed weight copies) is not counted in the peak of whichever piece is
    /// measured first; records those bytes where the rates lack them. Returns whether it did.
    func warmUp(imageBackward: Bool, rates r: inout MachineRates) throws -> Bool {
        let model = runner.model, res = model.config.imageResolution, names = ["cat", "dog"]
        var rng = SeededGenerator(seed: 19)
        func step(_ method: Method, images: Bool) throws {
            let data: TrainingData = images
                ? .images(SyntheticImages(pixels: Tensor.randomNormal([1, 3, res, res], using: &rng), labels: [0], classNames: names))
                : .features(LabeledFeatures(features: Tensor.randomNormal([1, 1, model.config.embedDim], using: &rng), labels: [0], classNames: names))
            let tuner = try PromptTuner(model: model, tokenizer: runner.tokenizer, data: data,
                                        config: TrainConfig(method: method, epochs: 1, batchSize: 1, precision: runner.trainingPrecision))
            try tuner.step(try tuner.loadBatch([0], epoch: 0), lr: 1e-6)
        }
        ProcessMemory.trim()
        let start = ProcessMemory.resident
        _ = zeroShotTextFeatures(model: model, tokenizer: runner.tokenizer, template: "a photo of a {}.", classNames: names)
        try step(.coop, images: false)
        ProcessMemory.trim()
        let text = ProcessMemory.resident
        _ = model.image.forward(pixels: Tensor.randomNormal([1, 3, res, res], using: &rng)).0
        ProcessMemory.trim()
        let image = ProcessMemory.resident
        var backward = image
        if imageBackward {
            try step(.vpt, images: true)
            ProcessMemory.trim()
            backward = ProcessMemory.resident
        }
        if r.packed == nil {
            r.packed = PackedBytes(text: max(0, text - start), imageForward: max(0, image - text),
                                   imageBackward: imageBackward ? max(0, backward - image) : nil)
            return true
        }
        if imageBackward && r.packed?.imageBackward == nil {
            r.packed?.imageBackward = max(0, backward - image)
            return true
        }
        return false
    }

    /// The class counts to measure a method at: the smallest and largest needed when it has none;
    /// otherwise one beyond twice the measured range, or, with a single point measured, the needed
    /// count farthest from it (a line needs two).
    static func classCountsToMeasure(measured: [Int], needed: Set<Int>) -> [Int] {
        guard let lo = needed.min(), let hi = needed.max() else { return [] }
        guard let mlo = measured.min(), let mhi = measured.max() else { return lo == hi ? [lo] : [lo, hi] }
        var want: [Int] = []
        if hi > 2 * mhi { want.append(hi) }
        if 2 * lo < mlo { want.append(lo) }
        if want.isEmpty && mlo == mhi && needed.contains(where: { $0 != mlo }) {
            want.append(abs(hi - mlo) >= abs(lo - mlo) ? hi : lo)
        }
        return want
    }

    /// The frozen image tower on a batch of 8 random images: seconds and peak bytes per image; and
    /// the peak per image of two batches of 8 and one of 4 through one workspace.
    func measureEncode() -> (PieceRate, repeatedPeakBytes: Int) {
        let r = runner.model.config.imageResolution, batch = 8
        var rng = SeededGenerator(seed: 11)
        let pixels = Tensor.randomNormal([batch, 3, r, r], using: &rng)
        let workspace = Workspace(backend: runner.model.backend)
        // The first forward allocates the workspace: its peak is the one extraction pays once per chunk.
        let first = ProcessMemory.measure { runner.model.image.forward(pixels: pixels, workspace: workspace).0 }
        let seconds = timedRuns(first.seconds) { _ = runner.model.image.forward(pixels: pixels, workspace: workspace).0 }
        // Several passes through one workspace (the views of a chunk) peak higher than one.
        let repeated = ProcessMemory.measure { () -> Void in
            let workspace = Workspace(backend: runner.model.backend)
            for _ in 0..<2 { _ = runner.model.image.forward(pixels: pixels, workspace: workspace).0 }
            _ = runner.model.image.forward(pixels: pixels.slice(rows: 0..<(batch / 2)), workspace: workspace).0
        }
        return (PieceRate(seconds: seconds / Double(batch), peakBytes: first.peakBytes / batch), repeated.peakBytes / batch)
    }

    /// Decoding and preprocessing (test transform) a few real images of a dataset, repeated to
    /// keep every core busy as extraction does: wall seconds per image.
    func measureDecode(_ dataset: String, _ items: [Datum]) throws -> Double {
        let source = try runner.store.dataset(try runner.datasetName(dataset)).images
        let r = runner.model.config.imageResolution
        let count = max(8, 2 * ProcessInfo.processInfo.activeProcessorCount)
        let seconds = wallSeconds {
            DispatchQueue.concurrentPerform(iterations: count) { i in
                _ = try? clipPreprocess(source.image(for: items[i % items.count]), resolution: r)
            }
        }
        return seconds / Double(count)
    }

    /// CoOp's C search on random features of the model's width (10 classes, 8 training and 4
    /// validation images each): seconds per (training image x class).
    func measureProbe() throws -> Double {
        let d = runner.model.config.embedDim, classes = 10
        var rng = SeededGenerator(seed: 13)
        let means = Tensor.randomNormal([classes, d], using: &rng)
        func draw(_ perClass: Int) -> (Tensor, [Int]) {
            let labels = (0..<(classes * perClass)).map { $0 % classes }
            let noise = Tensor.randomNormal([labels.count, d], using: &rng)
            var data = noise.data
            for (i, k) in labels.enumerated() { for j in 0..<d { data[i * d + j] += means[k * d + j] } }
            return (Tensor(shape: [labels.count, d], data: data), labels)
        }
        let (train, trainLabels) = draw(8), (val, valLabels) = draw(4)
        let seconds = try wallSeconds {
            _ = try LinearProbe.search(trainFeatures: train, trainLabels: trainLabels, valFeatures: val, valLabels: valLabels, classes: classes)
        }
        return seconds / Double(trainLabels.count * classes)
    }

    /// The neural-collapse measures of random features (4 images of each of `classes` classes):
    /// seconds per K x D x (N + K), the measures' per-image scores against every class and class
    /// geometry.
    func measureAnalysis(classes k: Int) throws -> Double {
        let d = runner.model.config.embedDim, n = 4 * k
        var rng = SeededGenerator(seed: 23)
        let images = Tensor.randomNormal([n, d], using: &rng), text = Tensor.randomNormal([k, d], using: &rng)
        let seconds = try wallSeconds { _ = try NeuralCollapseReport.measure(images: images, labels: (0..<n).map { $0 % k }, text: text) }
        return seconds / Double(k * d * (n + k))
    }

    /// One method configuration at `names.count` classes: building the trainer, a warm-up step
    /// and timed steps on a synthetic batch (random features, or random pixels where the cell
    /// reads images), the classifier, and at the first point the checkpoint write and the
    /// prompted tower's forward (two batches of 8 and one of 4 through one workspace).
    func measureMethod(_ t: CellPlan.Trained, names: [String], template: String, into m: inout MethodRates, first: Bool) throws {
        let model = runner.model
        let k = names.count, b = t.batch, d = model.config.embedDim, r = model.config.imageResolution
        var rng = SeededGenerator(seed: 17)
        let labels = (0..<b).map { $0 % k }
        let data: TrainingData = t.usesImages
            ? .images(SyntheticImages(pixels: Tensor.randomNormal([b, 3, r, r], using: &rng), labels: labels, classNames: names))
            : .features(LabeledFeatures(features: Tensor.randomNormal([1, b, d], using: &rng), labels: labels, classNames: names))
        let prototypes = t.config.method.needsPrototypes ? L2Normalize.forward(Tensor.randomNormal([k, d], using: &rng)).0 : nil
        var config = t.config
        config.template = template
        // A learning rate that keeps random inputs finite: the step's cost does not depend on it.
        let lr = 1e-6
        var tuner: PromptTuner?
        var setup = 0.0, step = 0.0
        let trained = try ProcessMemory.measure { () throws -> Void in
            setup = try wallSeconds {
                tuner = try PromptTuner(model: model, tokenizer: runner.tokenizer, data: data, config: config, prototypes: prototypes)
            }
            let batch = try tuner!.loadBatch(Array(0..<b), epoch: 0)
            let warm = try wallSeconds { try tuner!.step(batch, lr: lr) }
            step = try timedRuns(warm) { try tuner!.step(batch, lr: lr) }
        }
        let trainer = tuner!
        let architecture = trainer.architecture, parameters = trainer.parameters
        let classifier: PieceRate
        if architecture.method.architecture.classifiesPerImage {
            let images = L2Normalize.forward(Tensor.randomNormal([2, d], using: &rng)).0
            guard case .perImage(let make) = architecture.classifier(parameters) else { throw ExperimentError(.invalidSetting, "expected a per-image classifier") }
            let c = ProcessMemory.measure { make(images) }
            classifier = PieceRate(seconds: c.seconds / 2, peakBytes: c.peakBytes / 2)
            m.perImageClassifier = true
        } else {
            let c = ProcessMemory.measure { architecture.classifier(parameters) }
            classifier = PieceRate(seconds: c.seconds, peakBytes: c.peakBytes)
        }
        m.points.append(MethodPoint(classes: k, setupSeconds: setup, stepSeconds: step, stepPeakBytes: trained.peakBytes, classifier: classifier))
        guard first else { return }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("prompttune-cost-\(getpid())-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        m.epochSeconds = try wallSeconds { try trainer.checkpoint().write(to: url) }
        if architecture.promptsImageTower {
            // As a set is encoded: chunks through one workspace, the last one smaller (a workspace
            // and what each pass leaves behind grow past a single chunk's peak, ~1.4x on ViT-B/16).
            let batch = 8
            let pixels = Tensor.randomNormal([batch, 3, r, r], using: &rng)
            var times: [Double] = []
            let e = ProcessMemory.measure { () -> Void in
                let workspace = Workspace(backend: runner.model.backend)
                for _ in 0..<2 { times.append(wallSeconds { _ = architecture.encodeImages(parameters, pixels: pixels, workspace: workspace) }) }
                _ = architecture.encodeImages(parameters, pixels: pixels.slice(rows: 0..<(batch / 2)), workspace: workspace)
            }
            m.promptedEncode = PieceRate(seconds: times.min()! / Double(batch), peakBytes: e.peakBytes / batch)
        }
    }

    /// The least of `first` and more runs of `body`: one more when a run takes over a second, else
    /// at least 3 and up to 20 until a quarter second is spent (a machine shared with other work
    /// slows some runs many times over).
    func timedRuns(_ first: Double, _ body: () throws -> Void) rethrows -> Double {
        var best = first, spent = 0.0, runs = 0
        repeat {
            let t = try wallSeconds(body)
            (best, spent, runs) = (min(best, t), spent + t, runs + 1)
        } while first <= 1 && runs < 20 && (runs < 3 || spent < 0.25)
        return best
    }
}

/// Fixed random pixels standing in for decoded training images (decoding is measured apart).
typealias SyntheticImages = FixedImages
