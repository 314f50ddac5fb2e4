/// CLIP's architecture, inferred from a checkpoint's tensor shapes as openai's `build_model` does.
public struct CLIPConfig: Equatable, Codable, Sendable {
    public var embedDim: Int          // joint embedding width (text_projection columns)
    // Image tower (ViT)
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

    public init(embedDim: Int, imageResolution: Int, patchSize: Int, visionWidth: Int, visionLayers: Int,
                visionHeads: Int, contextLength: Int, vocabSize: Int, textWidth: Int, textLayers: Int,
                textHeads: Int) {
        self.embedDim = embedDim; self.imageResolution = imageResolution; self.patchSize = patchSize
        self.visionWidth = visionWidth; self.visionLayers = visionLayers; self.visionHeads = visionHeads
        self.contextLength = contextLength; self.vocabSize = vocabSize; self.textWidth = textWidth
        self.textLayers = textLayers; self.textHeads = textHeads
    }

    /// Patches per side.
    public var gridSize: Int { imageResolution / patchSize }
    /// Tokens of the image tower: class token plus patches.
    public var visionTokens: Int { gridSize * gridSize + 1 }

    /// ViT-B/16 as OpenAI released it.
    public static let vitB16 = CLIPConfig(
        embedDim: 512, imageResolution: 224, patchSize: 16, visionWidth: 768, visionLayers: 12,
        visionHeads: 12, contextLength: 77, vocabSize: 49408, textWidth: 512, textLayers: 12, textHeads: 8)
}
