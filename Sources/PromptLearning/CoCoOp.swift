import CLIP
import Foundation
import TensorCore

/// CoCoOp (KaiyangZhou/CoOp `trainers/cocoop.py`): CoOp's context (class at the end, shared by the
/// classes) plus a meta-net Linear(E, E/16)-ReLU-Linear(E/16, D) that maps each L2-normalised image
/// feature to a bias added to every context vector, so every image has its own K prompts. The image
/// tower stays frozen (cached features train it). Learned: `text.context` and the meta-net's four
/// tensors (`meta.linear1.weight` [E/16, E], `.bias`, `meta.linear2.weight` [D, E/16], `.bias`, in
/// PyTorch's out x in layout).
///
/// Exactly the reference's computation, with less work: the reference encodes the K full 77-token
/// prompts of every image; here each image's SOS + shifted context is one shared prefix computed
/// once for its K classes (`SequenceLayout(groups:)`), and every class's rows stop at its EOT.
/// At evaluation the prompts of an image are encoded `classChunk` classes at a time, so ImageNet's
/// 1,000 classes need the memory of a chunk, not of all of them.
public final class CoCoOpArchitecture: PromptArchitecture {
    public static let meta1Weight = "meta.linear1.weight", meta1Bias = "meta.linear1.bias"
    public static let meta2Weight = "meta.linear2.weight", meta2Bias = "meta.linear2.bias"
    public static let parameterNames = [ParameterName.textContext, meta1Weight, meta1Bias, meta2Weight, meta2Bias]

    public let method: Method
    public var classNames: [String] { learner.classNames }
    public let initialParameters: ParameterSet
    public var promptsImageTower: Bool { false }
    /// Classes encoded together per image at evaluation.
    public var classChunk = 256
    let learner: PromptLearner
    let tower: TextTower
    let image: ImagePiece
    let hidden: Int

    init(method: Method, model: CLIPModel, tokenizer: CLIPTokenizer, classNames: [String], given: ParameterSet?,
         rng: inout SeededGenerator) throws {
        guard !method.prompt.classSpecific, method.prompt.position == .end else {
            throw PromptError(.notSupported, "CoCoOp's prompt is one context shared by the classes with the class name at the end; class-specific contexts and other class positions are not part of it")
        }
        let e = model.config.embedDim, d = model.text.width
        hidden = e / 16
        guard hidden >= 1 else { throw PromptError(.notSupported, "CoCoOp's meta-net has E/16 hidden units; the model's embedding of \(e) gives none") }
        self.method = method
        learner = try PromptLearner(config: method.prompt, classNames: classNames, text: model.text, tokenizer: tokenizer,
                                    context: given?[ParameterName.textContext], rng: &rng)
        tower = model.text
        image = ImagePiece(tower: model.image)
        // PyTorch's default Linear initialisation: weight and bias uniform in +-1/sqrt(fan_in).
        var p = ParameterSet([(ParameterName.textContext, learner.context)])
        for (name, shape, fanIn) in [(Self.meta1Weight, [hidden, e], e), (Self.meta1Bias, [hidden], e),
                                     (Self.meta2Weight, [d, hidden], hidden), (Self.meta2Bias, [d], hidden)] {
            if let g = given?[name] {
                guard g.shape == shape else { throw PromptError(.shapeMismatch, "CoCoOp's '\(name)' has shape \(g.shape), expected \(shape) for this model") }
                p[name] = g
            } else {
                let bound = Float(1 / Double(fanIn).squareRoot())
                p[name] = .randomUniform(shape, -bound, bound, using: &rng)
            }
        }
        initialParameters = p
    }

    /// The meta-net on normalised image features B x E: the pre-activation and the biases B x D.
    func metaNet(_ p: ParameterSet, _ f: Tensor) -> (z: Tensor, bias: Tensor) {
        var z = matmul(f, p[Self.meta1Weight]!, transB: true)
        z.addRowVector(p[Self.meta1Bias]!)
        var a = z
        for i in 0..<a.count where !(a[i] > 0) { a[i] = 0 }
        var bias = matmul(a, p[Self.meta2Weight]!, transB: true)
        bias.addRowVector(p[Self.meta2Bias]!)
        return (z, bias)
    }

