import TensorCore

/// Assembles the towers from tensors under OpenAI's state-dict names (the canonical schema every
/// checkpoint format is renamed to by the loader's `sanitize`).
extension CLIPModel {
    public enum AssemblyError: Error, CustomStringConvertible {
        case missing(String)
        case shape(String, expected: [Int], found: [Int])
        public var description: String {
            switch self {
            case .missing(let k): return "checkpoint has no tensor '\(k)'"
            case .shape(let k, let e, let f): return "tensor '\(k)' has shape \(f), expected \(e)"
            }
        }
    }

    public init(config c: CLIPConfig, tensors: [String: Tensor]) throws {
        func get(_ key: String, _ shape: [Int]) throws -> Tensor {
            guard let t = tensors[key] else { throw AssemblyError.missing(key) }
            // Scalars are stored as [] or [1].
            if shape == [] && t.count == 1 { return t.reshaped([]) }
            guard t.shape == shape else { throw AssemblyError.shape(key, expected: shape, found: t.shape) }
            return t
        }
        func ln(_ p: String, _ w: Int) throws -> LayerNorm {
            LayerNorm(weight: try get(p + ".weight", [w]), bias: try get(p + ".bias", [w]))
        }
        func linear(_ p: String, _ out: Int, _ inp: Int) throws -> Linear {
            Linear(weight: try get(p + ".weight", [out, inp]), bias: try get(p + ".bias", [out]))
        }
        func blocks(_ p: String, layers: Int, width w: Int, heads: Int) throws -> Transformer {
            Transformer(blocks: try (0..<layers).map { i in
                let b = "\(p).resblocks.\(i)"
                return ResidualBlock(
                    ln1: try ln(b + ".ln_1", w),
                    attention: MultiheadAttention(
                        inProj: Linear(weight: try get(b + ".attn.in_proj_weight", [3 * w, w]),
                                       bias: try get(b + ".attn.in_proj_bias", [3 * w])),
                        outProj: try linear(b + ".attn.out_proj", w, w), heads: heads),
                    ln2: try ln(b + ".ln_2", w),
                    fc: try linear(b + ".mlp.c_fc", 4 * w, w),
                    proj: try linear(b + ".mlp.c_proj", w, 4 * w))
            })
        }
        let (vw, p) = (c.visionWidth, c.patchSize)
        let conv = try get("visual.conv1.weight", [vw, 3, p, p])
        let image = ImageTower(
            patchEmbedding: Linear(weight: conv.reshaped([vw, 3 * p * p]), bias: nil),
            classEmbedding: try get("visual.class_embedding", [vw]),
            positionalEmbedding: try get("visual.positional_embedding", [c.visionTokens, vw]),
            lnPre: try ln("visual.ln_pre", vw),
            transformer: try blocks("visual.transformer", layers: c.visionLayers, width: vw, heads: c.visionHeads),
            lnPost: try ln("visual.ln_post", vw),
            projection: try get("visual.proj", [vw, c.embedDim]),
            patchSize: p)
        let tw = c.textWidth
        let text = TextTower(
            tokenEmbedding: try get("token_embedding.weight", [c.vocabSize, tw]),
            positionalEmbedding: try get("positional_embedding", [c.contextLength, tw]),
            transformer: try blocks("transformer", layers: c.textLayers, width: tw, heads: c.textHeads),
            lnFinal: try ln("ln_final", tw),
            projection: try get("text_projection", [tw, c.embedDim]))
        self.init(config: c, text: text, image: image, logScale: try get("logit_scale", [])[0])
    }
}

extension CLIPModel {
    /// Reads a checkpoint in any supported format (see `loadCLIPWeights`) and builds the model.
    public static func load(path: String) throws -> CLIPModel {
        let weights = try loadCLIPWeights(path: path)
        if let act = weights.hiddenAct, act != "quick_gelu" {
            throw CLIPCheckpointError(.unsupportedArchitecture, path: path,
                                      "config.json sets hidden_act '\(act)'; PromptTune's towers use QuickGELU as OpenAI's CLIP does (hidden_act 'quick_gelu').")
        }
        do {
            return try CLIPModel(config: weights.config, tensors: weights.tensors)
        } catch let e as AssemblyError {
            throw CLIPCheckpointError(.missingTensor, path: path, e.description)
        }
    }
}
