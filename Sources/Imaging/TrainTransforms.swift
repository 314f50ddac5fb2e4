import Foundation
import TensorCore

/// A crop rectangle in torchvision's `get_params` order: `top` (i), `left` (j), `height` (h),
/// `width` (w); the crop covers rows `top ..< top + height` and columns `left ..< left + width`.
public struct CropBox: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var top: Int
    public var left: Int
    public var height: Int
    public var width: Int

    public init(top: Int, left: Int, height: Int, width: Int) {
        self.top = top
        self.left = left
        self.height = height
        self.width = width
    }

    public var description: String { "CropBox(top: \(top), left: \(left), height: \(height), width: \(width))" }
}

/// PIL's `img.crop((left, top, left + width, top + height))` (torchvision `F.crop` on a PIL image):
/// a copy of the box; parts of the box outside the image are black, as in PIL.
public func crop(_ image: RGBImage, _ box: CropBox) -> RGBImage {
    precondition(box.width > 0 && box.height > 0, "crop: empty box \(box)")
    if box.top == 0 && box.left == 0 && box.width == image.width && box.height == image.height { return image }
    var out = [UInt8](repeating: 0, count: box.width * box.height * 3)
    let x0 = max(0, -box.left), x1 = min(box.width, image.width - box.left)  // box columns inside the image
    if x1 > x0 {
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0 ..< box.height {
                    let sy = y + box.top
                    guard sy >= 0 && sy < image.height else { continue }
                    (dst.baseAddress! + (y * box.width + x0) * 3)
                        .update(from: src.baseAddress! + (sy * image.width + x0 + box.left) * 3, count: (x1 - x0) * 3)
                }
            }
        }
    }
    return RGBImage(width: box.width, height: box.height, pixels: out)
}

/// PIL's `img.transpose(Image.FLIP_LEFT_RIGHT)` (torchvision `F.hflip`): columns reversed.
public func horizontalFlip(_ image: RGBImage) -> RGBImage {
    let w = image.width
    var out = [UInt8](repeating: 0, count: image.pixels.count)
    image.pixels.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            for y in 0 ..< image.height {
                let row = y * w * 3
                for x in 0 ..< w {
                    let s = row + x * 3, d = row + (w - 1 - x) * 3
                    dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                }
            }
        }
    }
    return RGBImage(width: w, height: image.height, pixels: out)
}

/// torchvision `F.resized_crop(img, top, left, height, width, [size, size], BICUBIC)` on a PIL
/// image: ``crop(_:_:)`` first, then Pillow's bicubic resize of the cropped copy to `size` x `size`
/// (``resizeBicubic(_:width:height:passOrder:)``). Cropping first matters: Pillow's
/// `resize(size, box=...)` would let the filter read pixels outside the box; torchvision never does.
/// Bit-exact with `img.crop((left, top, left + width, top + height)).resize((size, size), BICUBIC)`.
public func resizedCrop(_ image: RGBImage, _ box: CropBox, size: Int,
                        passOrder: ResamplePassOrder = .pillow13) -> RGBImage {
    precondition(size > 0, "resizedCrop: size must be positive")
    return resizeBicubic(crop(image, box), width: size, height: size, passOrder: passOrder)
}

extension SeededGenerator {
    /// A uniform integer in `0 ..< bound` (`torch.randint(0, bound)`), by Lemire's multiply-shift
    /// with rejection: unbiased and, unlike `Int.random(in:using:)`, fixed here, so seeded runs
    /// stay reproducible across Swift versions.
    mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0, "nextInt(below:): bound must be positive")
        let b = UInt64(bound)
        var m = next().multipliedFullWidth(by: b)
        if m.low < b {
            let threshold = (0 &- b) % b
            while m.low < threshold { m = next().multipliedFullWidth(by: b) }
        }
        return Int(m.high)
    }
}

