/// CLIP's architecture, inferred from a checkpoint's tensor shapes as openai's `build_model` does.
public struct CLIPConfig: Equatable, Codable, Sendable {
    public var embedDim: Int          // joint embedding width (text_projection columns)
    // Image tower: a ViT, or the ResNet of `resnet` (then patchSize is its downsampling, 32,
    // visionWidth the channels entering its attention pool, visionLayers its Bottleneck blocks,
    // visionHeads the attention pool's heads).
    public var imageResolution: Int
    public var patchSize: Int
    public var visionWidth: Int
    public var visionLayers: Int
    public var visionHeads: Int
    // Text tower
    public var contextLength: Int
    public var vocabSize: Int
    public var textWidth: Int
    public var textLayers: Int
    public var textHeads: Int
    /// The ModifiedResNet image tower of a ResNet CLIP (RN50, RN101, RN50x4, ...); nil for a ViT.
    public var resnet: ResNetArchitecture?

    public init(embedDim: Int, imageResolution: Int, patchSize: Int, visionWidth: Int, visionLayers: Int,
                visionHeads: Int, contextLength: Int, vocabSize: Int, textWidth: Int, textLayers: Int,
                textHeads: Int) {
        self.embedDim = embedDim; self.imageResolution = imageResolution; self.patchSize = patchSize
        self.visionWidth = visionWidth; self.visionLayers = visionLayers; self.visionHeads = visionHeads
        self.contextLength = contextLength; self.vocabSize = vocabSize; self.textWidth = textWidth
        self.textLayers = textLayers; self.textHeads = textHeads
    }

    /// A ResNet CLIP: the image tower `resnet`, the text tower as given.
    public init(resnet r: ResNetArchitecture, contextLength: Int, vocabSize: Int, textWidth: Int, textLayers: Int, textHeads: Int) {
        self.init(embedDim: r.embedDim, imageResolution: r.resolution, patchSize: 32, visionWidth: r.featureWidth,
                  visionLayers: r.layers.reduce(0, +), visionHeads: r.heads, contextLength: contextLength, vocabSize: vocabSize,
                  textWidth: textWidth, textLayers: textLayers, textHeads: textHeads)
        resnet = r
    }

    /// Whether the image tower is a vision transformer (what visual prompts and every image-tower
    /// backward need).
    public var isViT: Bool { resnet == nil }

    /// "ViT-B/16", "ViT 12x768 patch 32", "RN50", ...: the image tower in a few words.
    public var imageTowerName: String {
        if let resnet { return resnet.name }
        if visionLayers == 12 && visionWidth == 768 { return "ViT-B/\(patchSize)" }
        if visionLayers == 24 && visionWidth == 1024 { return "ViT-L/\(patchSize)" }
        return "ViT \(visionLayers)x\(visionWidth) patch \(patchSize)"
    }

    /// Patches per side.
    public var gridSize: Int { imageResolution / patchSize }
    /// Tokens of the image tower: class token plus patches.
    public var visionTokens: Int { gridSize * gridSize + 1 }

    /// RN50 as OpenAI released it (its text tower is ViT-B/16's, its embedding 1024 wide).
    public static let rn50 = CLIPConfig(
        resnet: ResNetArchitecture(layers: [3, 4, 6, 3], width: 64, resolution: 224, heads: 32, embedDim: 1024),
        contextLength: 77, vocabSize: 49408, textWidth: 512, textLayers: 12, textHeads: 8)

    /// ViT-B/16 as OpenAI released it.
    public static let vitB16 = CLIPConfig(
        embedDim: 512, imageResolution: 224, patchSize: 16, visionWidth: 768, visionLayers: 12,
        visionHeads: 12, contextLength: 77, vocabSize: 49408, textWidth: 512, textLayers: 12, textHeads: 8)
}
