// Matches the config of diffusers.AutoencoderTiny (diffusers 0.42 defaults: madebyollin/taesd).
import SDFormat

/// TAESD's architecture, read from diffusers' AutoencoderTiny config.json.
public struct AutoencoderTinyConfig: Sendable, Equatable {
    /// Image channels the encoder reads.
    public var inChannels: Int                // in_channels (image channels the encoder reads)
    /// Image channels the decoder writes.
    public var outChannels: Int               // out_channels (image channels the decoder writes)
    /// Channels of each encoder level.
    public var encoderBlockOutChannels: [Int] // encoder_block_out_channels
    /// Channels of each decoder level.
    public var decoderBlockOutChannels: [Int] // decoder_block_out_channels
    /// Blocks in each encoder level.
    public var numEncoderBlocks: [Int]        // num_encoder_blocks
    /// Blocks in each decoder level.
    public var numDecoderBlocks: [Int]        // num_decoder_blocks
    /// Latent channels.
    public var latentChannels: Int            // latent_channels
    /// Factor of each decoder up-sampling.
    public var upsamplingScalingFactor: Int   // upsampling_scaling_factor
    /// Latent scaling factor.
    public var scalingFactor: Double          // scaling_factor (1.0: TAESD reads the UNet's latents as they are)

    /// The original madebyollin/taesd network, for its `taesd_decoder.safetensors` files,
    /// which carry no config.
    public static func original(latentChannels: Int) -> AutoencoderTinyConfig {
        // swiftlint:disable:next force_try
        var c = try! AutoencoderTinyConfig(json: .object([]))
        c.latentChannels = latentChannels
        return c
    }

    /// Reads a TAESD config.json; throws `ModelError` for unsupported or invalid settings.
    public init(json: JSON) throws {
        let r = try ConfigReader(json, component: "taesd")
        if let name = json["_class_name"]?.string, name != "AutoencoderTiny" {
            throw r.fail("_class_name \(name) is not AutoencoderTiny")
        }
        inChannels = try r.positiveInt("in_channels", 3)
        outChannels = try r.positiveInt("out_channels", 3)
        encoderBlockOutChannels = try r.positiveInts("encoder_block_out_channels", [64, 64, 64, 64])
        decoderBlockOutChannels = try r.positiveInts("decoder_block_out_channels", [64, 64, 64, 64])
        numEncoderBlocks = try r.positiveInts("num_encoder_blocks", [1, 3, 3, 3])
        numDecoderBlocks = try r.positiveInts("num_decoder_blocks", [3, 3, 3, 1])
        latentChannels = try r.positiveInt("latent_channels", 4)
        upsamplingScalingFactor = try r.positiveInt("upsampling_scaling_factor", 2)
        scalingFactor = try r.double("scaling_factor", 1)
        try r.requireValue("act_fn", in: [.string("relu")], "act_fn other than relu")
        try r.requireValue("upsample_fn", in: [.string("nearest")], "upsample_fn other than nearest")
        guard upsamplingScalingFactor == 2 else { throw r.fail("upsampling_scaling_factor \(upsamplingScalingFactor) is not supported (2 only)") }
        guard numEncoderBlocks.count == encoderBlockOutChannels.count else {
            throw r.fail("num_encoder_blocks and encoder_block_out_channels must have the same length")
        }
        guard numDecoderBlocks.count == decoderBlockOutChannels.count else {
            throw r.fail("num_decoder_blocks and decoder_block_out_channels must have the same length")
        }
        guard numEncoderBlocks.count <= 8, numDecoderBlocks.count <= 8, (numEncoderBlocks + numDecoderBlocks).allSatisfy({ $0 <= 64 }) else {
            throw r.fail("too many levels or blocks")
        }
    }

    /// Output pixels per latent pixel: one 2× up-sampling between levels.
    public var upsamplingFactor: Int { 1 << (decoderBlockOutChannels.count - 1) }
    /// Image pixels per latent pixel on the encoder side (one stride-2 convolution per level but the first).
    public var downsamplingFactor: Int { 1 << (encoderBlockOutChannels.count - 1) }
}
