import CLIP
import Datasets
import Foundation
import Imaging
import TensorCore
import TensorIO

/// Fashion-MNIST images with their class names, for contrastive pretraining and its evaluation.
public struct PretrainData: Sendable {
    public let source: FashionMNIST
    public let items: [Datum]
    public let classNames: [String]

    /// The train split (never val or test) or the test split, from `root` or Debian's folder.
    public init(root: URL?, split: String = "train", limit: Int? = nil) throws {
        let splits = try FashionMNIST.loadSplits(root: root)
        source = try FashionMNIST(directory: splits.imageRoot)
        let all: [Datum]
        switch split {
        case "train": all = splits.train
        case "test": all = splits.test
        default: throw PretrainError("unknown split '\(split)': train or test")
        }
        items = limit.map { Array(all.prefix($0)) } ?? all
        classNames = splits.classNames
    }

    /// Preprocessed pixels of items `indices`: B, 3, R, R: openai's test transform (as `features`),
    /// or with `augmentSeed` CoOp's train transform, seeded per (seed, item).
    public func pixels(_ indices: [Int], resolution: Int, augmentSeed: UInt64? = nil, cropScale: Double = 0.08) throws -> Tensor {
        let transform = CoOpTrainTransform(size: resolution, scale: cropScale ... 1.0)
        var data: [Float] = []
        data.reserveCapacity(indices.count * 3 * resolution * resolution)
        for i in indices {
            let image = try source.image(for: items[i])
            if let seed = augmentSeed {
                var rng = SeededGenerator(seed: mix(seed, 0x4155_4721, UInt64(i)))
                data += transform(image, rng: &rng).data
            } else {
                data += clipPreprocess(image, resolution: resolution).data
            }
        }
        return Tensor(shape: [indices.count, 3, resolution, resolution], data: data)
    }
}

/// What one step reports.
public struct PretrainStep: Sendable {
    public var step: Int
    public var totalSteps: Int
    public var epoch: Int
    public var loss: Double
    public var accuracy: Double
    public var learningRate: Double
    public var logitScale: Float
}

/// Contrastive pretraining of a CLIP on image-caption batches (symmetric InfoNCE, learnable logit
/// scale clamped at 100, AdamW, linear warm-up then cosine per step). A pure function of the recipe:
/// epoch e's order is a shuffle seeded by (seed, e), step s's captions draw their templates from a
/// generator seeded by (seed, s), so a run resumed from any checkpoint continues exactly.
public final class Pretrainer {
    public let recipe: PretrainRecipe
    public let data: PretrainData
    public private(set) var model: CLIPModel
    public private(set) var optimizer = AdamWState()
    /// Steps done and the loss of each.
    public private(set) var losses: [Double] = []
    /// Training seconds so far (over resumes).
    public private(set) var seconds: Double = 0
    let tokenizer: CLIPTokenizer
    /// Attribute words per training item (attribute captions only).
    let attributeWords: [[String]]

    public var step: Int { losses.count }
    public var stepsPerEpoch: Int { data.items.count / recipe.batchSize }
    public var totalSteps: Int { stepsPerEpoch * recipe.epochs }

    public init(recipe: PretrainRecipe, data: PretrainData) throws {
        try recipe.validate()
        guard data.items.count >= recipe.batchSize else {
            throw PretrainError("\(data.items.count) training images are fewer than one batch of \(recipe.batchSize)")
        }
        self.recipe = recipe
        self.data = data
        self.model = Pretrainer.initialModel(recipe)
        self.tokenizer = try CLIPTokenizer()
        if recipe.attributeCaptions {
            let attributes = try data.items.map { ImageAttributes(try data.source.image(for: $0)) }
            if recipe.classRelativeAttributes {
                var byClass: [Int: [ImageAttributes]] = [:]
                for (a, item) in zip(attributes, data.items) { byClass[item.label, default: []].append(a) }
                let thresholds = byClass.mapValues(ImageAttributes.medians)
                attributeWords = zip(attributes, data.items).map { $0.words(thresholds: thresholds[$1.label]!) }
            } else {
                let thresholds = ImageAttributes.medians(attributes)
                attributeWords = attributes.map { $0.words(thresholds: thresholds) }
            }
        } else {
            attributeWords = []
        }
    }

