import Foundation
import TensorCore
import TensorIO

/// One tensor of CLIP: its OpenAI state-dict name and shape, what kind of parameter it is, and
/// where it lives in a `CLIPModel`. `CLIPConfig.parameters` lists every tensor once; loading,
/// shape checks, gradient names, optimiser groups and the state-dict writers all derive from it.
public struct CLIPParameter: @unchecked Sendable {
    /// What a parameter is, for optimiser rules (weight decay applies to `.matrix` only).
    public enum Role: String, Sendable {
        /// Linear and convolution weights, the two projections.
        case matrix
        /// LayerNorm weights.
        case gain
        case bias
        /// Token, positional and class embeddings.
        case embedding
        /// The log of the logit scale.
        case logitScale = "logit_scale"
    }

    public let name: String
    /// The shape under OpenAI's name (`visual.conv1.weight` is [W, 3, P, P]; the model stores the
    /// kernel flattened, [W, 3*P*P]; `logit_scale` is []).
    public let shape: [Int]
    public let role: Role
    let keyPath: WritableKeyPath<CLIPModel, Tensor>

    public var count: Int { shape.reduce(1, *) }
    /// Whether AdamW's decoupled weight decay applies (matrices only, as is usual for CLIP).
    public var decays: Bool { role == .matrix }
}

extension CLIPConfig {
    /// Every tensor of a ViT CLIP model of this architecture, once, in a fixed order (image tower,
    /// text tower, logit scale). A ResNet CLIP's image tensors are not parameters (its batch norms
    /// are folded into the convolutions at load and the tower is frozen, forward only): the table
    /// then lists the text tower and the logit scale, and `expectedCLIPTensorShapes` adds the
    /// tower's checkpoint tensors (`ResNetArchitecture.tensorShapes`).
    public var parameters: [CLIPParameter] {
        var out: [CLIPParameter] = []
        func add(_ name: String, _ shape: [Int], _ role: CLIPParameter.Role, _ path: WritableKeyPath<CLIPModel, Tensor>) {
            out.append(CLIPParameter(name: name, shape: shape, role: role, keyPath: path))
        }
        func layerNorm(_ name: String, _ w: Int, _ path: WritableKeyPath<CLIPModel, LayerNorm>) {
            add(name + ".weight", [w], .gain, path.appending(path: \.weight))
            add(name + ".bias", [w], .bias, path.appending(path: \.bias))
        }
        func linear(_ name: String, _ out: Int, _ inp: Int, _ path: WritableKeyPath<CLIPModel, Linear>) {
            add(name + ".weight", [out, inp], .matrix, path.appending(path: \.weight))
            add(name + ".bias", [out], .bias, path.appending(path: \.bias!))
        }
        func blocks(_ prefix: String, layers: Int, width w: Int, _ tower: WritableKeyPath<CLIPModel, Transformer>) {
            for i in 0..<layers {
                let b = "\(prefix)\(i).", block = tower.appending(path: \.blocks[i])
                add(b + "attn.in_proj_weight", [3 * w, w], .matrix, block.appending(path: \.attention.inProj.weight))
                add(b + "attn.in_proj_bias", [3 * w], .bias, block.appending(path: \.attention.inProj.bias!))
                linear(b + "attn.out_proj", w, w, block.appending(path: \.attention.outProj))
                layerNorm(b + "ln_1", w, block.appending(path: \.ln1))
                linear(b + "mlp.c_fc", 4 * w, w, block.appending(path: \.fc))
                linear(b + "mlp.c_proj", w, 4 * w, block.appending(path: \.proj))
                layerNorm(b + "ln_2", w, block.appending(path: \.ln2))
            }
        }
        let (vw, p) = (visionWidth, patchSize)
        if resnet == nil {
            add("visual.conv1.weight", [vw, 3, p, p], .matrix, \.image.patchEmbedding.weight)
            add("visual.class_embedding", [vw], .embedding, \.image.classEmbedding)
            add("visual.positional_embedding", [visionTokens, vw], .embedding, \.image.positionalEmbedding)
            layerNorm("visual.ln_pre", vw, \.image.lnPre)
            blocks("visual.transformer.resblocks.", layers: visionLayers, width: vw, \.image.transformer)
            layerNorm("visual.ln_post", vw, \.image.lnPost)
            add("visual.proj", [vw, embedDim], .matrix, \.image.projection)
        }
        let tw = textWidth
        add("token_embedding.weight", [vocabSize, tw], .embedding, \.text.tokenEmbedding)
        add("positional_embedding", [contextLength, tw], .embedding, \.text.positionalEmbedding)
        blocks("transformer.resblocks.", layers: textLayers, width: tw, \.text.transformer)
        layerNorm("ln_final", tw, \.text.lnFinal)
        add("text_projection", [tw, embedDim], .matrix, \.text.projection)
        add("logit_scale", [], .logitScale, \.logScaleTensor)
        return out
    }
}

