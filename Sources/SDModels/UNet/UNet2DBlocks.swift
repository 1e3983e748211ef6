// Matches diffusers.models.unets.unet_2d_blocks: CrossAttnDownBlock2D, DownBlock2D,
// UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D, UpBlock2D (as SD 1.x/2.x configure them).
import SDKernels

/// What the blocks of one UNet call share: SiLU(time embedding) and the text context.
struct UNetConditioning {
    let timeEmbedding: Tensor  // SiLU(emb): [temb, 1, 1, 1]
    let context: Tensor        // encoder_hidden_states: [Cctx, B, T]
}

/// The per-level settings of a block, from the config.
struct UNetBlockSettings {
    let timeEmbeddingDim: Int
    let groups: Int
    let eps: Float
    let heads: Int
    let transformerLayers: Int
    let crossAttentionDim: Int
    let useLinearProjection: Bool
    let resnetOutputScale: Float
}

/// CrossAttnDownBlock2D, or DownBlock2D when `attentions` is empty (its keys are the same
/// minus attentions.*).
struct UNetDownBlock {
    let resnets: [ResnetBlock2D]          // resnets.{i}: [in → out], then [out → out]
    let attentions: [Transformer2DModel]  // attentions.{i} (CrossAttnDownBlock2D only)
    let downsampler: Downsample2D?        // downsamplers.0 (all but the last level)

    init(_ w: Weights, crossAttention: Bool, layers: Int, in inChannels: Int, out outChannels: Int,
         addDownsample: Bool, downsamplePadding: Int, settings s: UNetBlockSettings) throws {
        resnets = try (0..<layers).map {
            try ResnetBlock2D(w["resnets", $0], in: $0 == 0 ? inChannels : outChannels, out: outChannels,
                              timeEmbeddingChannels: s.timeEmbeddingDim, groups: s.groups, eps: s.eps,
                              outputScaleFactor: s.resnetOutputScale)
        }
        attentions = !crossAttention ? [] : try (0..<layers).map {
            try Transformer2DModel(w["attentions", $0], channels: outChannels, heads: s.heads,
                                   layers: s.transformerLayers, crossAttentionDim: s.crossAttentionDim,
                                   groups: s.groups, useLinearProjection: s.useLinearProjection)
        }
        downsampler = addDownsample ? try Downsample2D(w["downsamplers.0"], channels: outChannels, padding: downsamplePadding) : nil
    }

    /// Appends every resnet(+attention) output and the down-sampled result to `skips`
    /// (diffusers' output_states) and returns the last one.
    func callAsFunction(_ x: Tensor, _ cond: UNetConditioning, skips: inout [Tensor], pool: ThreadPool) -> Tensor {
        var h = x
        for (i, resnet) in resnets.enumerated() {
            h = resnet(h, timeEmbedding: cond.timeEmbedding, pool: pool)
            if !attentions.isEmpty { h = attentions[i](h, context: cond.context, pool: pool) }
            skips.append(h)
        }
        if let downsampler {
            h = downsampler(h, pool: pool)
            skips.append(h)
        }
        return h
    }
}

struct UNetMidBlock2DCrossAttn {
    let resnets: [ResnetBlock2D]          // resnets.0, resnets.1
    let attentions: [Transformer2DModel]  // attentions.0

    init(_ w: Weights, channels: Int, outputScaleFactor: Float, settings s: UNetBlockSettings) throws {
        resnets = try (0..<2).map {
            try ResnetBlock2D(w["resnets", $0], in: channels, out: channels, timeEmbeddingChannels: s.timeEmbeddingDim,
                              groups: s.groups, eps: s.eps, outputScaleFactor: outputScaleFactor)
        }
        attentions = [try Transformer2DModel(w["attentions", 0], channels: channels, heads: s.heads,
                                             layers: s.transformerLayers, crossAttentionDim: s.crossAttentionDim,
                                             groups: s.groups, useLinearProjection: s.useLinearProjection)]
    }

    func callAsFunction(_ x: Tensor, _ cond: UNetConditioning, pool: ThreadPool) -> Tensor {
        var h = resnets[0](x, timeEmbedding: cond.timeEmbedding, pool: pool)
        for (attention, resnet) in zip(attentions, resnets.dropFirst()) {
            h = attention(h, context: cond.context, pool: pool)
            h = resnet(h, timeEmbedding: cond.timeEmbedding, pool: pool)
        }
        return h
    }
}

/// CrossAttnUpBlock2D, or UpBlock2D when `attentions` is empty.
struct UNetUpBlock {
    let resnets: [ResnetBlock2D]          // resnets.{i}: [(prev or out) + skip → out]
    let attentions: [Transformer2DModel]  // attentions.{i} (CrossAttnUpBlock2D only)
    let upsampler: Upsample2D?            // upsamplers.0 (all but the last level)

    /// `skipChannels[i]` is the channel count of the skip connection resnet i consumes.
    init(_ w: Weights, crossAttention: Bool, prevOutputChannels: Int, out outChannels: Int,
         skipChannels: [Int], addUpsample: Bool, settings s: UNetBlockSettings) throws {
        resnets = try skipChannels.enumerated().map { i, skip in
            try ResnetBlock2D(w["resnets", i], in: (i == 0 ? prevOutputChannels : outChannels) + skip, out: outChannels,
                              timeEmbeddingChannels: s.timeEmbeddingDim, groups: s.groups, eps: s.eps,
                              outputScaleFactor: s.resnetOutputScale)
        }
        attentions = !crossAttention ? [] : try (0..<skipChannels.count).map {
            try Transformer2DModel(w["attentions", $0], channels: outChannels, heads: s.heads,
                                   layers: s.transformerLayers, crossAttentionDim: s.crossAttentionDim,
                                   groups: s.groups, useLinearProjection: s.useLinearProjection)
        }
        upsampler = addUpsample ? try Upsample2D(w["upsamplers.0"], channels: outChannels) : nil
    }

    /// Consumes one skip connection per resnet from the end of `skips` (concatenated after
    /// h, as torch.cat([h, skip], dim=1)); the up-sampler then matches the size of the next
    /// skip connection, which is diffusers' `upsample_size` for odd sizes and 2× otherwise.
    func callAsFunction(_ x: Tensor, _ cond: UNetConditioning, skips: inout [Tensor], pool: ThreadPool) -> Tensor {
        var h = x
        for (i, resnet) in resnets.enumerated() {
            h = Tensor.concatChannels(h, skips.removeLast())
            h = resnet(h, timeEmbedding: cond.timeEmbedding, overwritingInput: true, pool: pool)
            if !attentions.isEmpty { h = attentions[i](h, context: cond.context, pool: pool) }
        }
        if let upsampler {
            let target = skips.last!
            h = upsampler(h, height: target.height, width: target.width, pool: pool)
        }
        return h
    }
}
