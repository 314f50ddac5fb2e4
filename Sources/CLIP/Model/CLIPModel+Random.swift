import Foundation
import TensorCore

extension CLIPModel {
    /// A CLIP of the given architecture with seeded random weights at CLIP-like scales, for
    /// benchmarks and tests that need no checkpoint.
    public static func random(config c: CLIPConfig, seed: UInt64) -> CLIPModel {
        var rng = SeededGenerator(seed: seed)
        func normal(_ shape: [Int], _ std: Float) -> Tensor { .randomNormal(shape, std: std, using: &rng) }
        func ln(_ w: Int) -> LayerNorm { LayerNorm(weight: normal([w], 0.1) + Tensor(shape: [w], data: .init(repeating: 1, count: w)), bias: normal([w], 0.02)) }
        func linear(_ out: Int, _ inp: Int, std: Float) -> Linear { Linear(weight: normal([out, inp], std), bias: normal([out], 0.02)) }
        func blocks(_ layers: Int, _ w: Int, _ heads: Int) -> Transformer {
            let std = 1 / Float(w).squareRoot()
            return Transformer(blocks: (0..<layers).map { _ in
                ResidualBlock(ln1: ln(w),
                              attention: MultiheadAttention(inProj: linear(3 * w, w, std: std),
                                                            outProj: linear(w, w, std: std / Float(2 * layers).squareRoot()),
                                                            heads: heads),
                              ln2: ln(w), fc: linear(4 * w, w, std: 1 / Float(2 * w).squareRoot()),
                              proj: linear(w, 4 * w, std: std / Float(2 * layers).squareRoot()))
            })
        }
        let (vw, p) = (c.visionWidth, c.patchSize)
        let vstd = 1 / Float(vw).squareRoot()
        let image = c.resnet.map { ImageTower(resnet: .random(architecture: $0, using: &rng)) } ?? ImageTower(
            patchEmbedding: Linear(weight: normal([vw, 3 * p * p], 1 / Float(3 * p * p).squareRoot()), bias: nil),
            classEmbedding: normal([vw], vstd), positionalEmbedding: normal([c.visionTokens, vw], vstd),
            lnPre: ln(vw), transformer: blocks(c.visionLayers, vw, c.visionHeads), lnPost: ln(vw),
            projection: normal([vw, c.embedDim], vstd), patchSize: p)
        let tw = c.textWidth
        let text = TextTower(
            tokenEmbedding: normal([c.vocabSize, tw], 0.02), positionalEmbedding: normal([c.contextLength, tw], 0.01),
            transformer: blocks(c.textLayers, tw, c.textHeads), lnFinal: ln(tw),
            projection: normal([tw, c.embedDim], 1 / Float(tw).squareRoot()))
        return CLIPModel(config: c, text: text, image: image, logScale: log(100))
    }
}

extension ResNetTower {
    /// A tower with seeded random weights: He-initialised convolutions, batch norms with random
    /// statistics near the identity, attention-pool projections at 1/sqrt(width).
    public static func random(architecture a: ResNetArchitecture, using rng: inout SeededGenerator) -> ResNetTower {
        var tensors: [String: Tensor] = [:]
        for (name, shape) in a.tensorShapes {
            let n = shape.reduce(1, *)
            let t: Tensor
            if name.hasSuffix("running_var") {
                t = .randomUniform(shape, 0.5, 1.5, using: &rng)
            } else if name.hasSuffix("running_mean") || (name.hasSuffix(".bias")) {
                t = .randomNormal(shape, std: 0.02, using: &rng)
            } else if shape.count == 1 {  // batch-norm gains
                t = .randomNormal(shape, std: 0.1, using: &rng) + Tensor(shape: shape, data: .init(repeating: 1, count: n))
            } else if shape.count == 4 {
                t = .randomNormal(shape, std: (2 / Float(n / shape[0])).squareRoot(), using: &rng)
            } else {
                t = .randomNormal(shape, std: 1 / Float(shape[1]).squareRoot(), using: &rng)
            }
            tensors[name] = t
        }
        return try! ResNetTower(architecture: a, tensors: tensors)
    }
}

/// Floating-point operations of the forward passes as PromptTune runs them (multiply-add = 2),
/// for GFLOP/s reports: the last block computes only the rows that are read after its attention.
public enum FLOPs {
    /// A transformer of `layers` blocks over sequences of the given lengths, width `w`, reading
    /// `outputsPerSequence` rows of each from the last block.
    public static func transformer(layers: Int, lengths: [Int], width w: Int, outputsPerSequence: Int = 1) -> Double {
        let rows = Double(lengths.reduce(0, +)), w = Double(w)
        let outputs = Double(lengths.count * outputsPerSequence)
        let attention = lengths.reduce(0.0) { $0 + 4 * Double($1 * $1) * w }
        let full = 2 * rows * w * (3 * w + w + 4 * w + 4 * w) + attention
        let last = 2 * rows * w * 3 * w + attention + 2 * outputs * w * (w + 4 * w + 4 * w)
        return Double(layers - 1) * full + last
    }

    /// The text tower on sequences of the given lengths (each row cut after its own EOT).
    public static func textForward(_ c: CLIPConfig, lengths: [Int]) -> Double {
        transformer(layers: c.textLayers, lengths: lengths, width: c.textWidth) + 2 * Double(lengths.count * c.textWidth * c.embedDim)
    }

    public static func imageForward(_ c: CLIPConfig, batch: Int) -> Double {
        if let r = c.resnet { return resnetForward(r, batch: batch) }
        let patches = Double(batch * (c.visionTokens - 1))
        return 2 * patches * Double(3 * c.patchSize * c.patchSize * c.visionWidth)
            + transformer(layers: c.visionLayers, lengths: Array(repeating: c.visionTokens, count: batch), width: c.visionWidth)
            + 2 * Double(batch * c.visionWidth * c.embedDim)
    }

    /// The ResNet's convolutions, the attention pool's projections and attention (pools and the
    /// residual sums, a few hundredths of a percent, left out).
    public static func resnetForward(_ a: ResNetArchitecture, batch: Int) -> Double {
        var total = 0.0
        var side = a.resolution
        func conv(_ o: Int, _ i: Int, _ k: Int, out s: Int) { total += 2 * Double(batch * s * s * o * i * k * k) }
        side /= 2
        conv(a.width / 2, 3, 3, out: side); conv(a.width / 2, a.width / 2, 3, out: side); conv(a.width, a.width / 2, 3, out: side)
        side /= 2
        var inplanes = a.width
        for (l, blocks) in a.layers.enumerated() {
            let planes = a.width << l
            for i in 0..<blocks {
                conv(planes, inplanes, 1, out: side)
                conv(planes, planes, 3, out: side)
                if l > 0 && i == 0 { side /= 2 }
                conv(planes * 4, planes, 1, out: side)
                if i == 0 && (l > 0 || inplanes != planes * 4) { conv(planes * 4, inplanes, 1, out: side) }
                inplanes = planes * 4
            }
        }
        let (t, c) = (Double(side * side + 1), Double(a.featureWidth))
        let b = Double(batch)
        return total + 2 * b * (2 * t * c * c + c * c + 2 * t * c + c * Double(a.embedDim))
    }
}
