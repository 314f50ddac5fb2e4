import CLIP
import Foundation
import TensorCore

/// Where the class name goes relative to the learned context (CoOp's CLASS_TOKEN_POSITION).
public enum ClassTokenPosition: String, Codable, Sendable, CaseIterable {
    case end, middle, front
}

/// The text prompt of a method: M learned context vectors around each class name.
public struct PromptConfig: Codable, Equatable, Sendable {
    /// M, the number of context vectors. With `initText` it must equal the text's token count.
    public var contextLength: Int
    /// One context per class (CSC) instead of one shared by all classes.
    public var classSpecific: Bool
    public var position: ClassTokenPosition
    /// Initialise the context from this text's token embeddings (e.g. "a photo of a") instead of N(0, 0.02).
    public var initText: String?

    public init(contextLength: Int = 16, classSpecific: Bool = false, position: ClassTokenPosition = .end,
                initText: String? = nil) {
        self.contextLength = contextLength; self.classSpecific = classSpecific
        self.position = position; self.initText = initText
    }

    /// Shared context with the class at the end: positions 0...M are the same for every class,
    /// so the text encoder computes them once.
    public var sharesPrefix: Bool { !classSpecific && position == .end }
}

/// Why a prompt method cannot do what was asked: the error of PromptLearning (besides `FileError`
/// for its file readers and `TrainingError` for a run that diverged). `message` names the setting,
/// tensor or file and says what to do; `kind` is what went wrong, for code that acts on it.
public struct PromptError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// A training setting or prompt configuration out of range (epochs, context length, the
        /// context initialisation text).
        case invalidSetting
        /// Training data that cannot be trained on: no images, no class names, a label outside
        /// 0..<K, features without a view.
        case invalidData
        /// A tensor or parameter set without the shapes expected: a given context, visual prompt or
        /// prototypes of another shape, a reference file's tensor, a parameter the method does not
        /// learn or one it needs missing.
        case shapeMismatch
        /// Class names or a class count that do not fit the prompt: class-specific contexts on other
        /// names, a class name too long for the text context, NPT's anchors for fewer than 2 classes.
        case classMismatch
        /// A prompt or features made with another CLIP model (its digest, a width, the feature
        /// dimension or the SOS embedding differ).
        case modelMismatch
        /// A checkpoint from another run: other settings, class names, parameters, model or data.
        case incompatibleResume
        /// A checkpoint (or DAPT's prototype file) that is damaged, edited or contradicts itself.
        case damagedCheckpoint
        /// A file that is not a prompt learner's checkpoint (another state dict).
        case notAPromptCheckpoint
        /// A NaN or infinity in an input: features, the model's weights (logit scale, text tower),
        /// a prompt file's tensor.
        case nonFiniteInput
        /// A method or prompt asked for what it cannot do (text features of a per-image classifier,
        /// cached features for a method that trains inside the image tower, CoCoOp's meta-net).
        case notSupported
        /// A method that puts tokens into the image tower or trains through it (VPT, DAPT, MaPLe,
        /// PromptSRC) given a CLIP whose image tower is not a vision transformer (RN50, ...).
        case needsViT
        /// More than PromptTune allocates for it (class-specific contexts, NPT's anchors).
        case tooLarge
        /// A method name that does not parse (unknown base, a composition other than +npt).
        case unknownMethod
        /// An output of a run (the trace, TensorBoard's events file) could not be written.
        case writeFailed
    }

    public var kind: Kind
    /// The full, human-readable message.
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
    public var errorDescription: String? { message }

    /// `method` needs a ViT image tower and `model` has a ResNet.
    public static func needsViT(method: String, model: CLIPConfig, what: String = "puts prompt tokens into the image tower") -> PromptError {
        PromptError(.needsViT,
                    "method \(method) \(what), which needs a Vision Transformer CLIP (ViT-B/32, ViT-B/16, ViT-L/14, ...); "
                    + "the model is \(model.imageTowerName), a ResNet, whose image tower PromptTune runs forward only for frozen features. "
                    + "Use a ViT model, or a method whose prompts are text only (CoOp, CoCoOp, KgCoOp, DeKg, NPT, CPT).")
    }
}

