// Matches diffusers.models.autoencoders.autoencoder_tiny.AutoencoderTiny (decode, encode) with
// vae.DecoderTiny / vae.EncoderTiny and unet_2d_blocks.AutoencoderTinyBlock: TAESD, a decoder
// of plain 3×3 convolutions and ReLUs, about 100× cheaper than AutoencoderKL's.
import Glibc
import SDFormat
import SDKernels

/// Immutable after init, so one instance may serve several threads.
public final class AutoencoderTiny: @unchecked Sendable {
    /// The configuration the model was built from.
    public let config: AutoencoderTinyConfig
    /// Keeps the mapped weights alive.
    public let weights: WeightSource

    let decoder: [TinyLayer]   // decoder.layers.{i}
    let decoderStages: [TinyDecoderStage]  // the same, split at each up-sampling
    let encoder: [TinyLayer]?  // encoder.layers.{i}, when the file has them
    let scope: ResidencyScope

    /// Binds and shape-checks the tensors under `prefix` ("" for a diffusers AutoencoderTiny
    /// folder, "taesd." in a model file). The encoder is optional: many TAESD files hold the
    /// decoder only.
    public init(config: AutoencoderTinyConfig, weights: WeightSource, prefix: String = "",
                memory: MemoryOptions = MemoryOptions()) throws {
        self.config = config
        self.weights = weights
        let w = Weights(source: weights, prefix: prefix, memory: memory)
        scope = w.scope
        decoder = try Self.decoderLayers(w["decoder.layers"], config)
        decoderStages = TinyDecoderStage.split(decoder)
        let hasEncoder = weights.tensorKeys.contains { $0.hasPrefix(prefix + "encoder.") }
        encoder = hasEncoder ? try Self.encoderLayers(w["encoder.layers"], config) : nil
    }

    /// Whether the weights include the encoder; without it, encoding returns nil.
    public var hasEncoder: Bool { encoder != nil }
    /// Output pixels per latent pixel.
    public var upsamplingFactor: Int { config.upsamplingFactor }

    /// DecoderTiny's Sequential: conv, ReLU, then per level its blocks, a 2× up-sampling and a
    /// conv (no bias) — the last level ends in the bias-carrying conv to out_channels instead.
    static func decoderLayers(_ w: Weights, _ c: AutoencoderTinyConfig) throws -> [TinyLayer] {
        let channels = c.decoderBlockOutChannels
        var layers: [TinyLayer] = [.conv(try Conv2d(w["0"], in: c.latentChannels, out: channels[0], kernelSize: 3, padding: 1)), .relu]
        for (i, blocks) in c.numDecoderBlocks.enumerated() {
            let n = channels[i], last = i == channels.count - 1
            for _ in 0..<blocks { layers.append(.block(try AutoencoderTinyBlock(w["\(layers.count)"], in: n, out: n))) }
            if !last { layers.append(.upsample) }
            layers.append(.conv(try Conv2d(w["\(layers.count)"], in: n, out: last ? c.outChannels : n, kernelSize: 3,
                                           padding: 1, bias: last)))
        }
        return layers
    }

    /// EncoderTiny's Sequential: per level a conv (the first from the image, the others stride 2
    /// without bias) and its blocks, then a conv to latent_channels.
    static func encoderLayers(_ w: Weights, _ c: AutoencoderTinyConfig) throws -> [TinyLayer] {
        let channels = c.encoderBlockOutChannels
        var layers: [TinyLayer] = []
        for (i, blocks) in c.numEncoderBlocks.enumerated() {
            let n = channels[i]
            layers.append(.conv(i == 0
                ? try Conv2d(w["0"], in: c.inChannels, out: n, kernelSize: 3, padding: 1)
                : try Conv2d(w["\(layers.count)"], in: n, out: n, kernelSize: 3, stride: 2, padding: 1, bias: false)))
            for _ in 0..<blocks { layers.append(.block(try AutoencoderTinyBlock(w["\(layers.count)"], in: n, out: n))) }
        }
        layers.append(.conv(try Conv2d(w["\(layers.count)"], in: channels[channels.count - 1], out: c.latentChannels,
                                       kernelSize: 3, padding: 1)))
        return layers
    }

    /// latents: NCHW [B, latent_channels, h, w], already divided by scaling_factor (1 for TAESD,
    /// which reads the UNet's latents as they are); returns the image NCHW [B, out_channels, f·h, f·w] in about [-1, 1].
    /// Each resolution of the decoder runs in bands of rows whose largest activation stays
    /// within `maxBandBytes` (AutoencoderTinyBands.swift); the result is the whole decode's bit
    /// for bit (crops start on even rows, so the Winograd tiles line up), and `Int.max` decodes whole.
    public func decode(latents: [Float], batch: Int, height h: Int, width w: Int,
                       maxBandBytes: Int = AutoencoderTiny.standardBandBytes, pool: ThreadPool) -> [Float] {
        decode(latents: latents, batch: batch, height: h, width: w, bands: .budget(bytes: maxBandBytes), pool: pool)
    }

