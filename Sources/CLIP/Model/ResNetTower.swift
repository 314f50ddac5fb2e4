import Foundation
import TensorCore

/// The architecture of CLIP's ModifiedResNet image tower (RN50: layers [3, 4, 6, 3], width 64,
/// resolution 224, heads 32, embed 1024), as openai's `build_model` infers it from a checkpoint.
public struct ResNetArchitecture: Equatable, Codable, Sendable {
    /// Bottleneck blocks in layer1 ... layer4.
    public var layers: [Int]
    /// The stem's output channels (layer1's planes); the tower ends with width * 32 channels.
    public var width: Int
    public var resolution: Int
    /// The attention pool's heads (width * 32 / 64 in every OpenAI model).
    public var heads: Int
    /// The attention pool's output width (the joint embedding).
    public var embedDim: Int

    public init(layers: [Int], width: Int, resolution: Int, heads: Int, embedDim: Int) {
        self.layers = layers; self.width = width; self.resolution = resolution; self.heads = heads; self.embedDim = embedDim
    }

    /// Channels entering the attention pool.
    public var featureWidth: Int { width * 32 }
    /// Side of the grid the attention pool sees (the image downsampled 32 times).
    public var gridSize: Int { resolution / 32 }
    /// "RN50" ... "RN50x64" where the shape is one of OpenAI's, else a description.
    public var name: String {
        switch (layers, width) {
        case ([3, 4, 6, 3], 64): return "RN50"
        case ([3, 4, 23, 3], 64): return "RN101"
        case ([4, 6, 10, 6], 80): return "RN50x4"
        case ([6, 8, 18, 8], 96): return "RN50x16"
        case ([3, 15, 36, 10], 128): return "RN50x64"
        default: return "ResNet \(layers.map(String.init).joined(separator: "-")) width \(width)"
        }
    }

    /// Every tensor of the tower under OpenAI's state-dict names (`visual.` prefix), in a fixed order.
    public var tensorShapes: [(name: String, shape: [Int])] {
        var out: [(String, [Int])] = []
        func conv(_ name: String, _ o: Int, _ i: Int, _ k: Int) { out.append((name + ".weight", [o, i, k, k])) }
        func bn(_ name: String, _ c: Int) {
            for s in ["weight", "bias", "running_mean", "running_var"] { out.append((name + "." + s, [c])) }
        }
        let w = width
        conv("visual.conv1", w / 2, 3, 3); bn("visual.bn1", w / 2)
        conv("visual.conv2", w / 2, w / 2, 3); bn("visual.bn2", w / 2)
        conv("visual.conv3", w, w / 2, 3); bn("visual.bn3", w)
        var inplanes = w
        for (l, blocks) in layers.enumerated() {
            let planes = w << l, stride = l == 0 ? 1 : 2
            for i in 0..<blocks {
                let b = "visual.layer\(l + 1).\(i)."
                conv(b + "conv1", planes, inplanes, 1); bn(b + "bn1", planes)
                conv(b + "conv2", planes, planes, 3); bn(b + "bn2", planes)
                conv(b + "conv3", planes * 4, planes, 1); bn(b + "bn3", planes * 4)
                if i == 0 && (stride > 1 || inplanes != planes * 4) {
                    conv(b + "downsample.0", planes * 4, inplanes, 1); bn(b + "downsample.1", planes * 4)
                }
                inplanes = planes * 4
            }
        }
        let c = featureWidth
        out.append(("visual.attnpool.positional_embedding", [gridSize * gridSize + 1, c]))
        for p in ["q_proj", "k_proj", "v_proj"] {
            out.append(("visual.attnpool.\(p).weight", [c, c])); out.append(("visual.attnpool.\(p).bias", [c]))
        }
        out.append(("visual.attnpool.c_proj.weight", [embedDim, c])); out.append(("visual.attnpool.c_proj.bias", [embedDim]))
        return out
    }
}

