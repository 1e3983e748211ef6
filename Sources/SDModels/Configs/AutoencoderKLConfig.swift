// Matches the config of diffusers.AutoencoderKL (diffusers 0.42 defaults); only the
// decoder is built from it so far.
import SDFormat

/// The VAE's architecture, read from diffusers' AutoencoderKL config.json.
public struct AutoencoderKLConfig: Sendable, Equatable {
    /// Image channels the encoder reads.
    public var inChannels: Int             // in_channels (encoder side, unused by the decoder)
    /// Image channels the decoder writes.
    public var outChannels: Int            // out_channels
    /// Channels of each level.
    public var blockOutChannels: [Int]     // block_out_channels
    /// ResNet layers per encoder block (decoder blocks have one more).
    public var layersPerBlock: Int         // layers_per_block
    /// Latent channels.
    public var latentChannels: Int         // latent_channels
    /// Groups of every GroupNorm.
    public var normNumGroups: Int          // norm_num_groups
    /// Latents are multiplied by this after encoding and divided by it before decoding.
    public var scalingFactor: Double       // scaling_factor
    /// The latent shift factor; nil for none (SD 1.x/2.x).
    public var shiftFactor: Double?        // shift_factor (null for SD 1.x/2.x)
    /// Whether the decoder starts with the 1×1 post-quant convolution.
    public var usePostQuantConv: Bool      // use_post_quant_conv
    /// Whether the encoder ends with the 1×1 quant convolution.
    public var useQuantConv: Bool          // use_quant_conv (encoder side)
    /// Whether the mid block has its attention layer.
    public var midBlockAddAttention: Bool  // mid_block_add_attention
    /// Every norm in the VAE uses 1e-6 (diffusers' Encoder/Decoder hard-code it).
    public var normEps: Double { 1e-6 }

    /// Output pixels per latent pixel: one 2× up-sampler per level but the last.
    public var upsamplingFactor: Int { 1 << (blockOutChannels.count - 1) }

    /// Reads a VAE config.json; throws `ModelError` for unsupported or invalid settings.
    public init(json: JSON) throws {
        let r = try ConfigReader(json, component: "vae")
        if let name = json["_class_name"]?.string, name != "AutoencoderKL" {
            throw r.fail("_class_name \(name) is not supported yet (AutoencoderKL)")
        }
        inChannels = try r.positiveInt("in_channels", 3)
        outChannels = try r.positiveInt("out_channels", 3)
        blockOutChannels = try r.positiveInts("block_out_channels", [64])
        layersPerBlock = try r.positiveInt("layers_per_block", 1)
        latentChannels = try r.positiveInt("latent_channels", 4)
        normNumGroups = try r.positiveInt("norm_num_groups", 32)
        scalingFactor = try r.double("scaling_factor", 0.18215)
        shiftFactor = r.value("shift_factor") == nil ? nil : try r.double("shift_factor", 0)
        usePostQuantConv = try r.bool("use_post_quant_conv", true)
        useQuantConv = try r.bool("use_quant_conv", true)
        midBlockAddAttention = try r.bool("mid_block_add_attention", true)

        let n = blockOutChannels.count
        let up = try r.strings("up_block_types", ["UpDecoderBlock2D"])
        for (i, name) in up.enumerated() where name != "UpDecoderBlock2D" {
            throw r.fail("up_block_types[\(i)] \"\(name)\" is not supported yet")
        }
        let down = try r.strings("down_block_types", ["DownEncoderBlock2D"])
        for (i, name) in down.enumerated() where name != "DownEncoderBlock2D" {
            throw r.fail("down_block_types[\(i)] \"\(name)\" is not supported yet")
        }
        guard up.count == n else {
            throw r.fail("up_block_types (\(up.count)) and block_out_channels (\(n)) must have the same length")
        }
        try r.requireValue("act_fn", in: [.string("silu")], "act_fn other than silu")
        for (i, c) in blockOutChannels.enumerated() where c % normNumGroups != 0 {
            throw r.fail("block_out_channels[\(i)] = \(c) is not divisible by norm_num_groups \(normNumGroups)")
        }
    }
}
