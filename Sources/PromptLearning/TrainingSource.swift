import CLIP
import Foundation
import TensorCore

/// One image's random augmentation: the crop box in torchvision's `get_params` order (rows
/// `top ..< top + height`, columns `left ..< left + width` of the decoded image) and the flip.
public struct AugmentationRecord: Codable, Equatable, Hashable, Sendable {
    public var top: Int
    public var left: Int
    public var height: Int
    public var width: Int
    public var flip: Bool
    public init(top: Int, left: Int, height: Int, width: Int, flip: Bool) {
        self.top = top; self.left = left; self.height = height; self.width = width; self.flip = flip
    }
}

/// Training images decoded and augmented on demand (CoOp's RandomResizedCrop + flip, fresh every
/// iteration). The Features target provides the implementation over a dataset's files; tests
/// provide in-memory ones.
public protocol TrainingImages: Sendable {
    var labels: [Int] { get }
    var classNames: [String] { get }
    /// Pixels B x 3 x R x R of `indices`, image i augmented with a generator seeded by `seeds[i]`,
    /// with the augmentation drawn for each. Decoding may run on every core.
    func load(_ indices: [Int], seeds: [UInt64], resolution: Int) throws -> (pixels: Tensor, augmentations: [AugmentationRecord])
    /// A digest of the image list (checked on resume).
    var digest: String { get }
}

/// Fixed pixels standing in for decoded training images, image i being rows i of `pixels`
/// (B x 3 x R x R): benches and cost measurements time steps, not decoding. Each image's
/// "augmentation" is the whole image, unflipped.
public struct FixedImages: TrainingImages {
    public let pixels: Tensor
    public let labels: [Int]
    public let classNames: [String]
    public let digest: String

    public init(pixels: Tensor, labels: [Int], classNames: [String], digest: String = "fixed") {
        self.pixels = pixels; self.labels = labels; self.classNames = classNames; self.digest = digest
    }

    public func load(_ indices: [Int], seeds: [UInt64], resolution: Int) throws -> (pixels: Tensor, augmentations: [AugmentationRecord]) {
        let size = 3 * resolution * resolution
        var data: [Float] = []
        data.reserveCapacity(indices.count * size)
        for i in indices { data += pixels.data[(i * size)..<((i + 1) * size)] }
        return (Tensor(shape: [indices.count, 3, resolution, resolution], data: data),
                indices.map { _ in AugmentationRecord(top: 0, left: 0, height: resolution, width: resolution, flip: false) })
    }
}

/// Where a run's training inputs come from.
public enum TrainingData: Sendable {
    /// Final image features encoded once (any number of augmented views): the text-only methods.
    case features(LabeledFeatures)
    /// Images decoded and augmented every iteration: methods with trainable image prompts, and
    /// any method on CoOp's per-iteration protocol (a text method runs the frozen tower forward only).
    case images(any TrainingImages)

    public var labels: [Int] {
        switch self {
        case .features(let f): return f.labels
        case .images(let s): return s.labels
        }
    }

    public var classNames: [String] {
        switch self {
        case .features(let f): return f.classNames
        case .images(let s): return s.classNames
        }
    }
}

/// The inputs of one step.
public struct TrainingBatch: Sendable {
    /// Dataset indices of the images.
    public var indices: [Int]
    public var labels: [Int]
    /// B x D normalised cached features (features source).
    public var features: Tensor?
    /// The cached view each image used (features source with several views).
    public var views: [Int]?
    /// B x 3 x R x R pixels (images source) and each image's augmentation.
    public var pixels: Tensor?
    public var augmentations: [AugmentationRecord]?

    public init(indices: [Int], labels: [Int], features: Tensor? = nil, views: [Int]? = nil, pixels: Tensor? = nil,
                augmentations: [AugmentationRecord]? = nil) {
        self.indices = indices; self.labels = labels; self.features = features; self.views = views
        self.pixels = pixels; self.augmentations = augmentations
    }
}

/// The seed of image `index`'s augmentation in `epoch` of a run seeded `seed`: independent of the
/// batch order, threads and prefetching, so a resumed run and a replay draw the same crops.
/// Epoch -1 is the view the prototypes are made from.
public func augmentationSeed(_ seed: UInt64, epoch: Int, index: Int) -> UInt64 {
    var g = SeededGenerator(seed: seed ^ (UInt64(bitPattern: Int64(epoch + 1)) &* 0xD6E8_FEB8_6659_FD93)
                            ^ (UInt64(index) &* 0x9E37_79B9_7F4A_7C15))
    return g.next()
}

/// DAPT's class prototypes: one train-augmented view of each image (seeded by `augmentationSeed`
/// at epoch -1) through the frozen, unprompted image tower, L2-normalised, averaged per class, the
/// mean not re-normalised. Classes without images stay 0.
public func imagePrototypes(model: CLIPModel, images: any TrainingImages, seed: UInt64, chunk: Int = 32) throws -> Tensor {
    let n = images.labels.count
    let r = model.config.imageResolution
    var rows: [Float] = []
    rows.reserveCapacity(n * model.config.embedDim)
    let workspace = Workspace(backend: model.backend)  // each chunk reuses the buffers of the one before
    for start in stride(from: 0, to: n, by: chunk) {
        let idx = Array(start..<min(n, start + chunk))
        let (pixels, _) = try images.load(idx, seeds: idx.map { augmentationSeed(seed, epoch: -1, index: $0) }, resolution: r)
        rows += model.image.forward(pixels: pixels, workspace: workspace).0.data
    }
    let features = Tensor(shape: [n, model.config.embedDim], data: rows)
    return classPrototypes(features: features, labels: images.labels, classes: images.classNames.count)
}
