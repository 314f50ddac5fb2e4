import Datasets
import Foundation
import Imaging
import PromptLearning
import TensorCore
import TensorIO

/// Training images read through an `ImageSource` and augmented as CoOp does at every iteration
/// (RandomResizedCrop(scale 0.08-1, bicubic) + horizontal flip + CLIP's normalisation), one image
/// per core. Any `index -> RGBImage` function works (dataset files, in-memory images in tests).
public struct AugmentedImages: TrainingImages {
    public let labels: [Int]
    public let classNames: [String]
    public let digest: String
    let count: Int
    let image: @Sendable (Int) throws -> RGBImage

    public init(count: Int, labels: [Int], classNames: [String], digest: String, image: @escaping @Sendable (Int) throws -> RGBImage) {
        self.count = count; self.labels = labels; self.classNames = classNames; self.digest = digest; self.image = image
    }

    /// The items of a split read from `source`.
    public init(items: [Datum], classNames: [String], source: any ImageSource) {
        let list = items.map { "\($0.path)\t\($0.label)\t\($0.className)" }.joined(separator: "\n")
        self.init(count: items.count, labels: items.map(\.label), classNames: classNames,
                  digest: Data(list.utf8).withUnsafeBytes { contentDigest($0) },
                  image: { try source.image(for: items[$0]) })
    }

    public func load(_ indices: [Int], seeds: [UInt64], resolution: Int) throws -> (pixels: Tensor, augmentations: [AugmentationRecord]) {
        try augmentBatch(indices, seeds: seeds, resolution: resolution, image: image)
    }
}

/// Decodes and augments `indices` on every core: image i with `SeededGenerator(seed: seeds[i])`.
public func augmentBatch(_ indices: [Int], seeds: [UInt64], resolution r: Int,
                         image: (Int) throws -> RGBImage) throws -> (pixels: Tensor, augmentations: [AugmentationRecord]) {
    let n = indices.count, size = 3 * r * r
    let transform = CoOpTrainTransform(size: r)
    var pixels = [Float](repeating: 0, count: n * size)
    var augs = [AugmentationRecord?](repeating: nil, count: n)
    var failures = [String?](repeating: nil, count: n)
    try withoutActuallyEscaping(image) { image in
        pixels.withUnsafeMutableBufferPointer { px in augs.withUnsafeMutableBufferPointer { ab in failures.withUnsafeMutableBufferPointer { fb in
            let (pxBase, aBase, fBase) = (px.baseAddress!, ab.baseAddress!, fb.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: n) { i in
                do {
                    let img = try image(indices[i])
                    var rng = SeededGenerator(seed: seeds[i])
                    let p = transform.parameters(width: img.width, height: img.height, rng: &rng)
                    transform(img, p).withPointer { (pxBase + i * size).update(from: $0, count: size) }
                    aBase[i] = AugmentationRecord(top: p.crop.top, left: p.crop.left, height: p.crop.height, width: p.crop.width, flip: p.flip)
                } catch {
                    fBase[i] = "\(error)"
                }
            }
        } } }
        if let i = failures.firstIndex(where: { $0 != nil }) {
            throw ExperimentError(.unreadableImage, "training image \(indices[i]) could not be read: \(failures[i]!)")
        }
    }
    return (Tensor(shape: [n, 3, r, r], data: pixels), augs.map { $0! })
}
