import ArgumentParser
import CLIP

@main
struct PromptTune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prompttune",
        abstract: "Prompt tuning for CLIP: exact to the reference, fast on a CPU.",
        subcommands: [Info.self, Embed.self, DatasetsCommand.self, Sample.self, FeaturesCommand.self, Train.self, Eval.self, Export.self, Run.self, Status.self, Analyze.self, ReportCommand.self, Pretrain.self, Bench.self])
}

/// The checkpoint option every model command shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "CLIP checkpoint: OpenAI TorchScript .pt, torch.save state dict, open_clip .safetensors, or a Hugging Face model directory / model.safetensors. Default: the committed demonstration model (a micro-CLIP pretrained on Fashion-MNIST, models/fashion-clip/model.pt).",
        valueName: "path"))
    var model: String = CLIPModel.defaultModelLocation()
}