/// torchvision's `RandomResizedCrop(size, scale, ratio, interpolation=BICUBIC)` on PIL images.
///
/// ``cropParameters(width:height:rng:)`` is `RandomResizedCrop.get_params` with PromptTune's
/// ``SeededGenerator`` in place of torch's generator (same algorithm, different random stream):
/// up to 10 attempts, each drawing `target_area = area * U(scale)` and
/// `aspect = exp(U(log ratio.lower, log ratio.upper))` (both draws in Float32, as torch's
/// `uniform_` on float tensors; the logs of the ratio bounds are Float32 as `torch.log(torch.tensor(ratio))`),
/// `w = round(sqrt(target_area * aspect))`, `h = round(sqrt(target_area / aspect))` (round half to
/// even, as Python's `round`), accepted when `0 < w <= width` and `0 < h <= height`, and then
/// `top = randint(0, height - h)`, `left = randint(0, width - w)` (inclusive). If all 10 attempts
/// fail: a centred crop of the whole image with its aspect ratio clamped to `ratio`.
/// Random numbers drawn, in order: per attempt one for the scale and one for the ratio; on success
/// one for `top` and one for `left`.
public struct RandomResizedCrop: Sendable, Equatable {
    public var size: Int
    public var scale: ClosedRange<Double>
    public var ratio: ClosedRange<Double>
    public var passOrder: ResamplePassOrder

    public init(size: Int, scale: ClosedRange<Double> = 0.08 ... 1.0,
                ratio: ClosedRange<Double> = (3.0 / 4.0) ... (4.0 / 3.0),
                passOrder: ResamplePassOrder = .pillow13) {
        precondition(size > 0, "RandomResizedCrop: size must be positive")
        precondition(ratio.lowerBound > 0, "RandomResizedCrop: ratio must be positive")
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.passOrder = passOrder
    }

    /// `get_params` for a `width` x `height` image (see the type's documentation).
    public func cropParameters(width: Int, height: Int, rng: inout SeededGenerator) -> CropBox {
        precondition(width > 0 && height > 0, "cropParameters: empty image \(width)x\(height)")
        let area = Double(width * height)
        let logLo = Float(ratio.lowerBound).logValue, logHi = Float(ratio.upperBound).logValue
        let scaleLo = Float(scale.lowerBound), scaleHi = Float(scale.upperBound)
        for _ in 0 ..< 10 {
            let s = scaleLo + (scaleHi - scaleLo) * rng.nextUniform()
            let targetArea = area * Double(s)
            let logRatio = logLo + (logHi - logLo) * rng.nextUniform()
            let aspect = Double(Float.expValue(logRatio))
            let w = Int((targetArea * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((targetArea / aspect).squareRoot().rounded(.toNearestOrEven))
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.nextInt(below: height - h + 1)
                let left = rng.nextInt(below: width - w + 1)
                return CropBox(top: top, left: left, height: h, width: w)
            }
        }
        // Fallback to a central crop.
        let inRatio = Double(width) / Double(height)
        var w = width, h = height
        if inRatio < ratio.lowerBound {
            h = Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven))
        } else if inRatio > ratio.upperBound {
            w = Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven))
        }
        return CropBox(top: (height - h) / 2, left: (width - w) / 2, height: h, width: w)
    }

    /// Draws the crop for `image` and returns it resized to `size` x `size`.
    public func callAsFunction(_ image: RGBImage, rng: inout SeededGenerator) -> RGBImage {
        resizedCrop(image, cropParameters(width: image.width, height: image.height, rng: &rng),
                    size: size, passOrder: passOrder)
    }
}

/// `RandomResizedCrop.get_params` with the default scale (0.08, 1) and ratio (3/4, 4/3); see
/// ``RandomResizedCrop/cropParameters(width:height:rng:)``.
public func cropParameters(width: Int, height: Int, rng: inout SeededGenerator) -> CropBox {
    RandomResizedCrop(size: 1).cropParameters(width: width, height: height, rng: &rng)
}

