import Foundation

// The operations of a ResNet image tower besides its convolutions (Convolution.swift): a CPU
// forward only, as the convolutions are (ResNet towers run forward for frozen features).

/// pixels: B, C, H, W (NCHW) -> B, H, W, C (NHWC, the convolutions' layout).
public func channelsLast(_ pixels: Tensor) -> Tensor {
    precondition(pixels.rank == 4, "channelsLast: \(pixels.shape), expected [B, C, H, W]")
    let (b, c, h, w) = (pixels.shape[0], pixels.shape[1], pixels.shape[2], pixels.shape[3])
    var out = Tensor(zeros: [b, h, w, c])
    out.withMutablePointer { po in pixels.withPointer { pp in
        for n in 0..<b { for ch in 0..<c { for y in 0..<h { for x in 0..<w {
            po[((n * h + y) * w + x) * c + ch] = pp[((n * c + ch) * h + y) * w + x]
        } } } }
    } }
    return out
}

/// CLIP's attention-pool tokens: x B, G, G, C -> B * (1 + G*G), C, each image's mean spatial token
/// first, then its spatial tokens, plus the positional embedding (1 + G*G, C).
public func attentionPoolTokens(_ x: Tensor, positionalEmbedding: Tensor) -> Tensor {
    let (b, c0) = (x.shape[0], x.shape[3])
    let s = x.shape[1] * x.shape[2], t = s + 1
    precondition(positionalEmbedding.shape == [t, c0], "attention pool input \(x.shape), positional embedding \(positionalEmbedding.shape)")
    var tokens = Tensor(zeros: [b * t, c0])
    tokens.withMutablePointer { pt in x.withPointer { px in positionalEmbedding.withPointer { pp in
        for i in 0..<b {
            let dst = pt + i * t * c0, src = px + i * s * c0
            for r in 0..<s { for j in 0..<c0 { dst[j] += src[r * c0 + j] } }   // (HW+1)NC: the mean first
            for j in 0..<c0 { dst[j] /= Float(s) }
            (dst + c0).update(from: src, count: s * c0)
            for j in 0..<(t * c0) { dst[j] += pp[j] }
        }
    } } }
    return tokens
}

/// One query per sequence attending to that sequence's `tokens` keys and values, per head:
/// queries B, C; keys and values B * T, C -> B, C (heads concatenated).
public func singleQueryAttention(queries: Tensor, keys: Tensor, values: Tensor, heads: Int, tokens t: Int) -> Tensor {
    let (b, c0) = (queries.rows, queries.lastDim)
    precondition(keys.shape == [b * t, c0] && values.shape == [b * t, c0] && c0 % heads == 0,
                 "single-query attention: queries \(queries.shape), keys \(keys.shape), values \(values.shape), \(heads) heads")
    let d = c0 / heads
    let scale = 1 / Float(d).squareRoot()
    var pooled = Tensor(zeros: [b, c0])
    pooled.withMutablePointer { po in queries.withPointer { pq in keys.withPointer { pk in values.withPointer { pv in
        var p = [Float](repeating: 0, count: t)
        for i in 0..<b { for h in 0..<heads {
            let qh = pq + i * c0 + h * d
            var top = -Float.infinity
            for r in 0..<t {
                let kr = pk + (i * t + r) * c0 + h * d
                var dot: Float = 0
                for j in 0..<d { dot += qh[j] * kr[j] }
                p[r] = dot * scale
                top = max(top, p[r])
            }
            var sum: Float = 0
            for r in 0..<t { p[r] = exp(p[r] - top); sum += p[r] }
            let out = po + i * c0 + h * d
            for r in 0..<t {
                let weight = p[r] / sum, vr = pv + (i * t + r) * c0 + h * d
                for j in 0..<d { out[j] += weight * vr[j] }
            }
        } }
    } } } }
    return pooled
}