    /// CLIP-like random weights (`CLIPModel.random`) with LayerNorms at identity, biases at zero and
    /// the logit scale at the recipe's start.
    static func initialModel(_ r: PretrainRecipe) -> CLIPModel {
        var m = CLIPModel.random(config: r.config, seed: r.seed)
        for p in m.parameters {
            switch p.role {
            case .gain: m[parameter: p] = Tensor(shape: p.shape, data: .init(repeating: 1, count: p.count))
            case .bias: m[parameter: p] = Tensor(zeros: p.shape)
            case .logitScale: m.logScale = Float(log(r.initialLogitScale))
            case .matrix, .embedding: break
            }
        }
        return m
    }

    /// The item indices of step `s`.
    public func batch(_ s: Int) -> [Int] {
        let epoch = s / stepsPerEpoch, k = s % stepsPerEpoch
        var rng = SeededGenerator(seed: mix(recipe.seed, 0x5348_5546, UInt64(epoch)))
        var order = Array(data.items.indices)
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        return Array(order[k * recipe.batchSize ..< (k + 1) * recipe.batchSize])
    }

    /// The captions of step `s`'s images.
    public func captions(_ s: Int, items: [Int]) -> [String] {
        var rng = SeededGenerator(seed: mix(recipe.seed, 0x4341_5054, UInt64(s)))
        if recipe.attributeCaptions {
            return items.map { i in
                let label = data.items[i].label
                let coarse = recipe.coarseFraction > 0 && Double(rng.nextUniform()) < recipe.coarseFraction && label < CaptionTemplates.coarse.count
                let name = coarse ? CaptionTemplates.coarse[label] : data.classNames[label]
                let template = recipe.templates[Int(rng.next() % UInt64(recipe.templates.count))]
                var words = attributeWords[i]
                var medium = ""
                if let m = recipe.mediumAttribute {
                    let high = words[m] == CaptionTemplates.attributeWords[m].high
                    medium = high ? CaptionTemplates.mediumWords.high : CaptionTemplates.mediumWords.low
                    words.remove(at: m)
                }
                for j in stride(from: words.count - 1, to: 0, by: -1) { words.swapAt(j, Int(rng.next() % UInt64(j + 1))) }
                let k = recipe.attributeCount ?? (recipe.mediumAttribute == nil ? 1 : 0) + Int(rng.next() % UInt64(min(3, words.count)))
                let caption = template.replacingOccurrences(of: "{m}", with: medium)
                    .replacingOccurrences(of: "{a}", with: words.prefix(k).joined(separator: " "))
                    .replacingOccurrences(of: "{}", with: name)
                return caption.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            }
        }
        return items.map { i in
            let name = data.classNames[data.items[i].label]
            return recipe.templates[Int(rng.next() % UInt64(recipe.templates.count))].replacingOccurrences(of: "{}", with: name)
        }
    }

    /// Runs step `self.step` and returns its report.
    @discardableResult
    public func trainStep() throws -> PretrainStep {
        let start = Date()
        let s = step
        let items = batch(s)
        let pixels = try data.pixels(items, resolution: recipe.resolution,
                                     augmentSeed: recipe.augment ? mix(recipe.seed, 0x5354_4550, UInt64(s)) : nil,
                                     cropScale: recipe.cropScale)
        let tokens = tokenizer.tokenize(captions(s, items: items), contextLength: 77).map { $0.map(Int.init) }
        let result = ContrastiveStep(model: model, pixels: pixels, tokens: tokens)
        guard result.loss.value.isFinite else {
            throw PretrainError("step \(s): the loss is not finite (\(result.loss.value)); lower the learning rate")
        }
        let lr = warmupCosine(step: s, total: totalSteps, warmup: recipe.warmupSteps, peak: recipe.learningRate)
        optimizer.update(&model, gradient: result.gradient, lr: lr, config: recipe.adamW)
        model.logScale = min(max(model.logScale, 0), Float(log(100.0)))  // CLIP's clamp
        losses.append(result.loss.value)
        seconds += Date().timeIntervalSince(start)
        return PretrainStep(step: s + 1, totalSteps: totalSteps, epoch: s / stepsPerEpoch, loss: result.loss.value,
                            accuracy: result.loss.imageToTextAccuracy, learningRate: lr, logitScale: model.logitScale)
    }

