// Matches diffusers.models.autoencoders.autoencoder_kl.AutoencoderKL.decode (untiled; the
// tiled form is in VAETiling.swift); the encoder is not built.
import SDFormat
import SDKernels

/// Immutable after init, so one instance may serve several threads.
public final class AutoencoderKL: @unchecked Sendable {
    /// The configuration the model was built from.
    public let config: AutoencoderKLConfig
    /// Keeps the mapped weights alive: every WeightMatrix below points into it.
    public let weights: WeightSource

    let postQuantConv: Linear?  // post_quant_conv: [L, L, 1, 1] (when use_post_quant_conv)
    let decoder: Decoder        // decoder.*
    let scope: ResidencyScope   // all of the model's weight pages

    /// Binds and shape-checks the decoder's tensors under `prefix` ("" for a diffusers
    /// vae/diffusion_pytorch_model.safetensors, "vae." in a model file).
    public init(config: AutoencoderKLConfig, weights: WeightSource, prefix: String = "",
                memory: MemoryOptions = MemoryOptions()) throws {
        self.config = config
        self.weights = weights
        let w = Weights(source: weights, prefix: prefix, memory: memory)
        scope = w.scope
        postQuantConv = config.usePostQuantConv
            ? try Linear(conv1x1: w["post_quant_conv"], in: config.latentChannels, out: config.latentChannels) : nil
        decoder = try Decoder(w["decoder"], config: config)
    }

    /// Output pixels per latent pixel along each side (8 for SD).
    public var upsamplingFactor: Int { config.upsamplingFactor }

    /// latents: NCHW [B, latent_channels, h, w], already divided by scaling_factor;
    /// returns the image NCHW [B, out_channels, f·h, f·w] with f = `upsamplingFactor`,
    /// roughly in [-1, 1]. With `tiling`, latents larger than one tile are decoded tile by
    /// tile, one image at a time (see `VAETiling`).
    public func decode(latents: [Float], batch: Int, height h: Int, width w: Int, tiling: VAETiling? = nil,
                       pool: ThreadPool) -> [Float] {
        precondition(batch >= 1 && h >= 1 && w >= 1)
        precondition(latents.count == batch * config.latentChannels * h * w, "latents must be [B, latent_channels, h, w]")
        defer { scope.finished() }
        var z = latents.withUnsafeBufferPointer {
            Tensor.fromBatchMajor($0.baseAddress!, batch: batch, channels: config.latentChannels, height: h, width: w)
        }
        // A 1×1 convolution: per pixel, so it runs on the whole latent before any tiling.
        if let postQuantConv { z = postQuantConv(z, pool: pool) }
        guard let tiling, tiling.applies(height: h, width: w, factor: upsamplingFactor) else {
            return decoder(z, pool: pool).toBatchMajor()
        }
        let f = upsamplingFactor, channels = config.outChannels
        var image = [Float](repeating: 0, count: batch * channels * f * h * f * w)
        for b in 0..<batch {
            image.withUnsafeMutableBufferPointer {
                decodeTiled(z, batchIndex: b, tiling: tiling, into: $0.baseAddress! + b * channels * f * h * f * w, pool: pool)
            }
        }
        return image
    }
}

/// diffusers.models.autoencoders.vae.Decoder.
struct Decoder {
    let convIn: Conv2d                // conv_in: [c_last, L, 3, 3]
    let midBlock: UNetMidBlock2D      // mid_block
    let upBlocks: [UpDecoderBlock2D]  // up_blocks.{i}, from the deepest level up
    let convNormOut: GroupNorm        // conv_norm_out: [c0]; conv_act (SiLU) fused into it
    let convOut: Conv2d               // conv_out: [out, c0, 3, 3]

