import CLIP
import Foundation
import TensorCore
import XCTest

/// A small random CLIP with the real vocabulary, 2 text heads, for engine tests.
let smallConfig = CLIPConfig(embedDim: 16, imageResolution: 16, patchSize: 8, visionWidth: 64, visionLayers: 1,
                             visionHeads: 1, contextLength: 77, vocabSize: 49408, textWidth: 32, textLayers: 2, textHeads: 2)
let smallModel = CLIPModel.random(config: smallConfig, seed: 7)
let sharedTokenizer = try! CLIPTokenizer()
