import Foundation
import TensorCore
import TensorIO

// ALL renaming of checkpoint keys to OpenAI's state-dict names lives in this file:
//   - wrappers: torch.save dicts nesting the weights under "state_dict" / "model", DDP's "module."
//   - Hugging Face transformers CLIPModel names -> OpenAI names (q/k/v concatenated into in_proj,
//     the two projections transposed)
//   - scalars stored as [1] -> [].

/// A tensor as the checkpoint stores it, loaded on demand.
struct RawTensor {
    let name: String
    let shape: [Int]
    let load: () throws -> Tensor
}

/// How to build one OpenAI-named tensor from the checkpoint's tensors.
enum TensorRecipe {
    case tensor(RawTensor)
    case transposed(RawTensor)
    case concatenated([RawTensor])
    case reshaped(RawTensor, [Int])
    /// The checkpoint has some but not all of the tensors this one is made from.
    case incomplete(missing: [String])

    /// The shape in OpenAI's layout; nil when it cannot be built.
    var shape: [Int]? {
        switch self {
        case .tensor(let t): return t.shape
        case .transposed(let t): return t.shape.count == 2 ? [t.shape[1], t.shape[0]] : nil
        case .concatenated(let parts):
            guard let first = parts.first else { return nil }
            let tail = Array(first.shape.dropFirst())
            guard !first.shape.isEmpty, parts.allSatisfy({ $0.shape.count == first.shape.count && Array($0.shape.dropFirst()) == tail })
            else { return nil }
            var rows = 0
            for p in parts {
                let (sum, overflow) = rows.addingReportingOverflow(p.shape[0])
                if overflow { return nil }
                rows = sum
            }
            return [rows] + tail
        case .reshaped(_, let s): return s
        case .incomplete: return nil
        }
    }

    /// Where the tensor comes from, for error messages ("'text_projection.weight' [32, 64], transposed").
    var origin: String {
        switch self {
        case .tensor(let t): return "'\(t.name)' \(t.shape)"
        case .transposed(let t): return "'\(t.name)' \(t.shape), transposed"
        case .concatenated(let parts): return parts.map { "'\($0.name)' \($0.shape)" }.joined(separator: " + ")
        case .reshaped(let t, _): return "'\(t.name)' \(t.shape)"
        case .incomplete(let missing): return "missing \(missing.map { "'\($0)'" }.joined(separator: ", "))"
        }
    }

    /// True when the stored tensor is used as is, under the same name.
    var isDirect: Bool {
        if case .tensor = self { return true }
        return false
    }

    func materialize() throws -> Tensor {
        switch self {
        case .tensor(let t):
            return try t.load()
        case .reshaped(let t, let shape):
            return try t.load().reshaped(shape)
        case .transposed(let t):
            let m = try t.load()
            guard m.shape.count == 2 else {
                throw FileError(.badShape, path: "", "'\(t.name)' has shape \(m.shape), expected a matrix")
            }
            let (r, c) = (m.shape[0], m.shape[1])
            var out = [Float](repeating: 0, count: r * c)
            m.data.withUnsafeBufferPointer { src in
                for i in 0..<r { for j in 0..<c { out[j * r + i] = src[i * c + j] } }
            }
            return Tensor(shape: [c, r], data: out)
        case .concatenated(let parts):
            var data: [Float] = []
            var rows = 0
            var tail: [Int] = []
            for p in parts {
                let t = try p.load()
                data.append(contentsOf: t.data)
                rows += t.shape.first ?? 0
                tail = Array(t.shape.dropFirst())
            }
            return Tensor(shape: [rows] + tail, data: data)
        case .incomplete(let missing):
            throw FileError(.missingEntry, path: "", "missing \(missing.joined(separator: ", "))")
        }
    }
}

/// The result of `sanitize`: OpenAI-named recipes, and what the checkpoint's names looked like.
struct SanitizedTensors {
    var recipes: [String: TensorRecipe]
    /// "" or the wrapper prefix that was stripped ("module.", "state_dict.", ...).
    var strippedPrefix: String
    var usesHuggingFaceNames: Bool
}

