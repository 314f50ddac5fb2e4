import ArgumentParser
import CLIP
import Experiments
import Foundation
import PromptLearning
import TensorCore

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a trained prompt in the reference code's checkpoint format.",
        discussion: """
            --format coop writes Dassl's checkpoint dict, as CoOp, KgCoOp and DAPT save their prompt learner \
            (torch.save({"state_dict": OrderedDict, "epoch": N, "optimizer": None, "scheduler": None, "val_result": None})): \
            ctx [M, D] or [K, M, D] (class-specific), or DAPT's txt_ctx [M, D] and vis_ctx [1, N, W] for prompts with a \
            visual prompt, and the frozen token_prefix [K, 1, D] and token_suffix [K, 77-1-M, D] of the model given. \
            Name OUT <dir>/prompt_learner/model.pth.tar-<epoch> for CoOp's load_model(<dir>, epoch) (it loads with \
            torch.load, drops token_prefix/suffix and load_state_dict(strict=False)); the file also loads with \
            torch.load(OUT, weights_only=True).
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable { case coop }

    @OptionGroup var model: ModelOptions
    @Option(help: "Output format: coop (Dassl's prompt_learner checkpoint of CoOp, KgCoOp and DAPT).") var format: Format
    @Argument(help: "The prompt: prompt.ptprompt from `train`, prompt.safetensors from `run` (or a reference checkpoint, rewritten).")
    var prompt: String
    @Argument(help: "The file to write, e.g. out/prompt_learner/model.pth.tar-50.") var out: String
    @Option(parsing: .unconditional, help: "The epoch the file records (default: the prompt's epochs done).") var epoch: Int?

    func validate() throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: out, isDirectory: &isDir), isDir.boolValue {
            throw ValidationError("OUT \(out) is a folder; give the file to write, e.g. \(out)/prompt_learner/model.pth.tar-\(epoch ?? 50)")
        }
        if let epoch, epoch < 0 { throw ValidationError("--epoch must be 0 or more (got \(epoch))") }
    }

    func run() throws {
        let (file, notes) = try referencePrompt()
        try file.write(to: URL(fileURLWithPath: out))
        for n in notes { FileHandle.standardError.write(Data("note: \(n)\n".utf8)) }
        var rows: [(String, String)] = [("layout", file.layout.rawValue), ("epoch", file.epoch.map(String.init) ?? "None")]
        if let c = file.context { rows.append((file.layout == .dapt ? "txt_ctx" : "ctx", "\(c.shape)")) }
        if let v = file.visualPrompt { rows.append(("vis_ctx", "\([1] + v.shape)")) }
        if let p = file.tokenPrefix { rows.append(("token_prefix", "\(p.shape)")) }
        if let s = file.tokenSuffix { rows.append(("token_suffix", "\(s.shape)")) }
        printTable("wrote \(out)", rows)
    }

    /// The reference checkpoint of the prompt, and what a user of the reference code must set to load it.
    func referencePrompt() throws -> (ReferencePrompt, [String]) {
        let p = try TrainedPrompt.read(path: prompt)
        if var r = p.reference {   // already the reference's: written again (fp32, our pickle)
            if let epoch { r.epoch = epoch }
            return (r, [])
        }
        let digest = try modelDigest(model.model)
        if !p.modelDigest.isEmpty && p.modelDigest != digest {
            throw ValidationError("\(prompt) was trained with another model than \(model.model); give that model with --model (its token embeddings make token_prefix and token_suffix)")
        }
        guard let names = p.classNames, !names.isEmpty else { throw ValidationError("\(prompt) records no class names") }
        // The layouts written are CoOp's, KgCoOp's and DAPT's: any other architecture's tensors would be dropped.
        guard [.context, .visual, .contextAndVisual].contains(p.method.architecture) else {
            throw ValidationError("\(prompt) is a \(p.method.name) prompt (\(p.parameters.names.joined(separator: ", "))); --format coop writes the prompt learners of CoOp, KgCoOp and DAPT, which have no place for its other tensors, so nothing was written")
        }
        let clip = try CLIPModel.load(path: model.model)
        var notes: [String] = []
        var prefix: Tensor? = nil, suffix: Tensor? = nil
        if let c = p.context {
            guard c.lastDim == clip.text.width else {
                throw ValidationError("\(prompt): its context has width \(c.lastDim) but \(model.model)'s text width is \(clip.text.width); give the model it was trained with")
            }
            let m = p.method.prompt.contextLength
            (prefix, suffix) = ReferencePrompt.frozenEmbeddings(model: clip, tokenizer: try CLIPTokenizer(), classNames: names, contextLength: m)
            var settings = ["N_CTX \(m)"]
            if p.method.prompt.classSpecific { settings.append("CSC True") }
            if p.method.prompt.position != .end { settings.append("CLASS_TOKEN_POSITION \(p.method.prompt.position.rawValue)") }
            notes.append("load it with TRAINER.COOP \(settings.joined(separator: ", ")) (the checkpoint does not record these) and the class names in this order: \(names.prefix(6).joined(separator: ", "))\(names.count > 6 ? ", ..." : "")")
        }
        let layout: ReferencePrompt.Layout = p.visualPrompt != nil ? .dapt : p.method.name.hasPrefix("kgcoop") ? .kgcoop : .coop
        if layout == .kgcoop {
            notes.append("KgCoOp's bias_vectors and meta_net are not written: its forward never uses them, and load_model's strict=False keeps their initial values")
        }
        if p.method.anchors != nil || p.method.name.contains("+") {
            notes.append("\(p.method.name)'s extra loss terms shape training only; the reference evaluates the prompt as \(layout.rawValue)")
        }
        return (ReferencePrompt(layout: layout, epoch: epoch ?? p.epochsDone, context: p.context, visualPrompt: p.visualPrompt,
                                tokenPrefix: prefix, tokenSuffix: suffix), notes)
    }
}