/// CoOp's prompt learner: the learnable context plus the frozen token embeddings around it.
///
/// Each class's prompt is the tokenisation of "X X ... X <name>." (or "<init text> <name>."):
/// [SOS][ctx_1..ctx_M][name tokens][.][EOT]. Only `context` is trained.
public struct PromptLearner: Sendable {
    public let config: PromptConfig
    public let classNames: [String]
    /// M, D (shared) or K, M, D (class-specific).
    public var context: Tensor
    /// Token ids of each class's prompt cut after its EOT (the frozen parts come from these).
    public let tokens: [[Int]]
    public let eot: [Int]
    public let nameLengths: [Int]
    /// Frozen token embeddings of every prompt, one after another: class k's T_k = eot_k + 1 rows
    /// from row `embeddingRows[k]` (the context rows are placeholders' embeddings, never read).
    let embeddings: Tensor
    let embeddingRows: [Int]

    /// The most context values a learner holds (class-specific contexts grow with the classes).
    public static let maxContextElements = 1 << 28

    public var classCount: Int { classNames.count }
    public var width: Int { context.lastDim }

    /// Builds the prompts for `classNames`. The context is drawn from `rng` (N(0, 0.02)) unless
    /// `config.initText` is given or an explicit `context` is passed (resume, parity tests).
    public init(config: PromptConfig, classNames: [String], text: TextTower, tokenizer: CLIPTokenizer,
                context: Tensor? = nil, rng: inout SeededGenerator) throws {
        guard !classNames.isEmpty else { throw PromptError(.invalidData, "no class names given") }
        guard config.contextLength >= 1 else { throw PromptError(.invalidSetting, "the context needs at least 1 vector (got \(config.contextLength))") }
        let m = config.contextLength, d = text.width, k = classNames.count
        // Checked before anything is sized from M: SOS, M context vectors, at least one name token,
        // "." and EOT must fit the text context.
        guard m <= text.contextLength - 4 else {
            throw PromptError(.invalidSetting, "a context of \(m) vectors does not fit the model's \(text.contextLength)-token text context (SOS, the context, the class name, \".\" and EOT): the context length can be at most \(max(0, text.contextLength - 4)), less for long class names")
        }
        if config.classSpecific {
            let (elements, overflow) = (k * m).multipliedReportingOverflow(by: d)
            guard !overflow, elements <= PromptLearner.maxContextElements else {
                throw PromptError(.tooLarge, "class-specific contexts for \(k) classes x \(m) vectors x width \(d) exceed \(PromptLearner.maxContextElements) values (\(formatBytes(4 * PromptLearner.maxContextElements)), with momentum and gradient three times that): use a shared context, or fewer classes")
            }
        }
        let names = classNames.map { $0.replacingOccurrences(of: "_", with: " ") }
        var prefixText = Array(repeating: "X", count: m).joined(separator: " ")
        var initContext: Tensor? = nil
        if let initText = config.initText {
            let cleaned = initText.replacingOccurrences(of: "_", with: " ")
            let ids = tokenizer.encode(cleaned)
            let words = cleaned.split(separator: " ").count
            guard ids.count == words else {
                throw PromptError(.invalidSetting, "the context initialisation '\(initText)' has \(words) words but \(ids.count) tokens; CoOp takes one token per word, so use words that are single tokens (e.g. \"a photo of a\")")
            }
            guard ids.count == m else {
                throw PromptError(.invalidSetting, "the context initialisation '\(initText)' is \(ids.count) tokens but the context length is \(m); make the context length \(ids.count)")
            }
            prefixText = cleaned
            let shared = text.backend.gatherRows(text.tokenEmbedding, ids)  // M, D
            initContext = config.classSpecific
                ? Tensor(shape: [k, m, d], data: Array((0..<k).map { _ in shared.data }.joined()))
                : shared
        }
        let expected = config.classSpecific ? [k, m, d] : [m, d]
        if let context {
            guard context.shape == expected else {
                throw PromptError(.shapeMismatch, "context has shape \(context.shape), expected \(expected) for \(config.classSpecific ? "class-specific" : "shared") context of \(m) vectors of width \(d)")
            }
            self.context = context
        } else if let initContext {
            self.context = initContext
        } else {
            self.context = .randomNormal(expected, std: 0.02, using: &rng)
        }
        let prompts = names.map { "\(prefixText) \($0)." }
        if let bad = prompts.firstIndex(where: { tokenizer.encode($0).count + 2 > text.contextLength }) {
            throw PromptError(.classMismatch, "class name '\(classNames[bad])' is too long: its prompt exceeds the \(text.contextLength)-token context")
        }
        let rows = tokenizer.tokenize(prompts, contextLength: text.contextLength).map { $0.map(Int.init) }
        let eot = eotPositions(rows)
        self.config = config
        self.classNames = classNames
        self.eot = eot
        self.tokens = zip(rows, eot).map { Array($0.0.prefix($0.1 + 1)) }
        self.nameLengths = names.map { tokenizer.encode($0).count }
        self.embeddings = text.backend.gatherRows(text.tokenEmbedding, self.tokens.flatMap { $0 })
        self.embeddingRows = Array(eot.reduce(into: [0]) { $0.append($0.last! + $1 + 1) }.dropLast())
    }