/// The random choices of one ``CoOpTrainTransform`` application.
public struct TrainAugmentation: Equatable, Hashable, Sendable {
    public var crop: CropBox
    /// Whether the resized crop is mirrored left-right.
    public var flip: Bool

    public init(crop: CropBox, flip: Bool) {
        self.crop = crop
        self.flip = flip
    }
}

/// CoOp's training transform (Dassl `build_transform(cfg, is_train=True)` with CoOp's
/// `INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]`, `INPUT.SIZE = (224, 224)`,
/// `INPUT.INTERPOLATION = "bicubic"`, CLIP's pixel mean and std):
/// `RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=BICUBIC)`, `RandomHorizontalFlip(0.5)`,
/// `ToTensor()`, `Normalize(mean, std)`. Applied to the RGB image (Dassl reads
/// `Image.open(p).convert("RGB")`), it gives a [3, size, size] Tensor.
///
/// Randomness comes only from the ``SeededGenerator`` passed in: the crop (see
/// ``RandomResizedCrop``), then one uniform draw `u` with `flip = u < 0.5` (torchvision:
/// `torch.rand(1) < p`). Given the same ``TrainAugmentation`` the result is bit-exact with
/// torchvision + Pillow 13 (`Goldens/jpeg` `train*` goldens).
public struct CoOpTrainTransform: Sendable, Equatable {
    public var randomResizedCrop: RandomResizedCrop
    public var flipProbability: Float
    public var mean: [Float]
    public var std: [Float]

    public init(size: Int = 224, scale: ClosedRange<Double> = 0.08 ... 1.0,
                ratio: ClosedRange<Double> = (3.0 / 4.0) ... (4.0 / 3.0), flipProbability: Float = 0.5,
                mean: [Float] = CLIPImageNormalization.mean, std: [Float] = CLIPImageNormalization.std,
                passOrder: ResamplePassOrder = .pillow13) {
        randomResizedCrop = RandomResizedCrop(size: size, scale: scale, ratio: ratio, passOrder: passOrder)
        self.flipProbability = flipProbability
        self.mean = mean
        self.std = std
    }

    public var size: Int { randomResizedCrop.size }

    /// Draws the crop and the flip for a `width` x `height` image.
    public func parameters(width: Int, height: Int, rng: inout SeededGenerator) -> TrainAugmentation {
        let box = randomResizedCrop.cropParameters(width: width, height: height, rng: &rng)
        let flip = rng.nextUniform() < flipProbability
        return TrainAugmentation(crop: box, flip: flip)
    }

    /// The augmented image before ToTensor: resized crop, then the flip.
    public func augmentedImage(_ image: RGBImage, _ p: TrainAugmentation) -> RGBImage {
        let resized = resizedCrop(image, p.crop, size: size, passOrder: randomResizedCrop.passOrder)
        return p.flip ? horizontalFlip(resized) : resized
    }

    /// The normalised [3, size, size] tensor for fixed parameters.
    public func callAsFunction(_ image: RGBImage, _ p: TrainAugmentation) -> Tensor {
        normalizedTensor(augmentedImage(image, p), mean: mean, std: std)
    }

    /// Draws parameters from `rng` and applies them.
    public func callAsFunction(_ image: RGBImage, rng: inout SeededGenerator) -> Tensor {
        self(image, parameters(width: image.width, height: image.height, rng: &rng))
    }
}

/// CoOp's train preprocessing at `resolution` (224 for ViT-B/16): see ``CoOpTrainTransform``.
public func clipTrainPreprocess(_ image: RGBImage, resolution: Int = 224, rng: inout SeededGenerator) -> Tensor {
    CoOpTrainTransform(size: resolution)(image, rng: &rng)
}

private extension Float {
    var logValue: Float { Foundation.log(self) }
    static func expValue(_ x: Float) -> Float { Foundation.exp(x) }
}