    init(_ w: Weights, config c: AutoencoderKLConfig) throws {
        let reversed = Array(c.blockOutChannels.reversed())
        let eps = Float(c.normEps), groups = c.normNumGroups
        convIn = try Conv2d(w["conv_in"], in: c.latentChannels, out: reversed[0], kernelSize: 3, padding: 1)
        midBlock = try UNetMidBlock2D(w["mid_block"], channels: reversed[0], groups: groups, eps: eps,
                                      addAttention: c.midBlockAddAttention)
        upBlocks = try reversed.indices.map { i in
            try UpDecoderBlock2D(w["up_blocks", i], in: i == 0 ? reversed[0] : reversed[i - 1], out: reversed[i],
                                 layers: c.layersPerBlock + 1, groups: groups, eps: eps,
                                 addUpsample: i < reversed.count - 1)
        }
        convNormOut = try GroupNorm(w["conv_norm_out"], channels: c.blockOutChannels[0], groups: groups, eps: eps)
        convOut = try Conv2d(w["conv_out"], in: c.blockOutChannels[0], out: c.outChannels, kernelSize: 3, padding: 1)
    }

    /// z: [L, B, h, w] → [out, B, f·h, f·w] (one tile of it when decoding in tiles).
    func callAsFunction(_ z: Tensor, pool: ThreadPool) -> Tensor {
        upper(middle(z, pool: pool), pool: pool)
    }

    /// conv_in and the mid block, at latent resolution: z [L, B, h, w] → [c_last, B, h, w].
    func middle(_ z: Tensor, pool: ThreadPool) -> Tensor {
        midBlock(convIn(z, pool: pool), pool: pool)
    }

    /// The up blocks and the output layers: [c_last, B, h, w] → [out, B, f·h, f·w].
    func upper(_ x: Tensor, pool: ThreadPool) -> Tensor {
        var h = x
        for block in upBlocks { h = block(h, pool: pool) }
        h = convNormOut(h, silu: true, pool: pool)
        return convOut(h, pool: pool)
    }
}

/// diffusers' UNetMidBlock2D as the VAE uses it: resnet, (attention, resnet); no time embedding.
struct UNetMidBlock2D {
    let resnets: [ResnetBlock2D]  // resnets.0, resnets.1
    let attentions: [Attention]   // attentions.0 (when mid_block_add_attention)

    init(_ w: Weights, channels: Int, groups: Int, eps: Float, addAttention: Bool) throws {
        resnets = try (0..<2).map {
            try ResnetBlock2D(w["resnets", $0], in: channels, out: channels, timeEmbeddingChannels: nil,
                              groups: groups, eps: eps)
        }
        attentions = addAttention ? [try Attention(vae: w["attentions.0"], channels: channels, groups: groups, eps: eps)] : []
    }

    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        var h = resnets[0](x, timeEmbedding: nil, pool: pool)
        if let attention = attentions.first { h = attention(h, pool: pool) }
        return resnets[1](h, timeEmbedding: nil, pool: pool)
    }
}

/// diffusers' UpDecoderBlock2D: layers_per_block+1 resnets, then a 2× up-sampler.
struct UpDecoderBlock2D {
    let resnets: [ResnetBlock2D]  // resnets.{i}: [in → out], then [out → out]
    let upsampler: Upsample2D?    // upsamplers.0 (all but the last block)

    init(_ w: Weights, in inChannels: Int, out outChannels: Int, layers: Int, groups: Int, eps: Float,
         addUpsample: Bool) throws {
        resnets = try (0..<layers).map {
            try ResnetBlock2D(w["resnets", $0], in: $0 == 0 ? inChannels : outChannels, out: outChannels,
                              timeEmbeddingChannels: nil, groups: groups, eps: eps)
        }
        upsampler = addUpsample ? try Upsample2D(w["upsamplers.0"], channels: outChannels) : nil
    }

    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        var h = x
        // Each resnet's input is dead once it returns. (The block's own input only meets a
        // projected shortcut in blocks after the first, whose input is a fresh up-sample.)
        for resnet in resnets { h = resnet(h, timeEmbedding: nil, overwritingInput: true, pool: pool) }
        if let upsampler { h = upsampler(h, pool: pool) }
        return h
    }
}
