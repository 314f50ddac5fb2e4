import ArgumentParser
import CLIP
import Foundation

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the architecture inferred from a checkpoint.")

    @OptionGroup var model: ModelOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() throws {
        let weights = try loadCLIPWeights(path: model.model)
        let c = weights.config
        let params = weights.tensors.values.reduce(0) { $0 + $1.count }
        if json {
            let data = try JSONEncoder().encode(c)
            var obj = (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
            obj["format"] = weights.format.rawValue
            obj["parameters"] = params
            print(jsonLine(obj))
            return
        }
        printTable("\(model.model): \(weights.format), \(String(format: "%.1f", Double(params) / 1e6))M parameters", [
            ("image tower", "ViT, \(c.imageResolution)x\(c.imageResolution) px, patch \(c.patchSize) (\(c.gridSize)x\(c.gridSize) patches)"),
            ("", "width \(c.visionWidth), \(c.visionLayers) layers, \(c.visionHeads) heads"),
            ("text tower", "context \(c.contextLength), vocabulary \(c.vocabSize)"),
            ("", "width \(c.textWidth), \(c.textLayers) layers, \(c.textHeads) heads"),
            ("embedding", "\(c.embedDim)"),
            ("logit scale", String(format: "%.4f", exp(Double(weights.tensors["logit_scale"]?[0] ?? 0)))),
        ])
    }
}
