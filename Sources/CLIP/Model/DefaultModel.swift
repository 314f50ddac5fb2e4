import Foundation

extension CLIPModel {
    /// The committed demonstration model (a micro-CLIP PromptTune pretrained on Fashion-MNIST; see
    /// models/fashion-clip/MODEL-CARD.md), relative to the repository root.
    public static let defaultModelPath = "models/fashion-clip/model.pt"

    /// Where the default model is: `defaultModelPath` under the current folder when it exists there,
    /// else under the repository that holds the running executable (`.build/<config>/prompttune`),
    /// else the relative path itself (so an error names it).
    public static func defaultModelLocation() -> String {
        let fm = FileManager.default
        if fm.fileExists(atPath: defaultModelPath) { return defaultModelPath }
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent(defaultModelPath)
            if fm.fileExists(atPath: candidate.path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        return defaultModelPath
    }
}
