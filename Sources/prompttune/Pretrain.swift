import ArgumentParser
import CLIP
import Foundation
import Pretraining
import TensorCore
import TensorIO

/// `prompttune pretrain`: trains a small CLIP contrastively on Fashion-MNIST's train split (the
/// committed demo model was made by this command; see models/fashion-clip/MODEL-CARD.md).
struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pretrain a small CLIP on Fashion-MNIST image-caption pairs (symmetric InfoNCE, AdamW, warm-up + cosine; resumable).")

    @Option(help: "Output folder: checkpoint.safetensors (every --checkpoint-every steps), then model.pt, open_clip_model.safetensors and summary.json.")
    var out: String
    @Option(help: "Data root (Fashion-MNIST under root/fashion-mnist; default: $DATA, then Debian's folder).")
    var root: String?
    @Flag(help: "Continue from <out>/checkpoint.safetensors (same options required).") var resume = false

    @Option(help: "Epochs over the train split.") var epochs = PretrainRecipe().epochs
    @Option(name: .customLong("batch-size"), help: "Image-caption pairs per step.") var batchSize = PretrainRecipe().batchSize
    @Option(help: "Peak learning rate (AdamW).") var lr = PretrainRecipe().learningRate
    @Option(help: "Linear warm-up steps before the cosine decay.") var warmup = PretrainRecipe().warmupSteps
    @Option(name: .customLong("weight-decay"), help: "AdamW's decoupled weight decay, on matrices only.") var weightDecay = AdamWConfig().weightDecay
    @Option(help: "Seed of the initial weights, the shuffles and the caption draws.") var seed: UInt64 = PretrainRecipe().seed
    @Option(help: "Train on the first N images of the train split only.") var limit: Int?
    @Option(name: .customLong("embed-dim"), help: "Joint embedding width.") var embedDim = PretrainRecipe().embedDim
    @Option(help: "Image resolution (Fashion-MNIST is 28x28).") var resolution = PretrainRecipe().resolution
    @Option(help: "Patch size (divides the resolution).") var patch = PretrainRecipe().patchSize
    @Option(name: .customLong("vision-width")) var visionWidth = PretrainRecipe().visionWidth
    @Option(name: .customLong("vision-layers")) var visionLayers = PretrainRecipe().visionLayers
    @Option(name: .customLong("text-width")) var textWidth = PretrainRecipe().textWidth
    @Option(name: .customLong("text-layers")) var textLayers = PretrainRecipe().textLayers
    @Option(help: "Caption template with {} for the class name (repeatable; default: the built-in list).") var template: [String] = []
    @Option(name: .customLong("crop-scale"), help: "Smallest crop area of the random resized crop (CoOp: 0.08).") var cropScale = PretrainRecipe().cropScale
    @Flag(name: .customLong("attribute-captions"), help: "Captions add 1-3 attribute words computed from the image (dark/light, small/large, top-heavy/bottom-heavy, narrow/wide); templates need {a}.") var attributeCaptions = false
    @Option(name: .customLong("coarse-fraction"), help: "With attribute captions, the fraction naming the coarse category (top, shoe, ...) instead of the class.") var coarseFraction = PretrainRecipe().coarseFraction
    @Flag(name: .customLong("class-relative"), help: "Attribute words split at each class's median instead of the overall one.") var classRelative = false
    @Option(name: .customLong("attribute-count"), help: "Attribute words per caption (default: 1-3 at random).") var attributeCount: Int?
    @Option(name: .customLong("medium-attribute"), help: "With attribute captions, name this attribute (0 brightness, 1 coverage, 2 balance, 3 aspect) through the medium word: 'a photo of' above the median, 'a sketch of' below (templates: the built-in medium list).") var mediumAttribute: Int?
    @Flag(name: .customLong("no-augment"), help: "Train on plain images instead of CoOp's train transform (random resized crop + flip).") var noAugment = false
    @Option(name: .customLong("checkpoint-every"), help: "Steps between checkpoints (default: once per epoch).") var checkpointEvery: Int?
    @Option(name: .customLong("evaluate"), help: "Only print the zero-shot test accuracy of this model for each --template (default: \"a photo of a {}.\"), then exit.") var evaluate: String?
    @Option(help: "Stop after this many steps in this invocation (the run stays resumable).") var steps: Int?

    func validate() throws {
        if let checkpointEvery { try OptionLimits.range("--checkpoint-every", checkpointEvery, 1...Int(Int32.max), "steps between checkpoints") }
        if let steps { try OptionLimits.range("--steps", steps, 1...Int(Int32.max)) }
        if let limit { try OptionLimits.range("--limit", limit, 1...Int(Int32.max)) }
        if evaluate == nil {
            do { try recipe().validate() } catch { throw ValidationError("\(error)") }
        }
    }

    func recipe() -> PretrainRecipe {
        var r = PretrainRecipe()
        r.epochs = epochs; r.batchSize = batchSize; r.learningRate = lr; r.warmupSteps = warmup
        r.adamW.weightDecay = weightDecay; r.seed = seed; r.limit = limit; r.embedDim = embedDim
        r.resolution = resolution; r.patchSize = patch; r.visionWidth = visionWidth; r.visionLayers = visionLayers
        r.textWidth = textWidth; r.textLayers = textLayers
        r.cropScale = cropScale; r.attributeCaptions = attributeCaptions; r.coarseFraction = coarseFraction
        r.classRelativeAttributes = classRelative; r.attributeCount = attributeCount; r.mediumAttribute = mediumAttribute
        if !template.isEmpty { r.templates = template } else if attributeCaptions { r.templates = mediumAttribute == nil ? CaptionTemplates.attributes : CaptionTemplates.medium }
        r.augment = !noAugment
        return r
    }

    func run() throws {
        if let path = evaluate {
            let rootURL = (root ?? ProcessInfo.processInfo.environment["DATA"]).map { URL(fileURLWithPath: $0) }
            let model = try CLIPModel.load(path: path)
            let test = try PretrainData(root: rootURL, split: "test", limit: limit)
            let tokenizer = try CLIPTokenizer()
            for t in template.isEmpty ? ["a photo of a {}."] : template {
                let a = try Pretrainer.zeroShotAccuracy(model: model, data: test, template: t, tokenizer: tokenizer)
                print(String(format: "%6.2f%%  %@", 100 * a, t))
            }
            return
        }
        let recipe = recipe()
        do { try recipe.validate() } catch { throw ValidationError("\(error)") }
        let outURL = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: outURL, withIntermediateDirectories: true)
        let checkpoint = outURL.appendingPathComponent("checkpoint.safetensors")
        let rootURL = (root ?? ProcessInfo.processInfo.environment["DATA"]).map { URL(fileURLWithPath: $0) }
        let data = try PretrainData(root: rootURL, split: "train", limit: recipe.limit)
        let trainer = try Pretrainer(recipe: recipe, data: data)
        if resume {
            guard FileManager.default.fileExists(atPath: checkpoint.path) else {
                throw ValidationError("--resume: \(checkpoint.path) does not exist")
            }
            try trainer.resume(from: checkpoint)
            print("resumed at step \(trainer.step)/\(trainer.totalSteps)")
        } else if FileManager.default.fileExists(atPath: checkpoint.path) {
            throw ValidationError("\(checkpoint.path) exists: pass --resume to continue that run, or choose another --out")
        }
        let c = recipe.config
        print("pretraining CLIP (image \(c.imageResolution)px/\(c.patchSize), vision \(c.visionWidth)x\(c.visionLayers), "
              + "text \(c.textWidth)x\(c.textLayers), embed \(c.embedDim)) on \(data.items.count) Fashion-MNIST train images, "
              + "\(trainer.totalSteps) steps of \(recipe.batchSize)")
        let every = checkpointEvery ?? trainer.stepsPerEpoch
        let stopAt = min(trainer.totalSteps, steps.map { trainer.step + $0 } ?? Int.max)
        let bar = ProgressBar(total: trainer.totalSteps, label: "pretrain", unit: "step")
        let started = Date(), firstStep = trainer.step
        var average: Double?
        while trainer.step < stopAt {
            let r = try trainer.trainStep()
            average = average.map { 0.98 * $0 + 0.02 * r.loss } ?? r.loss
            let rate = Double((trainer.step - firstStep) * recipe.batchSize) / Date().timeIntervalSince(started)
            bar.update(r.step, status: String(format: "epoch %d loss %.4f (avg %.4f) acc %.2f scale %.1f lr %.2g %.0f img/s",
                                              r.epoch + 1, r.loss, average!, r.accuracy, r.logitScale, r.learningRate, rate))
            if trainer.step % every == 0 || trainer.step == stopAt { try trainer.saveCheckpoint(to: checkpoint) }
        }
        guard trainer.step == trainer.totalSteps else {
            print("stopped at step \(trainer.step)/\(trainer.totalSteps); continue with --resume")
            return
        }
        bar.finish()
        try trainer.model.writeStateDict(to: outURL.appendingPathComponent("model.pt"), dtype: .float16)
        try trainer.model.writeOpenCLIPSafetensors(to: outURL.appendingPathComponent("open_clip_model.safetensors"), dtype: .float16)
        // Evaluate what was written (fp16 weights), zero-shot with Fashion-MNIST's hand template.
        let saved = try CLIPModel.load(path: outURL.appendingPathComponent("model.pt").path)
        let test = try PretrainData(root: rootURL, split: "test")
        let accuracy = try Pretrainer.zeroShotAccuracy(model: saved, data: test, template: "a photo of a {}.", tokenizer: try CLIPTokenizer())
        let summary: [String: Any] = [
            "steps": trainer.step, "seconds": trainer.seconds, "final_loss": trainer.losses.last ?? 0,
            "first_losses": Array(trainer.losses.prefix(20)), "zero_shot_test_accuracy": accuracy,
            "recipe": try JSONSerialization.jsonObject(with: JSONEncoder().encode(recipe)),
        ]
        let json = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try writeAtomically(json, to: outURL.appendingPathComponent("summary.json"))
        print(String(format: "done: %d steps in %.0f s, final loss %.4f; zero-shot test accuracy (\"a photo of a {}.\") %.2f%%",
                     trainer.step, trainer.seconds, trainer.losses.last ?? 0, 100 * accuracy))
        print("wrote \(out)/model.pt and \(out)/open_clip_model.safetensors (fp16)")
    }
}