/// Tensor names and shapes of a CLIP model, in OpenAI's naming, in a fixed order (a ResNet
/// tower's first).
public func expectedCLIPTensorShapes(_ c: CLIPConfig) -> [(name: String, shape: [Int])] {
    (c.resnet?.tensorShapes ?? []) + c.parameters.map { ($0.name, $0.shape) }
}

extension CLIPModel {
    /// `logScale` as a scalar tensor, so the parameter table reaches it like every other tensor.
    public var logScaleTensor: Tensor {
        get { Tensor(scalar: logScale) }
        set { logScale = newValue[0] }
    }

    /// A parameter's tensor under its state-dict shape; setting it keeps the model's own layout
    /// (the element count must match).
    public subscript(parameter p: CLIPParameter) -> Tensor {
        get { self[keyPath: p.keyPath].reshaped(p.shape) }
        set {
            let stored = self[keyPath: p.keyPath].shape
            precondition(newValue.count == p.count, "parameter '\(p.name)': \(newValue.shape), expected \(p.shape)")
            self[keyPath: p.keyPath] = newValue.reshaped(stored)
        }
    }

    /// The parameter table of this model's architecture.
    public var parameters: [CLIPParameter] { config.parameters }

    /// Every tensor under its OpenAI name and shape (a model-shaped gradient gives the gradients).
    public func stateDict() -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, self[parameter: $0]) })
    }

    /// A model of this architecture with every tensor zero: the starting point for assembling a
    /// checkpoint, and the shape of a gradient.
    public static func zeros(config c: CLIPConfig) -> CLIPModel {
        zeros(config: c, resnet: c.resnet.map { a in
            // Zero weights and unit variances: a tower that maps every image to c_proj's bias.
            let tensors = Dictionary(uniqueKeysWithValues: a.tensorShapes.map { name, shape in
                (name, name.hasSuffix("running_var") ? Tensor(shape: shape, data: .init(repeating: 1, count: shape.reduce(1, *))) : Tensor(zeros: shape))
            })
            return try! ResNetTower(architecture: a, tensors: tensors)
        })
    }

    /// A zero model whose image tower is `resnet` (a ResNet CLIP), or a zero ViT.
    static func zeros(config c: CLIPConfig, resnet: ResNetTower?) -> CLIPModel {
        func ln(_ w: Int) -> LayerNorm { LayerNorm(weight: Tensor(zeros: [w]), bias: Tensor(zeros: [w])) }
        func linear(_ out: Int, _ inp: Int) -> Linear { Linear(weight: Tensor(zeros: [out, inp]), bias: Tensor(zeros: [out])) }
        func blocks(_ layers: Int, _ w: Int, _ heads: Int) -> Transformer {
            Transformer(blocks: (0..<layers).map { _ in
                ResidualBlock(ln1: ln(w), attention: MultiheadAttention(inProj: linear(3 * w, w), outProj: linear(w, w), heads: heads),
                              ln2: ln(w), fc: linear(4 * w, w), proj: linear(w, 4 * w))
            })
        }
        let (vw, p) = (c.visionWidth, c.patchSize)
        let image = resnet.map { ImageTower(resnet: $0) } ?? ImageTower(
            patchEmbedding: Linear(weight: Tensor(zeros: [vw, 3 * p * p]), bias: nil),
            classEmbedding: Tensor(zeros: [vw]), positionalEmbedding: Tensor(zeros: [c.visionTokens, vw]),
            lnPre: ln(vw), transformer: blocks(c.visionLayers, vw, c.visionHeads), lnPost: ln(vw),
            projection: Tensor(zeros: [vw, c.embedDim]), patchSize: p)
        let text = TextTower(
            tokenEmbedding: Tensor(zeros: [c.vocabSize, c.textWidth]), positionalEmbedding: Tensor(zeros: [c.contextLength, c.textWidth]),
            transformer: blocks(c.textLayers, c.textWidth, c.textHeads), lnFinal: ln(c.textWidth),
            projection: Tensor(zeros: [c.textWidth, c.embedDim]))
        return CLIPModel(config: c, text: text, image: image, logScale: 0)
    }

    /// A zero gradient shaped like this model.
    public func zeroGradient() -> CLIPModel { .zeros(config: config) }

    /// Writes the model as `torch.save(model.state_dict())` does (OpenAI's names, sorted), as F32 or
    /// F16 storages; `torch.load` and openai's `build_model` read it.
    public func writeStateDict(to url: URL, dtype: StorageDType = .float32) throws {
        try TorchArchive.writeStateDict(stateDict(), to: url, dtype: dtype)
    }

    /// Writes the model as open_clip's `open_clip_model.safetensors` (OpenAI's names).
    public func writeOpenCLIPSafetensors(to url: URL, dtype: StorageDType = .float32, metadata: [String: String] = [:]) throws {
        try Safetensors.write(tensors: stateDict(), metadata: metadata, to: url, dtype: dtype)
    }
}
