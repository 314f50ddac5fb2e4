import ArgumentParser
import CLIP
import Foundation
import TensorCore

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the compute path (GEMM backend, kernels, CPU) and, with --model, the architecture inferred from a checkpoint.")

    @Option(name: .long, help: ArgumentHelp(
        "CLIP checkpoint: OpenAI TorchScript .pt, torch.save state dict, open_clip .safetensors, or a Hugging Face model directory / model.safetensors.",
        valueName: "path"))
    var model: String?
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() throws {
        let compute = GEMMDiagnostics.current()
        guard let path = model else {
            if json { print(try jsonText(["compute": compute.json])) } else { printTable("compute", compute.rows) }
            return
        }
        let weights = try loadCLIPWeights(path: path)
        let c = weights.config
        let params = weights.tensors.values.reduce(0) { $0 + $1.count }
        if json {
            let data = try JSONEncoder().encode(c)
            var obj = (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
            obj["format"] = weights.format.rawValue
            obj["parameters"] = params
            obj["compute"] = compute.json
            print(try jsonText(obj))
            return
        }
        let image: [(String, String)]
        if let r = c.resnet {
            image = [("image tower", "\(r.name) (ModifiedResNet), \(r.resolution)x\(r.resolution) px, blocks per layer \(r.layers.map(String.init).joined(separator: "-"))"),
                     ("", "width \(r.width) (\(r.featureWidth) channels into the attention pool, \(r.gridSize)x\(r.gridSize) grid), \(r.heads) heads"),
                     ("", "forward only: text-prompt methods; VPT, DAPT, MaPLe and PromptSRC need a ViT")]
        } else {
            image = [("image tower", "ViT, \(c.imageResolution)x\(c.imageResolution) px, patch \(c.patchSize) (\(c.gridSize)x\(c.gridSize) patches)"),
                     ("", "width \(c.visionWidth), \(c.visionLayers) layers, \(c.visionHeads) heads")]
        }
        printTable("\(path): \(weights.format), \(String(format: "%.1f", Double(params) / 1e6))M parameters", image + [
            ("text tower", "context \(c.contextLength), vocabulary \(c.vocabSize)"),
            ("", "width \(c.textWidth), \(c.textLayers) layers, \(c.textHeads) heads"),
            ("embedding", "\(c.embedDim)"),
            ("logit scale", String(format: "%.4f", exp(Double(weights.tensors["logit_scale"]?[0] ?? 0)))),
        ] + compute.rows)
    }
}
