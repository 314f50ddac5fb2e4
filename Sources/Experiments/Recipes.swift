import Foundation
import PromptLearning

/// The papers' training recipes, in one table. Sources:
/// - CoOp (Zhou et al., IJCV 2022; KaiyangZhou/CoOp `configs/trainers/CoOp/*.yaml`, `scripts/coop/main.sh`):
///   SGD lr 0.002, batch 32; epochs by shots: 50 for 1 shot, 100 for 2 and 4, 200 for 8 and 16;
///   ImageNet 50 at every shot count (`vit_b16_ep50`). The RN50 configs of CoOp's few-shot tables
///   (`rn50_ep50.yaml`, `rn50_ep100.yaml`, `rn50.yaml`; `rn101*.yaml` likewise) hold the same lr,
///   batch, epochs, warm-up and transforms as the ViT ones, so one recipe serves both image towers.
/// - KgCoOp (htyao89/KgCoOp `configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml`, `scripts/base2new_train.sh`):
///   lr 0.002, batch 128, 100 epochs in base-to-novel; w = 8, M = 4, "a photo of a". Other protocols
///   take CoOp's epochs by shots and batch 32.
/// - DeKg (cnunlp/DeKg `configs/trainers/DeKg/vit_b16_ep100_ctxv1.yaml`, `scripts/base2new_train.sh`,
///   `scripts/run.sh`): lr 0.002, batch 128, 100 epochs, N_CTX 4 from "a photo of a", w1 = 8
///   (`TRAINER.COOP.W`), w2 = 6 (`LOSS.WEIGHT`). Its scripts (base-to-novel and `xd_train.sh`) name
///   this one config, so every protocol takes it, except that the long-tailed protocol's whole
///   train splits keep their 10 epochs.
/// - DAPT (mlvlab/DAPT `configs/trainers/DAPT/*.yaml`, `scripts/dapt/*`): per-dataset lr, beta_v and
///   beta_t, epochs as CoOp. `dapt-text` trains DAPT's text half with DAPT's lr and beta_t.
/// - NPT (a documented reconstruction): the base method's recipe, lambda_lc = lambda_mi = 1.
/// - CoCoOp (KaiyangZhou/CoOp `configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml`):
///   batch 1, 10 epochs, lr 0.002, 4 context vectors from "a photo of a", every protocol.
/// - MaPLe (muzairkhattak/multimodal-prompt-learning `configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml`):
///   batch 4, 5 epochs, lr 0.0035; cross-dataset and domain generalisation
///   (`vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml`) lr 0.0026, 2 epochs, prompt depth 3
///   (`Recipe.promptDepth`; 9 elsewhere, `Method.maple`'s).
/// - PromptSRC (muzairkhattak/PromptSRC `configs/trainers/PromptSRC/*.yaml`, `scripts/promptsrc/*`):
///   batch 4, lr 0.0025. Base-to-novel (`vit_b16_c2_ep20_batch4_4+4ctx.yaml`) 20 epochs, GPA 15/1
///   (the method's own); cross-dataset and domain generalisation (`..._cross_datasets.yaml`) 20
///   epochs, depths 3/3, GPA 6/10; few-shot (`..._ep50_..._few_shot.yaml`) 50 epochs, GPA 30/30 on
///   ImageNet, Caltech101, Pets, Food101, UCF101, SUN397 and 45/5 on Cars, Flowers, Aircraft, DTD,
///   EuroSAT (METHODS.md section 2; `Recipe.aggregation`).
/// Every number may be overridden for a whole grid (`--epochs --lr --batch-size --views --augment`)
/// or per method in a plan file.
public enum Recipes {
    /// Cached augmented views per training image by default (see docs/EXPERIMENTS.md).
    public static let defaultViews = 4

    /// CoOp's epochs for `shots` shots per class on `dataset`.
    /// Epochs of the long-tailed protocol on whole train splits (LIFT trains 10 on ImageNet-LT,
    /// Places-LT and CIFAR-100-LT).
    public static let longTailedEpochs = 10

    public static func coopEpochs(shots: Int, dataset: String) -> Int {
        if dataset == "imagenet" { return 50 }
        switch shots {
        case ...1: return 50
        case 2...4: return 100
        default: return 200
        }
    }

    /// DAPT's per-dataset (lr, beta_v, beta_t), from its configs (METHODS.md section 2).
    public static let dapt: [String: (lr: Double, betaV: Double, betaT: Double)] = [
        "caltech101": (0.2, 10, 0.01), "dtd": (20, 100, 0.01), "eurosat": (20, 100, 10),
        "fgvc_aircraft": (2, 100, 0.01), "food101": (20, 10, 0.01), "imagenet": (2, 0.01, 0.01),
        "oxford_flowers": (0.002, 10, 0.01), "oxford_pets": (0.02, 10, 0.1), "stanford_cars": (0.002, 100, 0.1),
        "sun397": (20, 100, 0.01), "ucf101": (20, 0.1, 0.1),
    ]

    /// The datasets PromptSRC's few-shot runs aggregate with GPA 45/5 (the rest 30/30).
    public static let promptSRCFewShotSharpGPA: Set<String> = ["stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat"]