    func decode(latents: [Float], batch: Int, height h: Int, width w: Int, bands: TinyDecodeBands,
                pool: ThreadPool) -> [Float] {
        precondition(batch >= 1 && h >= 1 && w >= 1)
        precondition(latents.count == batch * config.latentChannels * h * w, "latents must be [B, latent_channels, h, w]")
        defer { scope.finished() }
        let x = latents.withUnsafeBufferPointer {
            Tensor.fromBatchMajor($0.baseAddress!, batch: batch, channels: config.latentChannels, height: h, width: w)
        }
        // DecoderTiny's soft clamp: tanh(x / 3) · 3.
        if !Kernels.isPlanning {
            for i in 0..<x.count { x.data[i] = tanhf(x.data[i] / 3) * 3 }
        }
        let y = decoderStages.reduce(x) { Self.run($1, $0, bands: bands, pool: pool) }
        // [0, 1] → [-1, 1], diffusers' convention.
        if !Kernels.isPlanning { for i in 0..<y.count { y.data[i] = y.data[i] * 2 - 1 } }
        return y.toBatchMajor()
    }

    /// image: NCHW [B, in_channels, H, W] in [-1, 1] → latents [B, latent_channels, H/f, W/f]
    /// (diffusers' `AutoencoderTiny.encode(x).latents`; nil without an encoder).
    public func encode(image: [Float], batch: Int, height: Int, width: Int, pool: ThreadPool) -> [Float]? {
        guard let encoder else { return nil }
        precondition(image.count == batch * config.inChannels * height * width)
        defer { scope.finished() }
        let x = image.withUnsafeBufferPointer {
            Tensor.fromBatchMajor($0.baseAddress!, batch: batch, channels: config.inChannels, height: height, width: width)
        }
        if !Kernels.isPlanning { for i in 0..<x.count { x.data[i] = (x.data[i] + 1) / 2 } }
        return Self.run(encoder, x, pool: pool).toBatchMajor()
    }

    static func run(_ layers: [TinyLayer], _ input: Tensor, pool: ThreadPool) -> Tensor {
        layers.reduce(input) { apply($1, $0, pool: pool) }
    }

    static func apply(_ layer: TinyLayer, _ x: Tensor, pool: ThreadPool) -> Tensor {
        switch layer {
        case .conv(let conv): return conv(x, pool: pool)
        case .relu: relu(x); return x
        case .block(let block): return block(x, pool: pool)
        case .upsample:
            let up = Tensor(channels: x.channels, batch: x.batch, height: 2 * x.height, width: 2 * x.width)
            Kernels.upsampleNearest2x(x.pointer, planes: x.channels * x.batch, height: x.height, width: x.width,
                                      output: up.data, pool: pool)
            return up
        }
    }
}

/// One entry of DecoderTiny's / EncoderTiny's `layers` Sequential (ReLU and Upsample hold no
/// weights but take an index).
enum TinyLayer {
    case conv(Conv2d)
    case relu
    case block(AutoencoderTinyBlock)
    case upsample
}

/// relu(conv.4(relu(conv.2(relu(conv.0(x))))) + skip(x)).
struct AutoencoderTinyBlock {
    let conv0: Conv2d    // conv.0: [out, in, 3, 3]
    // conv.1: ReLU
    let conv2: Conv2d    // conv.2: [out, out, 3, 3]
    // conv.3: ReLU
    let conv4: Conv2d    // conv.4: [out, out, 3, 3]
    let skip: Conv2d?    // skip: [out, in, 1, 1] without bias, only when in != out
    let scope: ResidencyScope

    init(_ w: Weights, in inChannels: Int, out outChannels: Int) throws {
        conv0 = try Conv2d(w["conv.0"], in: inChannels, out: outChannels, kernelSize: 3, padding: 1)
        conv2 = try Conv2d(w["conv.2"], in: outChannels, out: outChannels, kernelSize: 3, padding: 1)
        conv4 = try Conv2d(w["conv.4"], in: outChannels, out: outChannels, kernelSize: 3, padding: 1)
        skip = inChannels == outChannels ? nil
            : try Conv2d(w["skip"], in: inChannels, out: outChannels, kernelSize: 1, padding: 0, bias: false)
        scope = w.scope
    }

    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        scope.using {
            var h = conv0(x, pool: pool)
            relu(h)
            h = conv2(h, pool: pool)
            relu(h)
            let y = conv4(h, residual: skip.map { $0(x, pool: pool) } ?? x, pool: pool)
            relu(y)
            return y
        }
    }
}

/// In place; a loop the compiler vectorises (max with zero).
func relu(_ x: Tensor) {
    if Kernels.isPlanning { return }
    let p = x.data
    for i in 0..<x.count { p[i] = max(p[i], 0) }
}
