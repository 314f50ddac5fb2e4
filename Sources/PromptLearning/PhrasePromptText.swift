import CLIP
import Foundation
import TensorCore

/// The text prompt MaPLe and PromptSRC share (their reference `PromptLearner`s build it the same
/// way): with an init phrase and M <= 4, the context is the embedding of the phrase's tokens 1...M
/// and the prompt is the whole phrase before the class name (MaPLe's 2 vectors leave "of a" fixed);
/// otherwise M "X" placeholders and N(0, 0.02). SOS, the context and the phrase's fixed words are
/// one shared prefix for every class; each class's own rows stop at its EOT; deep text prompts
/// replace the context rows (1...M) before the given blocks.
struct PhrasePromptText {
    let text: TextTower
    /// M context vectors.
    let contextLength: Int
    /// The context the init phrase gives (M x D), or nil: drawn N(0, 0.02) by the architecture.
    let phraseContext: Tensor?
    /// The shared prefix: SOS, the context rows (placeholders here), the fixed words of the init
    /// phrase after the context; P x D token embeddings, no positions.
    let prefixRows: Tensor
    /// Every class's rows after the prefix (name, ".", EOT), token embeddings, one class after
    /// another (T_k rows each: `suffixLengths`).
    let suffixRows: Tensor
    let suffixLengths: [Int]
    /// Token ids of every class's whole prompt, cut after its EOT (the reference's tokenized prompts).
    let tokens: [[Int]]

    /// `methodName` names the method in errors ("MaPLe", "PromptSRC").
    init(methodName: String, prompt: PromptConfig, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String]) throws {
        guard !prompt.classSpecific, prompt.position == .end else {
            throw PromptError(.notSupported, "\(methodName)'s text prompt is one context shared by the classes with the class name at the end; class-specific contexts and other class positions are not part of it")
        }
        guard !classNames.isEmpty else { throw PromptError(.invalidData, "no class names given") }
        let m = prompt.contextLength
        guard m >= 1 else { throw PromptError(.invalidSetting, "\(methodName)'s context needs at least 1 vector (got \(m))") }
        let initText = prompt.initText.flatMap { m <= 4 ? $0.replacingOccurrences(of: "_", with: " ") : nil }
        let prefixText = initText ?? Array(repeating: "X", count: m).joined(separator: " ")
        let prefixIds = tokenizer.encode(prefixText)
        guard prefixIds.count >= m else {
            throw PromptError(.invalidSetting, "\(methodName)'s context of \(m) vectors is initialised from the first \(m) tokens of '\(prefixText)', which has only \(prefixIds.count): give a longer phrase or a shorter context")
        }
        let names = classNames.map { $0.replacingOccurrences(of: "_", with: " ") }
        let prompts = names.map { "\(prefixText) \($0)." }
        if let bad = prompts.firstIndex(where: { tokenizer.encode($0).count + 2 > model.text.contextLength }) {
            throw PromptError(.classMismatch, "class name '\(classNames[bad])' is too long: its prompt exceeds the \(model.text.contextLength)-token context")
        }
        let rows = tokenizer.tokenize(prompts, contextLength: model.text.contextLength).map { $0.map(Int.init) }
        let eot = eotPositions(rows)
        let p = 1 + prefixIds.count
        for (k, row) in rows.enumerated() where Array(row[1..<p]) != prefixIds || eot[k] < p {
            throw PromptError(.classMismatch, "the prompt of class '\(classNames[k])' does not begin with the tokens of '\(prefixText)'")
        }
        text = model.text
        contextLength = m
        let backend = model.text.backend, table = model.text.tokenEmbedding
        phraseContext = initText != nil ? backend.gatherRows(table, Array(prefixIds.prefix(m))) : nil
        tokens = zip(rows, eot).map { Array($0.0.prefix($0.1 + 1)) }
        prefixRows = backend.gatherRows(table, Array(tokens[0].prefix(p)))
        suffixRows = backend.gatherRows(table, tokens.flatMap { $0[p...] })
        suffixLengths = tokens.map { $0.count - p }
    }

    /// The packed prompts of every class: the shared prefix (SOS, the context, the fixed words),
    /// then each class's own rows up to its EOT; positional embeddings added.
    func packedPrompts(context: Tensor) -> (Tensor, SequenceLayout) {
        let (m, p, backend) = (contextLength, prefixRows.rows, text.backend)
        let layout = SequenceLayout(prefix: p, lengths: suffixLengths)
        var h = backend.zeros([layout.rows, text.width])
        backend.copyRows(prefixRows, into: &h, spans: [RowSpan(source: 0, target: 0, count: p)], accumulate: false)
        backend.copyRows(context, into: &h, spans: [RowSpan(source: 0, target: 1, count: m)], accumulate: false)
        backend.copyRows(suffixRows, into: &h, spans: [RowSpan(source: 0, target: p, count: suffixRows.rows)], accumulate: false)
        text.addPositionalEmbedding(to: &h, layout: layout)
        return (h, layout)
    }

    /// Text features K x E (not normalised) with `deep` (by block, M x D each) replacing the context
    /// rows, and the tower's trace.
    func forward(context: Tensor, deep: [Int: Tensor], keepCaches: Bool, workspace: Workspace?) -> (Tensor, TextTower.Trace) {
        let (h, layout) = packedPrompts(context: context)
        return text.forward(packed: h, layout: layout, deepPrompts: DeepPrompts(values: deep, position: 1, layout: layout),
                            keepCaches: keepCaches, workspace: workspace, keepLinearInputs: workspace == nil)
    }
}
