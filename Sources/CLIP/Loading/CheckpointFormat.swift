import Foundation
import TensorCore
import TensorIO

/// The CLIP checkpoint formats `loadCLIPWeights` reads.
public enum CheckpointFormat: String, Sendable, CaseIterable, CustomStringConvertible {
    /// openai's released `.pt` files (`ViT-B-16.pt`): a TorchScript archive, fp16.
    case torchScript
    /// `torch.save(model.state_dict())` (also wrapped under "state_dict" / "model", or with DDP's "module.").
    case stateDict
    /// open_clip's `open_clip_model.safetensors`: OpenAI's key names.
    case openCLIPSafetensors
    /// A Hugging Face transformers `CLIPModel` (`config.json` + `model.safetensors`).
    case huggingFace

    public var description: String {
        switch self {
        case .torchScript: return "TorchScript archive (OpenAI .pt)"
        case .stateDict: return "torch.save state dict"
        case .openCLIPSafetensors: return "open_clip safetensors"
        case .huggingFace: return "Hugging Face CLIPModel"
        }
    }
}

/// What a Hugging Face `config.json` says (only the fields the loader uses).
struct HFConfigFile {
    var path: String
    var text: [String: Any]
    var vision: [String: Any]
    var top: [String: Any]

    func int(_ section: [String: Any], _ key: String) -> Int? {
        guard let v = section[key] else { return nil }
        if let n = v as? NSNumber { return n.intValue }
        return v as? Int
    }

    static func read(_ path: String) throws -> HFConfigFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FileError(.unreadable, path: path, "cannot read the file; check its permissions.")
        }
        // A config.json is a few KB: bound its size and nesting before Foundation's recursive parser sees it.
        guard data.count <= 1 << 20 else {
            throw FileError(.invalidConfig, path: path,
                            "\(data.count) bytes is far larger than a CLIP config.json (a few KB). Download the model's config.json again.")
        }
        var depth = 0, deepest = 0, inString = false, escaped = false
        for byte in data {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1; deepest = max(deepest, depth)
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
        }
        guard deepest <= 32 else {
            throw FileError(.invalidConfig, path: path,
                            "JSON nested \(deepest) levels deep; a CLIP config.json has a few. Download the model's config.json again.")
        }
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: data) } catch {
            throw FileError(.invalidConfig, path: path,
                            "not valid JSON (\(error.localizedDescription)). Download the model's config.json again.")
        }
        guard let top = json as? [String: Any] else {
            throw FileError(.invalidConfig, path: path, "not a JSON object. Download the model's config.json again.")
        }
        // Older configs also carry `text_config_dict` / `vision_config_dict`, which transformers lets override.
        func section(_ name: String) -> [String: Any] {
            var merged = top[name] as? [String: Any] ?? [:]
            for (k, v) in top["\(name)_dict"] as? [String: Any] ?? [:] { merged[k] = v }
            return merged
        }
        return HFConfigFile(path: path, text: section("text_config"), vision: section("vision_config"), top: top)
    }
}

/// A checkpoint opened for reading: its tensors under their stored names, loaded on demand.
struct OpenedCheckpoint {
    enum Container { case torchScript, torchZip, safetensors }
    /// The path the caller gave.
    var path: String
    var container: Container
    var tensors: [String: RawTensor]
    var hfConfig: HFConfigFile?
    /// A config.json beside a checkpoint file, read only if the tensors turn out to use Hugging Face names.
    var siblingConfigPath: String?
}

private func exists(_ path: String, directory: Bool = false) -> Bool {
    var isDirectory: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue == directory
}

private func join(_ dir: String, _ name: String) -> String {
    dir.hasSuffix("/") ? dir + name : dir + "/" + name
}

/// Opens a checkpoint file or a Hugging Face model directory, detecting the format from content.
func openCheckpoint(path: String) throws -> OpenedCheckpoint {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw FileError(.fileNotFound, path: path,
                        "no such file or directory. Pass a CLIP checkpoint: an OpenAI .pt file, a torch.save state dict, "
                        + "an open_clip .safetensors file, or a Hugging Face model directory (config.json + model.safetensors).")
    }
    if isDirectory.boolValue { return try openDirectory(path) }
    if (path as NSString).lastPathComponent == "config.json" {
        return try openDirectory((path as NSString).deletingLastPathComponent, given: path)
    }
    var opened = try openFile(path)
    // A model.safetensors / pytorch_model.bin inside a Hugging Face model directory: its config.json gives the heads.
    let folder = (path as NSString).deletingLastPathComponent
    let sibling = join(folder.isEmpty ? "." : folder, "config.json")
    if exists(sibling) { opened.siblingConfigPath = sibling }
    return opened
}