    /// Each class's frozen prompt rows onto its sequence of `layout` (one sequence per class, no
    /// prefix, T_k rows each), the class name moved to its place (CoOp's "front" and "middle"
    /// positions), and `spans` for the context rows: where context row r (of `context`, flattened to
    /// rows) goes. Rows are laid out as the concatenated `embeddings`, so the copy is one span.
    func promptSpans(_ layout: SequenceLayout) -> (frozen: [RowSpan], context: [RowSpan]) {
        let m = config.contextLength
        var frozen = [RowSpan(source: 0, target: 0, count: embeddings.rows)]
        var context: [RowSpan] = []
        for c in 0..<classCount {
            let r0 = layout.rowOffsets[c]
            if config.position != .end {
                // The class-name tokens move: front -> right after SOS; middle -> after the first half.
                let at = config.position == .front ? 1 : 1 + m / 2
                frozen.append(RowSpan(source: embeddingRows[c] + 1 + m, target: r0 + at, count: nameLengths[c]))
            }
            for j in 0..<m {
                context.append(RowSpan(source: config.classSpecific ? c * m + j : j, target: r0 + contextRow(j, classIndex: c), count: 1))
            }
        }
        return (frozen, context)
    }

    /// Where context vector j of class k sits in its prompt.
    func contextRow(_ j: Int, classIndex k: Int) -> Int {
        let m = config.contextLength, n = nameLengths[k]
        switch config.position {
        case .end: return 1 + j
        case .front: return 1 + n + j
        case .middle: return j < m / 2 ? 1 + j : 1 + n + j
        }
    }

    /// The frozen rows after the shared prefix (name, ".", EOT: T_k - 1 - M rows) of each class in
    /// `classes`, placed one class after another from row `target`.
    func suffixSpans(_ classes: Range<Int>, at target: Int) -> [RowSpan] {
        let p = 1 + config.contextLength
        var spans: [RowSpan] = [], row = target
        for k in classes {
            spans.append(RowSpan(source: embeddingRows[k] + p, target: row, count: eot[k] + 1 - p))
            row += eot[k] + 1 - p
        }
        return spans
    }

    /// The SOS embedding row (row 0 of the frozen rows).
    var sosRow: Int { 0 }
}
