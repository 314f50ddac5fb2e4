import TensorCore

/// openai/CLIP's normalisation constants (`Normalize(mean, std)` in `clip._transform`), rounded to
/// Float32 from the Double literals as `torch.as_tensor(mean, dtype=torch.float32)` does.
public enum CLIPImageNormalization {
    public static let mean: [Float] = [0.48145466, 0.4578275, 0.40821073].map { (v: Double) in Float(v) }
    public static let std: [Float] = [0.26862954, 0.26130258, 0.27577711].map { (v: Double) in Float(v) }
}

/// The size torchvision's `Resize(size)` (an int) gives a `width` x `height` image: the shorter side
/// becomes `size`, the longer `int(size * long / short)`.
public func resizedShorterSideSize(width: Int, height: Int, to size: Int) -> (width: Int, height: Int) {
    precondition(width > 0 && height > 0 && size > 0, "resizedShorterSideSize: sizes must be positive")
    let (short, long) = width <= height ? (width, height) : (height, width)
    let newLong = Int(Double(size * long) / Double(short))  // Python: int(size * long / short)
    return width <= height ? (size, newLong) : (newLong, size)
}

/// torchvision `Resize(size, interpolation=BICUBIC)` on a PIL image: the shorter side becomes `size`
/// with Pillow's bicubic resampling (``resizeBicubic(_:width:height:)``); unchanged if already so.
public func resizeShorterSide(_ image: RGBImage, to size: Int,
                              passOrder: ResamplePassOrder = .pillow13) -> RGBImage {
    let (w, h) = resizedShorterSideSize(width: image.width, height: image.height, to: size)
    return resizeBicubic(image, width: w, height: h, passOrder: passOrder)
}

/// torchvision `CenterCrop((height, width))`: `top = int(round((H - height) / 2.0))` and likewise
/// `left`, with Python's round-half-to-even; a crop larger than the image is zero-padded first as
/// torchvision does (left/top pad `(crop - size) // 2`, right/bottom the rest).
public func centerCrop(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
    precondition(width > 0 && height > 0, "centerCrop: size \(width)x\(height) must be positive")
    func offset(_ inSize: Int, _ crop: Int) -> Int {
        if crop > inSize { return -((crop - inSize) / 2) }  // padded, then the crop starts at 0
        return Int((Double(inSize - crop) / 2.0).rounded(.toNearestOrEven))
    }
    let left = offset(image.width, width), top = offset(image.height, height)
    if left == 0 && top == 0 && width == image.width && height == image.height { return image }
    var out = [UInt8](repeating: 0, count: width * height * 3)
    let x0 = max(0, -left), x1 = min(width, image.width - left)  // output columns that hit the image
    if x1 > x0 {
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0 ..< height {
                    let sy = y + top
                    guard sy >= 0 && sy < image.height else { continue }
                    let from = (sy * image.width + x0 + left) * 3
                    let to = (y * width + x0) * 3
                    (dst.baseAddress! + to).update(from: src.baseAddress! + from, count: (x1 - x0) * 3)
                }
            }
        }
    }
    return RGBImage(width: width, height: height, pixels: out)
}

/// torchvision `CenterCrop(size)`: a `size` x `size` crop (see ``centerCrop(_:width:height:)``).
public func centerCrop(_ image: RGBImage, size: Int) -> RGBImage {
    centerCrop(image, width: size, height: size)
}

/// torchvision `ToTensor()` then `Normalize(mean, std)`: a [3, height, width] tensor of
/// `(Float(v) / 255 - mean[c]) / std[c]`, each operation rounded to Float32 as PyTorch does.
public func normalizedTensor(_ image: RGBImage,
                             mean: [Float] = CLIPImageNormalization.mean,
                             std: [Float] = CLIPImageNormalization.std) -> Tensor {
    precondition(mean.count == 3 && std.count == 3, "normalizedTensor: mean and std need 3 values")
    let plane = image.width * image.height
    var data = [Float](repeating: 0, count: 3 * plane)
    image.pixels.withUnsafeBufferPointer { src in
        data.withUnsafeMutableBufferPointer { dst in
            for c in 0 ..< 3 {
                let m = mean[c], s = std[c]
                let base = c * plane
                for i in 0 ..< plane {
                    let x = Float(src[3 * i + c]) / 255
                    dst[base + i] = (x - m) / s
                }
            }
        }
    }
    return Tensor(shape: [3, image.height, image.width], data: data)
}

/// openai/CLIP's inference preprocessing `_transform(resolution)`: Resize(resolution, BICUBIC),
/// CenterCrop(resolution), ToTensor, Normalize; a [3, resolution, resolution] tensor.
/// `passOrder` picks the Pillow generation to match (see ``ResamplePassOrder``).
///
/// Matches torchvision + Pillow bit for bit on an RGB image, i.e. on `Image.open(p).convert("RGB")`
/// (what CoOp/Dassl's loaders feed it). openai's `preprocess` applied to an unconverted RGBA / LA /
/// palette image resizes before converting (premultiplied alpha, or NEAREST for palettes) and so
/// differs for such files.
public func clipPreprocess(_ image: RGBImage, resolution: Int,
                           passOrder: ResamplePassOrder = .pillow13) -> Tensor {
    precondition(resolution > 0, "clipPreprocess: resolution must be positive")
    let resized = resizeShorterSide(image, to: resolution, passOrder: passOrder)
    return normalizedTensor(centerCrop(resized, size: resolution))
}