private func openDirectory(_ dir: String, given: String? = nil) throws -> OpenedCheckpoint {
    let configPath = join(dir, "config.json")
    let config = exists(configPath) ? try HFConfigFile.read(configPath) : nil
    let candidates = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "open_clip_model.safetensors",
                      "open_clip_pytorch_model.bin"]
    guard let found = candidates.first(where: { exists(join(dir, $0)) }) else {
        let listing = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
        throw FileError(.fileNotFound, path: join(dir, "model.safetensors"),
                        "no such file: this Hugging Face model directory has no model.safetensors "
                        + "(it contains: \(listing.isEmpty ? "nothing" : listing.joined(separator: ", "))). "
                        + "Download model.safetensors (and config.json) from the model's page into \(dir), "
                        + "or pass the path of a checkpoint file instead.")
    }
    var opened: OpenedCheckpoint
    if found == "model.safetensors.index.json" {
        opened = try openShardedSafetensors(join(dir, found), directory: dir)
    } else {
        opened = try openFile(join(dir, found))
    }
    opened.path = given ?? dir
    opened.hfConfig = config
    return opened
}

private func openFile(_ path: String) throws -> OpenedCheckpoint {
    let file = try MappedFile(path: path)
    if ZipArchive.looksLikeZip(file) {
        return try openTorch(TorchArchive(zip: ZipArchive(file: file)), path: path)
    }
    if file.count >= 9, file.load(UInt8.self, at: 8) == UInt8(ascii: "{") {
        return openSafetensors(try SafetensorsFile(file: file), path: path)
    }
    if file.load(UInt8.self, at: 0) == 0x80 {
        return try openTorch(TorchArchive(path: path), path: path)  // reports the legacy format
    }
    if file.count == 0 {
        throw FileError(.wrongFormat, path: path, "the file is empty. Download the checkpoint again.")
    }
    let head = (file.bytes(offset: 0, length: min(8, file.count)) ?? []).map { b in
        (b < 16 ? "0" : "") + String(b, radix: 16)
    }.joined(separator: " ")
    throw FileError(.wrongFormat, path: path,
                    "unknown checkpoint format: neither a PyTorch zip archive (.pt/.bin, starts with 'PK') nor a safetensors file "
                    + "(8-byte header length, then '{'); the first bytes are \(head). Pass an OpenAI .pt file, a torch.save "
                    + "state dict, an open_clip .safetensors file, or a Hugging Face model directory.")
}

private func openTorch(_ archive: TorchArchive, path: String) throws -> OpenedCheckpoint {
    var tensors: [String: RawTensor] = [:]
    for (name, ref) in archive.tensorReferences() where tensors[name] == nil {
        tensors[name] = RawTensor(name: name, shape: ref.shape) { try archive.tensor(ref, name: name) }
    }
    return OpenedCheckpoint(path: path, container: archive.isTorchScript ? .torchScript : .torchZip, tensors: tensors)
}

private func openSafetensors(_ file: SafetensorsFile, path: String) -> OpenedCheckpoint {
    var tensors: [String: RawTensor] = [:]
    for entry in file.entries {
        tensors[entry.name] = RawTensor(name: entry.name, shape: entry.shape) { try file.tensor(entry) }
    }
    return OpenedCheckpoint(path: path, container: .safetensors, tensors: tensors)
}

private func openShardedSafetensors(_ indexPath: String, directory: String) throws -> OpenedCheckpoint {
    guard let data = FileManager.default.contents(atPath: indexPath),
          let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
          let weightMap = json["weight_map"] as? [String: String] else {
        throw FileError(.corrupt, path: indexPath, "not a valid safetensors index (expected a JSON object with a \"weight_map\"). Download it again.")
    }
    var tensors: [String: RawTensor] = [:]
    for shard in Set(weightMap.values).sorted() {
        let file = try SafetensorsFile(path: join(directory, shard))
        for entry in file.entries {
            tensors[entry.name] = RawTensor(name: entry.name, shape: entry.shape) { try file.tensor(entry) }
        }
    }
    return OpenedCheckpoint(path: directory, container: .safetensors, tensors: tensors)
}

/// The format of a checkpoint file or directory, detected from its content.
public func detectCheckpointFormat(path: String) throws -> CheckpointFormat {
    let opened = try openCheckpoint(path: path)
    return checkpointFormat(opened, sanitize(opened.tensors))
}

func checkpointFormat(_ opened: OpenedCheckpoint, _ s: SanitizedTensors) -> CheckpointFormat {
    switch opened.container {
    case .torchScript: return .torchScript
    case .torchZip: return s.usesHuggingFaceNames ? .huggingFace : .stateDict
    case .safetensors: return s.usesHuggingFaceNames ? .huggingFace : .openCLIPSafetensors
    }
}