    /// The base method of a method string: "kgcoop+npt" -> "kgcoop", "npt" and "cpt" -> "coop".
    public static func baseMethod(_ method: String) -> String {
        let first = method.lowercased().split(separator: "+").first.map(String.init) ?? method
        return Method.addOns.contains(first) ? "coop" : first
    }

    /// The recipe of `method` on `dataset` with `shots` shots under `protocolKind`, before overrides.
    public static func recipe(method: String, dataset: String, shots: Int, protocolKind: ProtocolKind) -> Recipe {
        var r = Recipe(epochs: coopEpochs(shots: shots, dataset: dataset), learningRate: 0.002, batchSize: 32,
                       views: defaultViews)
        // The demonstration model was pretrained with gentler crops (scale 0.5-1) than CoOp's
        // (0.08-1): on Fashion-MNIST the test transform's view is the one that stands for its data.
        if dataset == "fashion_mnist" { r.views = 1 }
        // The long-tailed protocol's whole train splits hold thousands of images: LIFT's 10 epochs.
        let wholeSplits = protocolKind == .longTailed && (shots == 0 || shots > 16)
        if wholeSplits { r.epochs = longTailedEpochs }
        switch baseMethod(method) {
        case "kgcoop":
            if protocolKind == .baseToNovel { r.epochs = 100; r.batchSize = 128 }
        case "dekg":
            // Its one config, but not its 100 epochs over a long-tailed protocol's whole train split.
            if !wholeSplits { r.epochs = 100 }
            r.batchSize = 128
        case "dapt-text":
            if let d = dapt[dataset] {
                r.learningRate = d.lr
                r.termWeights["inter"] = d.betaT
            }
        case "dapt":
            // Images are augmented afresh every iteration (no cached views).
            r.views = 1
            if let d = dapt[dataset] {
                r.learningRate = d.lr
                r.termWeights["intra"] = d.betaV
                r.termWeights["inter"] = d.betaT
            }
        case "vpt":
            r.views = 1
        case "cocoop":
            r.epochs = 10
            r.batchSize = 1
        case "maple":
            // Images are augmented afresh every iteration (no cached views).
            r.views = 1
            r.batchSize = 4
            let transfer = protocolKind == .crossDataset || protocolKind == .domainGeneralization
            r.epochs = transfer ? 2 : 5
            r.learningRate = transfer ? 0.0026 : 0.0035
            if transfer { r.promptDepth = 3 }
        case "promptsrc":
            r.views = 1
            r.batchSize = 4
            r.learningRate = 0.0025
            switch protocolKind {
            case .baseToNovel:
                r.epochs = 20
            case .crossDataset, .domainGeneralization:
                r.epochs = 20
                r.promptDepth = 3
                r.aggregation = GaussianPromptAggregation(mean: 6, std: 10)
            case .longTailed:
                r.aggregation = GaussianPromptAggregation(mean: 6, std: 10)
            case .fewShot:
                r.epochs = 50
                r.aggregation = promptSRCFewShotSharpGPA.contains(dataset)
                    ? GaussianPromptAggregation(mean: 45, std: 5) : GaussianPromptAggregation(mean: 30, std: 30)
            }
        case "zeroshot", "linear-probe":
            r.epochs = 0
            r.views = 1
        default:
            break
        }
        return r
    }
}

/// Settings that replace the recipe's, for a whole grid or for one method of a plan.
public struct RecipeOverride: Codable, Equatable, Sendable {
    public var epochs: Int?
    public var lr: Double?
    public var batchSize: Int?
    public var views: Int?
    public var termWeights: [String: Double]?
    /// Term key -> parameter -> value (`term_parameters: {inter: {tau: 1}}`).
    public var termParameters: [String: [String: Double]]?
    public var ncEvery: Int?
    public var augment: Augmentation?

    public init(epochs: Int? = nil, lr: Double? = nil, batchSize: Int? = nil, views: Int? = nil,
                termWeights: [String: Double]? = nil, termParameters: [String: [String: Double]]? = nil, ncEvery: Int? = nil,
                augment: Augmentation? = nil) {
        self.epochs = epochs; self.lr = lr; self.batchSize = batchSize; self.views = views
        self.termWeights = termWeights; self.termParameters = termParameters; self.ncEvery = ncEvery; self.augment = augment
    }

    enum CodingKeys: String, CodingKey {
        case epochs, lr, batchSize = "batch_size", views, termWeights = "term_weights", termParameters = "term_parameters"
        case ncEvery = "nc_every", augment
    }

    /// `recipe` with every set field replaced. Baselines keep zero epochs and one view.
    public func apply(to recipe: Recipe, trains: Bool) -> Recipe {
        var r = recipe
        if trains {
            if let epochs { r.epochs = epochs }
            if let lr { r.learningRate = lr }
            if let batchSize { r.batchSize = batchSize }
            if let views { r.views = views }
            if let termWeights { r.termWeights.merge(termWeights) { $1 } }
            for (term, values) in termParameters ?? [:] { r.termParameters[term, default: [:]].merge(values) { $1 } }
            if let augment { r.augment = augment }
        }
        if let ncEvery { r.ncEvery = ncEvery }
        return r
    }
}