/// CLIP's ModifiedResNet image tower (openai/CLIP `model.py`): a three-convolution stem, four layers
/// of Bottleneck blocks with anti-aliased strided downsampling (an average pool before the stride,
/// in the block and in its downsample branch), and an attention pool. Batch norms are frozen and
/// folded into the convolutions (eps 1e-5). Forward only: the methods that train through the image
/// tower need a ViT.
///
/// Activations run in NHWC (B, H, W, C), the layout oneDNN's convolutions read without reordering.
public struct ResNetTower: Sendable {
    public struct Bottleneck: Sendable {
        public var conv1: Conv2D       // 1x1, BN folded, ReLU
        public var conv2: Conv2D       // 3x3 pad 1, BN folded, ReLU
        public var conv3: Conv2D       // 1x1, BN folded; + identity, ReLU
        /// 1x1 convolution (BN folded) after an average pool of `stride`.
        public var downsample: Conv2D?
        /// The average pool before conv3 (and before the downsample convolution): 1 or 2.
        public let stride: Int

        public init(conv1: Conv2D, conv2: Conv2D, conv3: Conv2D, downsample: Conv2D?, stride: Int) {
            self.conv1 = conv1; self.conv2 = conv2; self.conv3 = conv3; self.downsample = downsample; self.stride = stride
        }

        // x: B, H, W, Cin -> B, H/stride, W/stride, 4 * planes
        public func forward(_ x: Tensor, workspace: Workspace? = nil) -> Tensor {
            var y = x
            forward(&y, workspace: workspace)
            return y
        }

        /// The block in place: `x` becomes its output. Without a downsample branch the last
        /// convolution adds into x's own storage (no copy of the identity); intermediates go back
        /// to `workspace`.
        public func forward(_ x: inout Tensor, workspace: Workspace? = nil) {
            let a = conv1.forward(x, relu: true, workspace: workspace)
            var out = conv2.forward(a, relu: true, workspace: workspace)
            workspace?.recycle(a)
            if stride > 1 {
                let pooled = averagePool(out, size: stride, workspace: workspace)
                workspace?.recycle(out)
                out = pooled
            }
            if let downsample {
                let pooled = averagePool(x, size: stride, workspace: workspace)
                var identity = downsample.forward(pooled, workspace: workspace)
                if stride > 1 { workspace?.recycle(pooled) }
                conv3.forward(out, relu: true, accumulatingInto: &identity)
                swap(&x, &identity)
                workspace?.recycle(identity)  // the block's input
            } else {
                conv3.forward(out, relu: true, accumulatingInto: &x)
            }
            workspace?.recycle(out)
        }
    }

    /// Attention pooling: the mean of the spatial tokens is prepended to them, a positional
    /// embedding added, and that first token attends (multi-head) to all of them; `c_proj` maps the
    /// result to the joint embedding.
    public struct AttentionPool: Sendable {
        public var positionalEmbedding: Tensor  // 1 + G*G, C
        public var q: Linear, k: Linear, v: Linear  // C -> C
        public var c: Linear                    // C -> E
        public let heads: Int

        // x: B, G, G, C -> B, E
        public func forward(_ x: Tensor) -> Tensor {
            let (b, t) = (x.shape[0], x.shape[1] * x.shape[2] + 1)
            let tokens = attentionPoolTokens(x, positionalEmbedding: positionalEmbedding)
            let queries = q.forward(q.backend.gatherRows(tokens, (0..<b).map { $0 * t }))   // B, C
            let keys = k.forward(tokens), values = v.forward(tokens)                       // B*T, C
            let pooled = singleQueryAttention(queries: queries, keys: keys, values: values, heads: heads, tokens: t)
            return c.forward(pooled)
        }
    }

    public let architecture: ResNetArchitecture
    public var stem: [Conv2D]          // 3x3 stride 2, 3x3, 3x3; each BN folded + ReLU; then avgpool 2
    public var layers: [[Bottleneck]]  // layer1 ... layer4
    public var attentionPool: AttentionPool

    /// What runs the tower: its convolutions' and the attention pool's products.
    public var backend: any ComputeBackend {
        get { attentionPool.c.backend }
        set {
            for i in stem.indices { stem[i].backend = newValue }
            for l in layers.indices {
                for i in layers[l].indices {
                    layers[l][i].conv1.backend = newValue; layers[l][i].conv2.backend = newValue
                    layers[l][i].conv3.backend = newValue; layers[l][i].downsample?.backend = newValue
                }
            }
            for keyPath in [\AttentionPool.q, \.k, \.v, \.c] { attentionPool[keyPath: keyPath].backend = newValue }
        }
    }

