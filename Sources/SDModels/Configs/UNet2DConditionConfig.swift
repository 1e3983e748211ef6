// Matches the config of diffusers.UNet2DConditionModel (diffusers 0.42 defaults), for the
// SD 1.x/2.x family. Features outside it are rejected by name ("… is not supported yet").
import SDFormat

/// The UNet's architecture, read from diffusers' UNet2DConditionModel config.json.
public struct UNet2DConditionConfig: Sendable, Equatable {
    /// A down block kind (`down_block_types`); the raw value is diffusers' class name.
    public enum DownBlockType: String, Sendable { case crossAttnDownBlock2D = "CrossAttnDownBlock2D", downBlock2D = "DownBlock2D" }
    /// An up block kind (`up_block_types`); the raw value is diffusers' class name.
    public enum UpBlockType: String, Sendable { case crossAttnUpBlock2D = "CrossAttnUpBlock2D", upBlock2D = "UpBlock2D" }
    /// The mid block kind (`mid_block_type`); the raw value is diffusers' class name.
    public enum MidBlockType: String, Sendable { case unetMidBlock2DCrossAttn = "UNetMidBlock2DCrossAttn" }

    /// Latent channels the UNet reads (4 for SD; 9 for inpainting UNets).
    public var inChannels: Int                  // in_channels
    /// Channels of the UNet's prediction.
    public var outChannels: Int                 // out_channels
    /// Whether the input is mapped to 2x − 1 first.
    public var centerInputSample: Bool          // center_input_sample
    /// Whether the timestep embedding puts cosines before sines.
    public var flipSinToCos: Bool               // flip_sin_to_cos
    /// Frequency shift of the sinusoidal timestep embedding.
    public var freqShift: Double                // freq_shift
    /// The down blocks, one per level, top to bottom.
    public var downBlockTypes: [DownBlockType]  // down_block_types
    /// The mid block, nil for none.
    public var midBlockType: MidBlockType?      // mid_block_type (null: no mid block)
    /// The up blocks, one per level, bottom to top.
    public var upBlockTypes: [UpBlockType]      // up_block_types
    /// Output channels of each level, top to bottom.
    public var blockOutChannels: [Int]          // block_out_channels
    /// ResNet layers in each down block (up blocks have one more).
    public var layersPerBlock: [Int]            // layers_per_block, per down block
    /// Padding of the down-samplers' stride-2 convolutions.
    public var downsamplePadding: Int           // downsample_padding
    /// Output scale of the mid block's ResNets.
    public var midBlockScaleFactor: Double      // mid_block_scale_factor
    /// Output scale of the down and up blocks' ResNets.
    public var resnetOutScaleFactor: Double     // resnet_out_scale_factor
    /// Groups of every GroupNorm.
    public var normNumGroups: Int               // norm_num_groups
    /// Epsilon of the ResNets' GroupNorms and the output norm.
    public var normEps: Double                  // norm_eps
    /// Width of the text context the cross-attention reads.
    public var crossAttentionDim: Int           // cross_attention_dim (one context width for all blocks)
    /// Transformer layers in each down block's attention.
    public var transformerLayersPerBlock: [Int] // transformer_layers_per_block, per down block
    /// Heads per down block: `num_attention_heads`, or else `attention_head_dim`, which
    /// SD 1.x/2.x configs use for the head count (diffusers' historical naming).
    public var attentionHeads: [Int]
    /// Whether the transformers' in/out projections are linear layers (SD 2.x) or 1×1 convolutions.
    public var useLinearProjection: Bool        // use_linear_projection
    /// Whether attention scores are upcast to fp32 (diffusers' fp16 option).
    public var upcastAttention: Bool            // upcast_attention (no effect in fp32)
    /// Width of the timestep embedding.
    public var timeEmbeddingDim: Int            // time_embedding_dim ?? 4 · block_out_channels[0]
    /// SDXL's added conditioning (addition_embed_type "text_time"): nil for SD 1.x/2.x.
    public var textTimeEmbedding: TextTimeEmbeddingConfig?
    /// Width of the guidance-scale embedding an LCM-distilled UNet adds to its timestep
    /// embedding (time_embedding.cond_proj); nil for every other model.
    public var timeCondProjDim: Int?            // time_cond_proj_dim
    /// Latent side the model was trained at (the pipeline's default image is this × the VAE
    /// scale); nil when the config has none.
    public var sampleSize: Int?                 // sample_size (an int; a [h, w] pair is not read)

