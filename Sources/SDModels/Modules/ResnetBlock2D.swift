// Matches diffusers.models.resnet.ResnetBlock2D (time_embedding_norm "default").
import SDKernels

struct ResnetBlock2D {
    let norm1: GroupNorm           // norm1: [in]
    let conv1: Conv2d              // conv1: [out, in, 3, 3]
    let timeEmbProj: Linear?       // time_emb_proj: [out, temb] (absent in the VAE)
    let norm2: GroupNorm           // norm2: [out]
    // dropout: parameterless
    let conv2: Conv2d              // conv2: [out, out, 3, 3]
    let convShortcut: Linear?      // conv_shortcut: [out, in, 1, 1], only when in != out
    let outputScaleFactor: Float
    let scope: ResidencyScope      // this block's weight pages

    init(_ w: Weights, in inChannels: Int, out outChannels: Int, timeEmbeddingChannels: Int?,
         groups: Int, eps: Float, outputScaleFactor: Float = 1) throws {
        norm1 = try GroupNorm(w["norm1"], channels: inChannels, groups: groups, eps: eps)
        conv1 = try Conv2d(w["conv1"], in: inChannels, out: outChannels, kernelSize: 3, padding: 1)
        timeEmbProj = try timeEmbeddingChannels.map { try Linear(w["time_emb_proj"], in: $0, out: outChannels) }
        norm2 = try GroupNorm(w["norm2"], channels: outChannels, groups: groups, eps: eps)
        conv2 = try Conv2d(w["conv2"], in: outChannels, out: outChannels, kernelSize: 3, padding: 1)
        convShortcut = inChannels == outChannels ? nil
            : try Linear(conv1x1: w["conv_shortcut"], in: inChannels, out: outChannels)
        self.outputScaleFactor = outputScaleFactor
        scope = w.scope
    }

    /// x: [in, B, H, W] → [out, B, H, W]. `timeEmbedding` is SiLU(emb): [temb, 1, 1, 1],
    /// one timestep for the whole batch, so its projection folds into conv1's bias; or
    /// [temb, B, 1, 1] (SDXL's text_time embedding), added per sample after conv1.
    /// At most x, one [in] and one [out] intermediate are alive at a time. With
    /// `overwritingInput` (the caller never reads x again) and a projected shortcut, norm1
    /// runs in place over x, saving an [in] intermediate.
    func callAsFunction(_ x: Tensor, timeEmbedding: Tensor?, overwritingInput: Bool = false,
                        pool: ThreadPool) -> Tensor {
        scope.using {
            var bias = conv1.bias
            var perSample: Tensor?  // [out, B]: SDXL's added embedding differs per sample
            if let timeEmbProj, let timeEmbedding {
                let t = timeEmbProj(timeEmbedding, pool: pool)  // [out, 1] or [out, B]
                if t.batch == 1 {
                    for c in 0..<bias.count { bias[c] += t.data[c] }
                } else {
                    perSample = t
                }
            }
            // The projected shortcut (a fresh buffer that conv2 adds into), or x itself.
            let shortcut = convShortcut.map { $0(x, pool: pool) }
            var h: Tensor
            if shortcut != nil && overwritingInput {
                norm1.apply(x, silu: true, into: x, pool: pool)
                h = conv1(x, bias: bias, pool: pool)
            } else {
                h = norm1(x, silu: true, pool: pool)
                h = conv1(h, bias: bias, pool: pool)  // frees the normalised copy
            }
            if let perSample { Self.addPerSample(perSample, to: h) }
            norm2.apply(h, silu: true, into: h, pool: pool)
            let y: Tensor
            if let shortcut {
                conv2.apply(h, residual: shortcut, into: shortcut, pool: pool)
                y = shortcut
            } else {
                y = conv2(h, residual: x, pool: pool)
            }
            if outputScaleFactor != 1 {
                for i in 0..<y.count { y.data[i] /= outputScaleFactor }
            }
            return y
        }
    }

    /// h[c, b, :, :] += t[c, b].
    static func addPerSample(_ t: Tensor, to h: Tensor) {
        precondition(t.channels == h.channels && t.batch == h.batch)
        let p = h.pixels, batch = h.batch
        for c in 0..<h.channels {
            for b in 0..<batch {
                let v = t.data[c * batch + b], row = h.data + (c * batch + b) * p
                for i in 0..<p { row[i] += v }
            }
        }
    }
}