    public var resolution: Int { architecture.resolution }
    public var embedDim: Int { architecture.embedDim }

    /// The tower from tensors under OpenAI's names (`visual.layer1.0.bn1.running_var`, ...), every
    /// one of `architecture.tensorShapes` present with its shape (the loader checks that first).
    public init(architecture a: ResNetArchitecture, tensors: [String: Tensor]) throws {
        for (name, shape) in a.tensorShapes {
            guard let t = tensors[name] else { throw CLIPModel.AssemblyError.missing(name) }
            guard t.shape == shape else { throw CLIPModel.AssemblyError.shape(name, expected: shape, found: t.shape) }
        }
        func convBN(_ conv: String, _ bn: String, stride: Int = 1, padding: Int = 0) -> Conv2D {
            Conv2D.folding(weight: tensors[conv + ".weight"]!, gamma: tensors[bn + ".weight"]!, beta: tensors[bn + ".bias"]!,
                           mean: tensors[bn + ".running_mean"]!, variance: tensors[bn + ".running_var"]!,
                           eps: 1e-5, stride: stride, padding: padding)
        }
        func linear(_ name: String) -> Linear { Linear(weight: tensors[name + ".weight"]!, bias: tensors[name + ".bias"]!) }
        architecture = a
        stem = [convBN("visual.conv1", "visual.bn1", stride: 2, padding: 1),
                convBN("visual.conv2", "visual.bn2", padding: 1),
                convBN("visual.conv3", "visual.bn3", padding: 1)]
        layers = a.layers.enumerated().map { l, blocks in
            (0..<blocks).map { i in
                let b = "visual.layer\(l + 1).\(i).", stride = (l > 0 && i == 0) ? 2 : 1
                let down = tensors[b + "downsample.0.weight"] == nil ? nil : convBN(b + "downsample.0", b + "downsample.1")
                return Bottleneck(conv1: convBN(b + "conv1", b + "bn1"), conv2: convBN(b + "conv2", b + "bn2", padding: 1),
                                  conv3: convBN(b + "conv3", b + "bn3"), downsample: down, stride: stride)
            }
        }
        attentionPool = AttentionPool(positionalEmbedding: tensors["visual.attnpool.positional_embedding"]!,
                                      q: linear("visual.attnpool.q_proj"), k: linear("visual.attnpool.k_proj"),
                                      v: linear("visual.attnpool.v_proj"), c: linear("visual.attnpool.c_proj"),
                                      heads: a.heads)
    }

    /// The stem: B, R, R, 3 -> B, R/4, R/4, width.
    public func forwardStem(_ x: Tensor, workspace: Workspace? = nil) -> Tensor {
        var x = x
        for conv in stem {
            let y = conv.forward(x, relu: true, workspace: workspace)
            workspace?.recycle(x)
            x = y
        }
        let pooled = averagePool(x, size: 2, workspace: workspace)
        workspace?.recycle(x)
        return pooled
    }

    /// pixels: B, 3, R, R -> features B, E (not normalised). `stages` receives the stem's and each
    /// layer's output (B, H, W, C) when given. With a `workspace` the activations reuse its buffers
    /// (a batch of 32 at 224 px allocates gigabytes otherwise).
    public func forward(pixels: Tensor, workspace: Workspace? = nil, stages: ((_ name: String, _ value: Tensor) -> Void)? = nil) -> Tensor {
        let r = resolution
        precondition(pixels.rank == 4 && Array(pixels.shape.dropFirst()) == [3, r, r],
                     "image tower input \(pixels.shape), expected [B, 3, \(r), \(r)]")
        var x = forwardStem(channelsLast(pixels), workspace: workspace)
        stages?("stem", x)
        for (l, blocks) in layers.enumerated() {
            for block in blocks { block.forward(&x, workspace: workspace) }
            stages?("layer\(l + 1)", x)
        }
        let features = attentionPool.forward(x)
        workspace?.recycle(x)
        return features
    }
}