    /// The packed prompts of every image for `classes`: per image its SOS and shifted context as a
    /// shared prefix, then each class's own rows up to its EOT; positional embeddings added.
    func packedPrompts(context: Tensor, bias: Tensor, classes: Range<Int>) -> (Tensor, SequenceLayout) {
        let (m, d) = (learner.config.contextLength, tower.width)
        let p = 1 + m
        let groups = (0..<bias.rows).map { _ in (prefix: p, lengths: classes.map { learner.eot[$0] + 1 - p }) }
        let layout = SequenceLayout(groups: groups)
        let backend = tower.backend
        var h = backend.zeros([layout.rows, d])
        // Per image: SOS, the context shifted by the image's bias, each class's own rows.
        var frozen: [RowSpan] = [], shifted: [RowSpan] = [], biases: [RowSpan] = []
        for (b, prefix) in layout.prefixes.enumerated() {
            frozen.append(RowSpan(source: learner.sosRow, target: prefix.rowOffset, count: 1))
            frozen += learner.suffixSpans(classes, at: prefix.rowOffset + p)
            shifted.append(RowSpan(source: 0, target: prefix.rowOffset + 1, count: m))
            biases += (0..<m).map { RowSpan(source: b, target: prefix.rowOffset + 1 + $0, count: 1) }
        }
        backend.copyRows(learner.embeddings, into: &h, spans: frozen, accumulate: false)
        backend.copyRows(context, into: &h, spans: shifted, accumulate: false)
        backend.copyRows(bias, into: &h, spans: biases, accumulate: true)
        tower.addPositionalEmbedding(to: &h, layout: layout)
        return (h, layout)
    }

    public func forward(_ p: ParameterSet, images: ImageBatch, workspace: Workspace) -> PromptForward {
        let (f, _) = image.forward(images, tokens: nil, workspace: workspace)
        let (b, k, e, d, m) = (f.rows, learner.classCount, f.lastDim, tower.width, learner.config.contextLength)
        let (z, bias) = metaNet(p, f)
        let (h, layout) = packedPrompts(context: p[ParameterName.textContext]!, bias: bias, classes: 0..<k)
        var (features, trace) = tower.forward(packed: h, layout: layout, keepCaches: true, workspace: workspace, keepLinearInputs: false)
        return PromptForward(text: features.reshaped([b, k, e]), images: f, imagesTrainable: false) { [tower, hidden] dText, _ in
            let dRows = tower.backwardPacked(dText.reshaped([b * k, e]), releasing: &trace, workspace: workspace)
            // Each image's shifted context rows (1...M of its prefix): summed into the context, and
            // over the M rows into the image's bias.
            var dContext = tower.backend.zeros([m, d]), dBias = tower.backend.zeros([b, d])
            tower.backend.copyRows(dRows, into: &dContext,
                                   spans: layout.prefixes.map { RowSpan(source: $0.rowOffset + 1, target: 0, count: m) }, accumulate: true)
            tower.backend.copyRows(dRows, into: &dBias, spans: layout.prefixes.enumerated().flatMap { i, prefix in
                (0..<m).map { RowSpan(source: prefix.rowOffset + 1 + $0, target: i, count: 1) }
            }, accumulate: true)
            workspace.recycle(dRows)
            // The meta-net's backward (PyTorch's ReLU passes the gradient where its input is > 0).
            let w2 = p[Self.meta2Weight]!
            var a = z
            for i in 0..<a.count where !(a[i] > 0) { a[i] = 0 }
            var dZ = matmul(dBias, w2)   // B x hidden
            for i in 0..<dZ.count where !(z[i] > 0) { dZ[i] = 0 }
            var g = ParameterSet([(ParameterName.textContext, dContext)])
            g[Self.meta1Weight] = matmul(dZ, f, transA: true)
            g[Self.meta1Bias] = dZ.columnSums()
            g[Self.meta2Weight] = matmul(dBias, a, transA: true)
            g[Self.meta2Bias] = dBias.columnSums()
            precondition(g[Self.meta1Bias]!.count == hidden)
            return g
        }
    }

    /// Text features B x K x E (not normalised) of normalised image features B x E, `classChunk`
    /// classes of one image at a time.
    public func textFeatures(_ p: ParameterSet, imageFeatures f: Tensor) -> Tensor {
        let (k, e) = (learner.classCount, tower.projection.lastDim)
        let (_, bias) = metaNet(p, f)
        var out: [Float] = []
        out.reserveCapacity(f.rows * k * e)
        let workspace = Workspace(backend: tower.backend)
        for i in 0..<f.rows {
            let one = bias.slice(rows: i..<(i + 1))
            for start in stride(from: 0, to: k, by: max(1, classChunk)) {
                let (h, layout) = packedPrompts(context: p[ParameterName.textContext]!, bias: one, classes: start..<min(k, start + classChunk))
                out += tower.forward(packed: h, layout: layout, workspace: workspace).0.data
            }
        }
        return Tensor(shape: [f.rows, k, e], data: out)
    }

    public func classifier(_ p: ParameterSet) -> PromptClassifier {
        .perImage { [self] f in textFeatures(p, imageFeatures: f) }
    }

    public func encodeImages(_ p: ParameterSet, pixels: Tensor, workspace: Workspace?) -> Tensor {
        image.encode(pixels, tokens: nil, workspace: workspace)
    }
}