/// Hugging Face `CLIPModel` names of the non-layer tensors, by OpenAI name.
private let hfGlobalNames: [(openAI: String, hf: String)] = [
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("ln_final.weight", "text_model.final_layer_norm.weight"),
    ("ln_final.bias", "text_model.final_layer_norm.bias"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),   // sic: transformers spells it "layrnorm"
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
    ("logit_scale", "logit_scale"),
]

/// Stored transposed by Hugging Face (nn.Linear weights, [out, in]) vs OpenAI ([in, out] parameters).
private let hfTransposedNames: [(openAI: String, hf: String)] = [
    ("text_projection", "text_projection.weight"),
    ("visual.proj", "visual_projection.weight"),
]

/// Per-layer suffixes: OpenAI `resblocks.N.<a>` <- Hugging Face `layers.N.<b>`.
private let hfLayerNames: [(openAI: String, hf: String)] = [
    ("attn.out_proj.weight", "self_attn.out_proj.weight"),
    ("attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("ln_1.weight", "layer_norm1.weight"),
    ("ln_1.bias", "layer_norm1.bias"),
    ("ln_2.weight", "layer_norm2.weight"),
    ("ln_2.bias", "layer_norm2.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
    ("mlp.c_proj.bias", "mlp.fc2.bias"),
]

/// OpenAI's fused attention input projection <- Hugging Face's separate q, k, v (concatenated in that order).
private let hfFusedLayerNames: [(openAI: String, hf: [String])] = [
    ("attn.in_proj_weight", ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"]),
    ("attn.in_proj_bias", ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]),
]

/// Layer prefixes of the two towers: OpenAI <- Hugging Face.
private let hfTowers: [(openAI: String, hf: String)] = [
    ("transformer.resblocks.", "text_model.encoder.layers."),
    ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
]

/// Wrapper prefixes tried first, in this order, when several are possible.
private let preferredPrefixes = ["", "module.", "state_dict.", "state_dict.module.", "model.", "model.module.",
                                 "clip.", "model.clip."]

/// Renames a checkpoint's tensors to OpenAI's state-dict names.
///
/// Finds the weights inside wrapper dicts (`state_dict`, `model`, DDP's `module.`) by locating the
/// token embedding; translates Hugging Face `CLIPModel` names (q/k/v fused into `in_proj`, the
/// projections transposed); reshapes a `[1]` `logit_scale` to a scalar. Tensors outside the found
/// prefix and names it does not know are passed through / ignored by the caller.
func sanitize(_ raw: [String: RawTensor]) -> SanitizedTensors {
    // 1. Where are the weights? Anchor on the token embedding (HF name first: it also ends in the OpenAI one).
    let hfAnchor = "text_model.embeddings.token_embedding.weight"
    let openAIAnchor = "token_embedding.weight"
    var hfPrefixes: [String] = []
    var openAIPrefixes: [String] = []
    for name in raw.keys {
        if name.hasSuffix(hfAnchor) {
            let p = String(name.dropLast(hfAnchor.count))
            if p.isEmpty || p.hasSuffix(".") { hfPrefixes.append(p) }
        } else if name.hasSuffix(openAIAnchor) {
            let p = String(name.dropLast(openAIAnchor.count))
            if p.isEmpty || p.hasSuffix(".") { openAIPrefixes.append(p) }
        }
    }
    func choose(_ candidates: [String]) -> String? {
        if let p = preferredPrefixes.first(where: candidates.contains) { return p }
        return candidates.sorted { ($0.count, $0) < ($1.count, $1) }.first
    }
    let isHF: Bool
    let prefix: String
    if let p = choose(openAIPrefixes) {
        isHF = false; prefix = p
    } else if let p = choose(hfPrefixes) {
        isHF = true; prefix = p
    } else {
        // No token embedding anywhere: guess from the other keys; validation will name what is missing.
        isHF = raw.keys.contains { $0.contains("vision_model.") || $0.contains("text_model.") }
        if isHF {
            prefix = ""
        } else {
            let conv = raw.keys.filter { $0 == "visual.conv1.weight" || $0.hasSuffix(".visual.conv1.weight") }
            prefix = choose(conv.map { String($0.dropLast("visual.conv1.weight".count)) }) ?? ""
        }
    }

    // 2. Strip the prefix.
    var stripped: [String: RawTensor] = [:]
    for (name, t) in raw where name.hasPrefix(prefix) {
        stripped[String(name.dropFirst(prefix.count))] = t
    }

    // 3. Rename.
    var recipes: [String: TensorRecipe] = [:]
    if isHF {
        for (openAI, hf) in hfGlobalNames {
            if let t = stripped[hf] { recipes[openAI] = .tensor(t) }
        }
        for (openAI, hf) in hfTransposedNames {
            if let t = stripped[hf] { recipes[openAI] = .transposed(t) }
        }
        for tower in hfTowers {
            for i in 0 ..< layerCount(in: stripped.keys, prefix: tower.hf) {
                let from = "\(tower.hf)\(i).", to = "\(tower.openAI)\(i)."
                for (a, b) in hfLayerNames {
                    if let t = stripped[from + b] { recipes[to + a] = .tensor(t) }
                }
                for (a, parts) in hfFusedLayerNames {
                    let found = parts.compactMap { stripped[from + $0] }
                    if found.count == parts.count {
                        recipes[to + a] = .concatenated(found)
                    } else if !found.isEmpty {
                        recipes[to + a] = .incomplete(missing: parts.filter { stripped[from + $0] == nil }.map { prefix + from + $0 })
                    }
                }
            }
        }
    } else {
        for (name, t) in stripped { recipes[name] = .tensor(t) }
    }

    // 4. Scalars stored with one element.
    if case .tensor(let t)? = recipes["logit_scale"], t.shape == [1] {
        recipes["logit_scale"] = .reshaped(t, [])
    }
    return SanitizedTensors(recipes: recipes, strippedPrefix: prefix, usesHuggingFaceNames: isHF)
}

/// The checkpoint's own name(s) for an OpenAI-named tensor, for error messages about missing tensors.
func checkpointNames(forOpenAIName name: String, in s: SanitizedTensors) -> [String] {
    guard s.usesHuggingFaceNames else { return [s.strippedPrefix + name] }
    if let g = hfGlobalNames.first(where: { $0.openAI == name }) { return [s.strippedPrefix + g.hf] }
    if let g = hfTransposedNames.first(where: { $0.openAI == name }) { return [s.strippedPrefix + g.hf] }
    // Layer tensors: OpenAI's text prefix is a suffix of the vision one, so try the longer first.
    for tower in hfTowers.sorted(by: { $0.openAI.count > $1.openAI.count }) where name.hasPrefix(tower.openAI) {
        let rest = name.dropFirst(tower.openAI.count)
        guard let dot = rest.firstIndex(of: ".") else { break }
        let index = rest[..<dot], suffix = String(rest[rest.index(after: dot)...])
        let base = "\(s.strippedPrefix)\(tower.hf)\(index)."
        if let l = hfLayerNames.first(where: { $0.openAI == suffix }) { return [base + l.hf] }
        if let f = hfFusedLayerNames.first(where: { $0.openAI == suffix }) { return f.hf.map { base + $0 } }
        break
    }
    return [name]
}

/// 1 + the highest N of keys `<prefix>N.<...>` (0 when there are none).
func layerCount<S: Sequence>(in names: S, prefix: String) -> Int where S.Element == String {
    var count = 0
    for name in names where name.hasPrefix(prefix) {
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]), i >= 0, i < 10_000 else { continue }
        count = max(count, i + 1)
    }
    return count
}