    // MARK: Checkpoints

    /// Writes the model, the optimiser's moments and the losses so far, atomically.
    public func saveCheckpoint(to url: URL) throws {
        var tensors: [String: Tensor] = [:]
        for (k, v) in model.stateDict() { tensors["model." + k] = v }
        for (k, v) in optimizer.firstMoment { tensors["adamw.m." + k] = v }
        for (k, v) in optimizer.secondMoment { tensors["adamw.v." + k] = v }
        tensors["losses"] = Tensor(shape: [losses.count], data: losses.map(Float.init))
        let recipeJSON = String(decoding: try JSONEncoder().encode(recipe), as: UTF8.self)
        let lossesJSON = String(decoding: try JSONEncoder().encode(losses), as: UTF8.self)
        try Safetensors.write(tensors: tensors, metadata: [
            "format": "prompttune-pretrain-checkpoint-v1", "recipe": recipeJSON, "losses": lossesJSON,
            "adamw_step": String(optimizer.step), "seconds": String(seconds),
        ], to: url)
    }

    /// Continues from a checkpoint written by `saveCheckpoint` under the same recipe.
    public func resume(from url: URL) throws {
        let (tensors, meta) = try Safetensors.read(path: url.path)
        guard meta["format"] == "prompttune-pretrain-checkpoint-v1", let r = meta["recipe"], let l = meta["losses"],
              let adamStep = meta["adamw_step"].flatMap(Int.init) else {
            throw PretrainError("\(url.path) is not a PromptTune pretraining checkpoint (prompttune pretrain writes checkpoint.safetensors)")
        }
        let saved = try JSONDecoder().decode(PretrainRecipe.self, from: Data(r.utf8))
        guard saved == recipe else {
            throw PretrainError("\(url.path) was written under another recipe; resume with the same options, or use a new --out folder")
        }
        var m = model
        var opt = AdamWState()
        opt.step = adamStep
        for p in m.parameters {
            guard let w = tensors["model." + p.name] else { throw PretrainError("\(url.path) lacks 'model.\(p.name)'") }
            m[parameter: p] = w
            if let v = tensors["adamw.m." + p.name] { opt.firstMoment[p.name] = v }
            if let v = tensors["adamw.v." + p.name] { opt.secondMoment[p.name] = v }
        }
        model = m
        optimizer = opt
        losses = try JSONDecoder().decode([Double].self, from: Data(l.utf8))
        seconds = meta["seconds"].flatMap(Double.init) ?? 0
    }

    // MARK: Evaluation

    /// Zero-shot accuracy of `model` on `data` with one template: the class of the most similar text.
    public static func zeroShotAccuracy(model: CLIPModel, data: PretrainData, template: String,
                                        tokenizer: CLIPTokenizer, chunk: Int = 500) throws -> Double {
        let texts = data.classNames.map { template.replacingOccurrences(of: "{}", with: $0) }
        let textFeatures = L2Normalize.forward(model.encodeText(tokenizer.tokenize(texts).map { $0.map(Int.init) })).0
        var correct = 0
        for start in stride(from: 0, to: data.items.count, by: chunk) {
            let idx = Array(start ..< min(data.items.count, start + chunk))
            let f = L2Normalize.forward(model.encodeImage(try data.pixels(idx, resolution: model.config.imageResolution))).0
            let sims = matmul(f, textFeatures, transB: true)
            let k = textFeatures.rows
            for (r, i) in idx.enumerated() {
                var best = 0
                for j in 1..<k where sims[r * k + j] > sims[r * k + best] { best = j }
                if best == data.items[i].label { correct += 1 }
            }
        }
        return Double(correct) / Double(max(1, data.items.count))
    }
}

/// A 64-bit mix of a seed with a stream tag and an index (SplitMix64's finaliser).
func mix(_ seed: UInt64, _ tag: UInt64, _ index: UInt64) -> UInt64 {
    var z = seed &* 0x9E37_79B9_7F4A_7C15 ^ tag &* 0xBF58_476D_1CE4_E5B9 ^ index &* 0x94D0_49BB_1331_11EB
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
