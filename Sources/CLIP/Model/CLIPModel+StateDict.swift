import TensorCore
import TensorIO

/// Assembles the towers from tensors under OpenAI's state-dict names (the canonical schema every
/// checkpoint format is renamed to by the loader's `sanitize`).
extension CLIPModel {
    public enum AssemblyError: Error, CustomStringConvertible {
        case missing(String)
        case shape(String, expected: [Int], found: [Int])
        public var description: String {
            switch self {
            case .missing(let k): return "checkpoint has no tensor '\(k)'"
            case .shape(let k, let e, let f): return "tensor '\(k)' has shape \(f), expected \(e)"
            }
        }
    }

    /// Every tensor of `config.parameters`, by name, with the table's shape (scalars may be [] or [1]).
    /// A ResNet CLIP's image tower is built from its checkpoint tensors (batch norms folded).
    public init(config c: CLIPConfig, tensors: [String: Tensor]) throws {
        let resnet = try c.resnet.map { try ResNetTower(architecture: $0, tensors: tensors) }
        var model = CLIPModel.zeros(config: c, resnet: resnet)
        for p in c.parameters {
            guard let t = tensors[p.name] else { throw AssemblyError.missing(p.name) }
            guard t.shape == p.shape || (p.shape == [] && t.count == 1) else {
                throw AssemblyError.shape(p.name, expected: p.shape, found: t.shape)
            }
            model[parameter: p] = t
        }
        self = model
    }
}

extension CLIPModel {
    /// Reads a checkpoint in any supported format (see `loadCLIPWeights`) and builds the model.
    public static func load(path: String) throws -> CLIPModel {
        let weights = try loadCLIPWeights(path: path)
        if let act = weights.hiddenAct, act != "quick_gelu" {
            throw FileError(.unsupported, path: path,
                            "config.json sets hidden_act '\(act)'; PromptTune's towers use QuickGELU as OpenAI's CLIP does (hidden_act 'quick_gelu').")
        }
        do {
            return try CLIPModel(config: weights.config, tensors: weights.tensors)
        } catch let e as AssemblyError {
            throw FileError(.missingEntry, path: path, e.description)
        }
    }
}
