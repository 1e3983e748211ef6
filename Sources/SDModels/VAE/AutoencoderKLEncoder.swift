// Matches diffusers.models.autoencoders.autoencoder_kl.AutoencoderKL.encode (untiled):
// Encoder → quant_conv → DiagonalGaussianDistribution, whose sample img2img and inpainting
// take (diffusers' retrieve_latents with a generator).
import Glibc
import SDFormat
import SDKernels

/// The VAE's image-to-latent half. Immutable after init, so one instance may serve several
/// threads.
public final class AutoencoderKLEncoder: @unchecked Sendable {
    /// The configuration the encoder was built from.
    public let config: AutoencoderKLConfig
    /// Keeps the mapped weights alive: every WeightMatrix below points into it.
    public let weights: WeightSource

    let encoder: Encoder       // encoder.*
    let quantConv: Linear?     // quant_conv: [2L, 2L, 1, 1] (when use_quant_conv)
    let scope: ResidencyScope  // all of the model's weight pages

    /// Binds and shape-checks the encoder's tensors under `prefix` (as `AutoencoderKL`).
    public init(config: AutoencoderKLConfig, weights: WeightSource, prefix: String = "",
                memory: MemoryOptions = MemoryOptions()) throws {
        self.config = config
        self.weights = weights
        let w = Weights(source: weights, prefix: prefix, memory: memory)
        scope = w.scope
        let moments = 2 * config.latentChannels
        quantConv = config.useQuantConv ? try Linear(conv1x1: w["quant_conv"], in: moments, out: moments) : nil
        encoder = try Encoder(w["encoder"], config: config)
    }

    /// Image pixels per latent pixel along each side (8 for SD).
    public var downsamplingFactor: Int { config.upsamplingFactor }

    /// The latent distribution's parameters for `image` (NCHW [B, in_channels, H, W] in
    /// [-1, 1], H and W multiples of `downsamplingFactor`): mean and std, each NCHW
    /// [B, latent_channels, H/f, W/f]. std = exp(logvar / 2) with logvar clamped to
    /// [-30, 20] (diffusers' DiagonalGaussianDistribution).
    public func encode(image: [Float], batch: Int, height: Int, width: Int,
                       pool: ThreadPool) -> (mean: [Float], std: [Float]) {
        let f = downsamplingFactor
        precondition(batch >= 1 && height >= f && width >= f && height % f == 0 && width % f == 0)
        precondition(image.count == batch * config.inChannels * height * width, "image must be [B, in_channels, H, W]")
        defer { scope.finished() }
        var x = image.withUnsafeBufferPointer {
            Tensor.fromBatchMajor($0.baseAddress!, batch: batch, channels: config.inChannels, height: height, width: width)
        }
        x = encoder(x, pool: pool)
        if let quantConv { x = quantConv(x, pool: pool) }
        let moments = x.toBatchMajor()  // [B, 2L, h, w]: mean channels, then logvar channels
        let l = config.latentChannels, plane = (height / f) * (width / f)
        var mean = [Float](), std = [Float]()
        mean.reserveCapacity(batch * l * plane)
        std.reserveCapacity(batch * l * plane)
        for b in 0..<batch {
            let base = b * 2 * l * plane
            mean += moments[base..<(base + l * plane)]
            for v in moments[(base + l * plane)..<(base + 2 * l * plane)] {
                std.append(expf(0.5 * min(max(v, -30), 20)))
            }
        }
        return (mean, std)
    }

    /// diffusers' `latent_dist.sample(generator)` times `scaling_factor`: mean + std · noise,
    /// with `noise` drawn by the caller from the generator (the mean's shape).
    public func scaledSample(mean: [Float], std: [Float], noise: [Float]) -> [Float] {
        precondition(mean.count == std.count && mean.count == noise.count)
        let scale = Float(config.scalingFactor)
        return (0..<mean.count).map { i in
            let sample = mean[i] + std[i] * noise[i]
            return scale * sample
        }
    }
}

/// diffusers.models.autoencoders.vae.Encoder (double_z).
struct Encoder {
    let convIn: Conv2d                    // conv_in: [c0, in, 3, 3]
    let downBlocks: [DownEncoderBlock2D]  // down_blocks.{i}
    let midBlock: UNetMidBlock2D          // mid_block
    let convNormOut: GroupNorm            // conv_norm_out: [c_last]; conv_act (SiLU) fused into it
    let convOut: Conv2d                   // conv_out: [2L, c_last, 3, 3]

    init(_ w: Weights, config c: AutoencoderKLConfig) throws {
        let channels = c.blockOutChannels
        let eps = Float(c.normEps), groups = c.normNumGroups
        convIn = try Conv2d(w["conv_in"], in: c.inChannels, out: channels[0], kernelSize: 3, padding: 1)
        downBlocks = try channels.indices.map { i in
            try DownEncoderBlock2D(w["down_blocks", i], in: i == 0 ? channels[0] : channels[i - 1], out: channels[i],
                                   layers: c.layersPerBlock, groups: groups, eps: eps,
                                   addDownsample: i < channels.count - 1)
        }
        let last = channels[channels.count - 1]
        midBlock = try UNetMidBlock2D(w["mid_block"], channels: last, groups: groups, eps: eps,
                                      addAttention: c.midBlockAddAttention)
        convNormOut = try GroupNorm(w["conv_norm_out"], channels: last, groups: groups, eps: eps)
        convOut = try Conv2d(w["conv_out"], in: last, out: 2 * c.latentChannels, kernelSize: 3, padding: 1)
    }

    /// x: [in, B, H, W] → moments [2L, B, H/f, W/f].
    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        var h = convIn(x, pool: pool)
        for block in downBlocks { h = block(h, pool: pool) }
        h = midBlock(h, pool: pool)
        h = convNormOut(h, silu: true, pool: pool)
        return convOut(h, pool: pool)
    }
}

/// diffusers' DownEncoderBlock2D: layers_per_block resnets, then a 2× down-sampler with
/// downsample_padding 0 (one zero row/column at the bottom/right).
struct DownEncoderBlock2D {
    let resnets: [ResnetBlock2D]  // resnets.{i}: [in → out], then [out → out]
    let downsampler: Downsample2D?  // downsamplers.0 (all but the last block)

    init(_ w: Weights, in inChannels: Int, out outChannels: Int, layers: Int, groups: Int, eps: Float,
         addDownsample: Bool) throws {
        resnets = try (0..<layers).map {
            try ResnetBlock2D(w["resnets", $0], in: $0 == 0 ? inChannels : outChannels, out: outChannels,
                              timeEmbeddingChannels: nil, groups: groups, eps: eps)
        }
        downsampler = addDownsample ? try Downsample2D(w["downsamplers.0"], channels: outChannels, padding: 0) : nil
    }

    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        var h = x
        for resnet in resnets { h = resnet(h, timeEmbedding: nil, pool: pool) }
        if let downsampler { h = downsampler(h, pool: pool) }
        return h
    }
}
