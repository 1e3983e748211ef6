import Foundation
@testable import SDConverter
import SDFormat
import XCTest

/// The SD 2.x text tower's renames, q/k/v split and config inference at the real ViT-H size,
/// from entries alone (no tensor data is read).
final class OpenCLIPCheckpointTests: XCTestCase {
    func entry(_ key: String, _ shape: [Int], at offset: Int = 0) -> SafetensorsFile.Entry {
        SafetensorsFile.Entry(key: key, dtype: .f16, shape: shape, range: offset..<(offset + shape.reduce(1, *) * 2))
    }

    /// OpenCLIP ViT-H/14's text tower as SD 2.x checkpoints store it: width 1024, 24 blocks.
    func vitH() -> [String: SafetensorsFile.Entry] {
        var d: [String: SafetensorsFile.Entry] = [
            "token_embedding.weight": entry("token_embedding.weight", [49408, 1024]),
            "positional_embedding": entry("positional_embedding", [77, 1024]),
            "ln_final.weight": entry("ln_final.weight", [1024]), "ln_final.bias": entry("ln_final.bias", [1024]),
            "text_projection": entry("text_projection", [1024, 1024]), "logit_scale": entry("logit_scale", []),
        ]
        for i in 0..<24 {
            let b = "transformer.resblocks.\(i)."
            for (name, shape) in [("attn.in_proj_weight", [3072, 1024]), ("attn.in_proj_bias", [3072]),
                                  ("attn.out_proj.weight", [1024, 1024]), ("attn.out_proj.bias", [1024]),
                                  ("ln_1.weight", [1024]), ("ln_1.bias", [1024]), ("ln_2.weight", [1024]), ("ln_2.bias", [1024]),
                                  ("mlp.c_fc.weight", [4096, 1024]), ("mlp.c_fc.bias", [4096]),
                                  ("mlp.c_proj.weight", [1024, 4096]), ("mlp.c_proj.bias", [1024])] {
                d[b + name] = entry(b + name, shape, at: 1000 * i)
            }
        }
        return d
    }

    func testRenamesSplitAndInference() throws {
        let text = try OpenCLIPCheckpoint.textTensors(vitH(), path: "sd21.safetensors")
        // 24 blocks × 16 tensors (q/k/v weight and bias from the fused pair) + 4 outside.
        XCTAssertEqual(text.count, 24 * 16 + 4)
        XCTAssertNil(text.keys.first { $0.contains("text_projection") || $0.contains("logit_scale") })
        let q = try XCTUnwrap(text["text_model.encoder.layers.3.self_attn.q_proj.weight"])
        let k = try XCTUnwrap(text["text_model.encoder.layers.3.self_attn.k_proj.weight"])
        let v = try XCTUnwrap(text["text_model.encoder.layers.3.self_attn.v_proj.weight"])
        XCTAssertEqual(q.shape, [1024, 1024])
        // Consecutive thirds of the fused tensor's bytes (f16: 2 bytes per value).
        XCTAssertEqual(q.range.lowerBound, 3000)
        XCTAssertEqual(k.range.lowerBound, q.range.upperBound)
        XCTAssertEqual(v.range.lowerBound, k.range.upperBound)
        XCTAssertEqual(v.range.upperBound, 3000 + 3072 * 1024 * 2)
        XCTAssertEqual(text["text_model.encoder.layers.0.self_attn.v_proj.bias"]?.shape, [1024])
        XCTAssertEqual(text["text_model.encoder.layers.23.mlp.fc2.weight"]?.shape, [1024, 4096])
        XCTAssertEqual(text["text_model.embeddings.position_embedding.weight"]?.shape, [77, 1024])
        XCTAssertEqual(text["text_model.final_layer_norm.bias"]?.shape, [1024])

        let config = try OpenCLIPCheckpoint.inferTextConfig(text.mapValues(\.shape), path: "sd21.safetensors")
        // stabilityai/stable-diffusion-2-1's text_encoder/config.json: 23 layers, 16 heads, gelu.
        XCTAssertEqual(config["num_hidden_layers"]?.int, 23)
        XCTAssertEqual(config["num_attention_heads"]?.int, 16)
        XCTAssertEqual(config["hidden_size"]?.int, 1024)
        XCTAssertEqual(config["intermediate_size"]?.int, 4096)
        XCTAssertEqual(config["hidden_act"]?.string, "gelu")
    }

    func testMisshapenFusedProjectionIsAnError() {
        var d = vitH()
        d["transformer.resblocks.0.attn.in_proj_weight"] = entry("x", [3073, 1024])
        XCTAssertThrowsError(try OpenCLIPCheckpoint.textTensors(d, path: "bad.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("in_proj_weight"), "\(error)")
        }
    }

    func testSD2SchedulerDefault() {
        let v = OpenCLIPCheckpoint.schedulerConfig(predictionType: "v_prediction")
        XCTAssertEqual(v["_class_name"]?.string, "DDIMScheduler")
        XCTAssertEqual(v["prediction_type"]?.string, "v_prediction")
        XCTAssertEqual(v["steps_offset"]?.int, 1)
    }
}
