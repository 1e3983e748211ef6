import SDFormat
import XCTest
@testable import SDModels

/// The configs read diffusers/transformers keys with the reference defaults and reject what
/// the models do not implement, by name.
final class ConfigTests: XCTestCase {
    func parse(_ text: String) throws -> JSON { try JSON(parsing: text) }

    /// Asserts that `body` throws a ModelError whose message contains every fragment.
    func assertRejects<T>(_ body: @autoclosure () throws -> T, mentioning fragments: [String],
                          file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? ModelError else { return XCTFail("not a ModelError: \(error)", file: file, line: line) }
            for f in fragments {
                XCTAssertTrue(e.message.contains(f), "\"\(e.message)\" does not mention \(f)", file: file, line: line)
            }
        }
    }

    func testUNetDefaultsAreDiffusersDefaults() throws {
        let c = try UNet2DConditionConfig(json: parse("{}"))
        XCTAssertEqual(c.blockOutChannels, [320, 640, 1280, 1280])
        XCTAssertEqual(c.downBlockTypes, [.crossAttnDownBlock2D, .crossAttnDownBlock2D, .crossAttnDownBlock2D, .downBlock2D])
        XCTAssertEqual(c.upBlockTypes, [.upBlock2D, .crossAttnUpBlock2D, .crossAttnUpBlock2D, .crossAttnUpBlock2D])
        XCTAssertEqual(c.midBlockType, .unetMidBlock2DCrossAttn)
        XCTAssertEqual(c.layersPerBlock, [2, 2, 2, 2])
        XCTAssertEqual(c.attentionHeads, [8, 8, 8, 8])
        XCTAssertEqual(c.crossAttentionDim, 1280)
        XCTAssertEqual(c.timeEmbeddingDim, 1280)
        XCTAssertEqual(c.normNumGroups, 32)
        XCTAssertEqual(c.normEps, 1e-5)
        XCTAssertTrue(c.flipSinToCos)
        XCTAssertEqual(c.freqShift, 0)
        XCTAssertFalse(c.useLinearProjection)
    }

    func testUNetHeadCountSemantics() throws {
        // SD 2.x style: attention_head_dim per block is the head count.
        let sd2 = try UNet2DConditionConfig(json: parse(#"{"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024}"#))
        XCTAssertEqual(sd2.attentionHeads, [5, 10, 20, 20])
        // num_attention_heads, when given, wins over attention_head_dim.
        let explicit = try UNet2DConditionConfig(json: parse(#"{"attention_head_dim": 64, "num_attention_heads": [4, 8, 16, 16]}"#))
        XCTAssertEqual(explicit.attentionHeads, [4, 8, 16, 16])
        // null num_attention_heads (as diffusers writes it) falls back to attention_head_dim.
        let null = try UNet2DConditionConfig(json: parse(#"{"attention_head_dim": 4, "num_attention_heads": null}"#))
        XCTAssertEqual(null.attentionHeads, [4, 4, 4, 4])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"attention_head_dim": [8, 8]}"#)),
                      mentioning: ["attention_head_dim", "2 entries", "4 blocks"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"attention_head_dim": 7}"#)),
                      mentioning: ["320", "7 attention heads"])
    }

    func testUNetPerBlockLists() throws {
        let c = try UNet2DConditionConfig(json: parse(#"{"layers_per_block": [1, 2, 2, 3], "transformer_layers_per_block": [1, 2, 3, 4]}"#))
        XCTAssertEqual(c.layersPerBlock, [1, 2, 2, 3])
        XCTAssertEqual(c.transformerLayersPerBlock, [1, 2, 3, 4])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"cross_attention_dim": [768, 768, 1024, 1024]}"#)),
                      mentioning: ["cross_attention_dim", "not supported yet"])
    }

    func testUNetRejectsUnsupportedFeatures() throws {
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#)),
                      mentioning: ["down_block_types[0]", "SimpleCrossAttnDownBlock2D", "not supported yet"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"]}"#)),
                      mentioning: ["up_block_types[1]", "AttnUpBlock2D"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#)),
                      mentioning: ["mid_block_type", "not supported yet"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"act_fn": "gelu"}"#)), mentioning: ["act_fn", "not supported yet"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"conv_in_kernel": 7}"#)), mentioning: ["conv_in_kernel"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"class_embed_type": "timestep"}"#)), mentioning: ["class embeddings"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"addition_embed_type": "image"}"#)),
                      mentioning: ["addition embeddings", "not supported yet"])
        // SDXL's text_time needs its two sizes, and room for the pooled embedding beside 6 time ids.
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"addition_embed_type": "text_time"}"#)),
                      mentioning: ["addition_time_embed_dim", "projection_class_embeddings_input_dim"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 1536}"#)),
                      mentioning: ["1536", "leaves no room"])
        let sdxl = try UNet2DConditionConfig(json: parse(#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}"#))
        XCTAssertEqual(sdxl.textTimeEmbedding?.pooledDim, 1280)
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"only_cross_attention": true}"#)), mentioning: ["only_cross_attention"])
        // LCM-distilled UNets are supported; only a nonsensical width is refused.
        XCTAssertEqual(try UNet2DConditionConfig(json: parse(#"{"time_cond_proj_dim": 256}"#)).timeCondProjDim, 256)
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"time_cond_proj_dim": 0}"#)), mentioning: ["time_cond_proj_dim"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"block_out_channels": [320, 640]}"#)), mentioning: ["same length"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"norm_num_groups": 48}"#)), mentioning: ["norm_num_groups 48"])
        assertRejects(try UNet2DConditionConfig(json: parse(#"{"layers_per_block": "two"}"#)), mentioning: ["layers_per_block"])
        // Neutral values of those keys, as diffusers writes them, are accepted.
        XCTAssertNoThrow(try UNet2DConditionConfig(json: parse(#"{"only_cross_attention": [false, false, false, false], "class_embed_type": null, "addition_embed_type": null, "act_fn": "silu"}"#)))
    }

    func testCLIPConfig() throws {
        let d = try CLIPTextConfig(json: parse("{}"))
        XCTAssertEqual([d.vocabSize, d.hiddenSize, d.intermediateSize, d.numHiddenLayers, d.numAttentionHeads, d.maxPositionEmbeddings],
                       [49408, 512, 2048, 12, 8, 77])
        XCTAssertEqual(d.hiddenAct, .quickGelu)
        let sd15 = try CLIPTextConfig(json: parse(#"{"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "hidden_act": "gelu"}"#))
        XCTAssertEqual(sd15.headDim, 64)
        XCTAssertEqual(sd15.hiddenAct, .gelu)
        // A full CLIPConfig is read through its text_config.
        let nested = try CLIPTextConfig(json: parse(#"{"model_type": "clip", "text_config": {"hidden_size": 1024, "num_attention_heads": 16}}"#))
        XCTAssertEqual(nested.hiddenSize, 1024)
        assertRejects(try CLIPTextConfig(json: parse(#"{"hidden_act": "gelu_new"}"#)), mentioning: ["hidden_act", "gelu_new", "not supported yet"])
        assertRejects(try CLIPTextConfig(json: parse(#"{"hidden_size": 100, "num_attention_heads": 8}"#)), mentioning: ["divisible"])
    }

    func testVAEConfig() throws {
        let d = try AutoencoderKLConfig(json: parse("{}"))
        XCTAssertEqual(d.blockOutChannels, [64])
        XCTAssertEqual(d.upsamplingFactor, 1)
        XCTAssertEqual(d.scalingFactor, 0.18215)
        XCTAssertNil(d.shiftFactor)
        let sd = try AutoencoderKLConfig(json: parse(#"{"block_out_channels": [128, 256, 512, 512], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "layers_per_block": 2}"#))
        XCTAssertEqual(sd.upsamplingFactor, 8)
        XCTAssertEqual(sd.layersPerBlock, 2)
        assertRejects(try AutoencoderKLConfig(json: parse(#"{"up_block_types": ["AttnUpDecoderBlock2D"]}"#)),
                      mentioning: ["up_block_types[0]", "AttnUpDecoderBlock2D", "not supported yet"])
        assertRejects(try AutoencoderKLConfig(json: parse(#"{"act_fn": "relu"}"#)), mentioning: ["act_fn"])
        assertRejects(try AutoencoderKLConfig(json: parse(#"{"_class_name": "AsymmetricAutoencoderKL"}"#)), mentioning: ["AsymmetricAutoencoderKL"])
    }
}