    /// Resolution levels: one per entry of `blockOutChannels`.
    public var levels: Int { blockOutChannels.count }
    /// The latent is halved this many times on the way down.
    public var downsamplerCount: Int { levels - 1 }

    /// Reads a UNet config.json; throws `ModelError` for unsupported or invalid settings.
    public init(json: JSON) throws {
        let r = try ConfigReader(json, component: "unet")
        if let name = json["_class_name"]?.string, name != "UNet2DConditionModel" {
            throw r.fail("_class_name \(name) is not supported yet (UNet2DConditionModel)")
        }
        inChannels = try r.positiveInt("in_channels", 4)
        outChannels = try r.positiveInt("out_channels", 4)
        centerInputSample = try r.bool("center_input_sample", false)
        flipSinToCos = try r.bool("flip_sin_to_cos", true)
        freqShift = try r.double("freq_shift", 0)

        let down = try r.strings("down_block_types", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"])
        downBlockTypes = try down.enumerated().map { i, name in
            guard let t = DownBlockType(rawValue: name) else { throw r.fail("down_block_types[\(i)] \"\(name)\" is not supported yet") }
            return t
        }
        let up = try r.strings("up_block_types", ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
        upBlockTypes = try up.enumerated().map { i, name in
            guard let t = UpBlockType(rawValue: name) else { throw r.fail("up_block_types[\(i)] \"\(name)\" is not supported yet") }
            return t
        }
        if let v = r.value("mid_block_type") {
            guard let name = v.string, let t = MidBlockType(rawValue: name) else {
                throw r.fail("mid_block_type \(v.serialized) is not supported yet")
            }
            midBlockType = t
        } else if json["mid_block_type"] == nil {
            midBlockType = .unetMidBlock2DCrossAttn
        } else {
            midBlockType = nil  // explicit null: diffusers builds no mid block
        }

        blockOutChannels = try r.positiveInts("block_out_channels", [320, 640, 1280, 1280])
        let n = blockOutChannels.count
        guard downBlockTypes.count == n, upBlockTypes.count == n else {
            throw r.fail("down_block_types (\(downBlockTypes.count)), up_block_types (\(upBlockTypes.count)) and block_out_channels (\(n)) must have the same length")
        }
        layersPerBlock = try r.perBlock("layers_per_block", 2, count: n)
        downsamplePadding = try r.int("downsample_padding", 1)
        guard downsamplePadding == 0 || downsamplePadding == 1 else {
            throw r.fail("downsample_padding \(downsamplePadding) is not supported yet (0 or 1)")
        }
        midBlockScaleFactor = try r.double("mid_block_scale_factor", 1)
        resnetOutScaleFactor = try r.double("resnet_out_scale_factor", 1)
        guard midBlockScaleFactor != 0, resnetOutScaleFactor != 0 else { throw r.fail("scale factors must not be 0") }
        guard r.value("norm_num_groups") != nil || json["norm_num_groups"] == nil else {
            throw r.fail("norm_num_groups null (no output norm) is not supported yet")
        }
        normNumGroups = try r.positiveInt("norm_num_groups", 32)
        normEps = try r.double("norm_eps", 1e-5)
        // A per-block list is allowed by diffusers, but every block reads the same context.
        let crossDims = try r.perBlock("cross_attention_dim", 1280, count: n)
        guard Set(crossDims).count == 1 else {
            throw r.fail("cross_attention_dim differing per block (\(crossDims)) is not supported yet")
        }
        crossAttentionDim = crossDims[0]
        transformerLayersPerBlock = try r.perBlock("transformer_layers_per_block", 1, count: n)
        if r.value("num_attention_heads") != nil {
            attentionHeads = try r.perBlock("num_attention_heads", 8, count: n)
        } else {
            attentionHeads = try r.perBlock("attention_head_dim", 8, count: n)
        }
        useLinearProjection = try r.bool("use_linear_projection", false)
        upcastAttention = try r.bool("upcast_attention", false)
        timeEmbeddingDim = try r.optionalInt("time_embedding_dim") ?? 4 * blockOutChannels[0]
        guard timeEmbeddingDim > 0 else { throw r.fail("time_embedding_dim must be positive") }

        try r.requireValue("act_fn", in: [.string("silu")], "act_fn other than silu")
        try r.requireValue("conv_in_kernel", in: [.number(3)], "conv_in_kernel other than 3")
        try r.requireValue("conv_out_kernel", in: [.number(3)], "conv_out_kernel other than 3")
        try r.requireValue("time_embedding_type", in: [.string("positional")], "time_embedding_type other than positional")
        try r.requireValue("resnet_time_scale_shift", in: [.string("default")], "resnet_time_scale_shift other than default")
        try r.requireValue("resnet_skip_time_act", in: [.bool(false)], "resnet_skip_time_act")
        try r.requireValue("dual_cross_attention", in: [.bool(false)], "dual_cross_attention")
        try r.requireValue("attention_type", in: [.string("default")], "attention_type other than default")
        try r.requireValue("class_embeddings_concat", in: [.bool(false)], "class_embeddings_concat")
        try r.requireValue("mid_block_only_cross_attention", in: [.bool(false)], "mid_block_only_cross_attention")
        if let v = r.value("only_cross_attention"), v != .bool(false),
           v.array.map({ !$0.allSatisfy { $0 == .bool(false) } }) ?? true {
            throw r.fail("only_cross_attention (\(v.serialized)) is not supported yet")
        }
        try r.requireAbsent("class_embed_type", "class embeddings")
        try r.requireAbsent("num_class_embeds", "class embeddings")
        textTimeEmbedding = try TextTimeEmbeddingConfig(r, timeEmbeddingDim: timeEmbeddingDim)
        try r.requireAbsent("encoder_hid_dim_type", "encoder_hid_dim projection")
        try r.requireAbsent("encoder_hid_dim", "encoder_hid_dim projection")
        timeCondProjDim = try r.optionalInt("time_cond_proj_dim")
        if let d = timeCondProjDim, d <= 0 || d > 65536 { throw r.fail("time_cond_proj_dim must be from 1 to 65536, got \(d)") }
        sampleSize = json["sample_size"]?.int
        if let s = sampleSize, s <= 0 || s > 4096 { sampleSize = nil }
        try r.requireAbsent("time_embedding_act_fn", "time_embedding_act_fn")
        try r.requireAbsent("timestep_post_act", "timestep_post_act")
        try r.requireAbsent("cross_attention_norm", "cross_attention_norm")
        try r.requireAbsent("reverse_transformer_layers_per_block", "reverse_transformer_layers_per_block")

        // Shapes diffusers would reject at construction.
        for (i, c) in blockOutChannels.enumerated() {
            guard c % normNumGroups == 0 else {
                throw r.fail("block_out_channels[\(i)] = \(c) is not divisible by norm_num_groups \(normNumGroups)")
            }
            let hasAttention = downBlockTypes[i] == .crossAttnDownBlock2D || upBlockTypes[n - 1 - i] == .crossAttnUpBlock2D
                || (i == n - 1 && midBlockType != nil)
            guard !hasAttention || c % attentionHeads[i] == 0 else {
                throw r.fail("block_out_channels[\(i)] = \(c) is not divisible by its \(attentionHeads[i]) attention heads")
            }
        }
    }
}
