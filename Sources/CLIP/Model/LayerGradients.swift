import TensorCore

// A CLIP gradient is a `CLIPModel` holding gradients in place of weights (see `zeroGradient()`), so
// the parameter table names gradients exactly as it names weights. TensorCore's layers accumulate
// into their own `Grads` types; these conversions move a model-shaped gradient into them and back
// without copying (tensors are copy-on-write).

extension LayerNorm {
    var asGrads: LayerNorm.Grads {
        var g = LayerNorm.Grads(zerosLike: self)
        g.weight = weight; g.bias = bias
        return g
    }

    mutating func set(_ g: LayerNorm.Grads) { weight = g.weight; bias = g.bias }
}

extension Linear {
    var asGrads: Linear.Grads {
        var g = Linear.Grads(zerosLike: self)
        g.weight = weight; g.bias = bias
        return g
    }

    mutating func set(_ g: Linear.Grads) { weight = g.weight; bias = g.bias }
}

extension ResidualBlock {
    var asGrads: ResidualBlock.Grads {
        var g = ResidualBlock.Grads(zerosLike: self)
        g.ln1 = ln1.asGrads; g.ln2 = ln2.asGrads; g.fc = fc.asGrads; g.proj = proj.asGrads
        g.attention.inProj = attention.inProj.asGrads; g.attention.outProj = attention.outProj.asGrads
        return g
    }

    mutating func set(_ g: ResidualBlock.Grads) {
        ln1.set(g.ln1); ln2.set(g.ln2); fc.set(g.fc); proj.set(g.proj)
        attention.inProj.set(g.attention.inProj); attention.outProj.set(g.attention.outProj)
    }
}

extension Transformer {
    var asGrads: [ResidualBlock.Grads] { blocks.map(\.asGrads) }

    mutating func set(_ g: [ResidualBlock.Grads]) {
        for i in blocks.indices { blocks[i].set(g[i]) }
    }
}
