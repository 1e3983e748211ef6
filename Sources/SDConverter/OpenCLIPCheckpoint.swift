import SDFormat

/// SD 2.x single-file checkpoints: the text encoder is OpenCLIP's ViT-H/14 text tower under
/// `cond_stage_model.model.`, which diffusers stores as a transformers CLIPTextModel. The
/// renames follow diffusers' `convert_open_clip_checkpoint`; the fused attention input
/// projection `in_proj_weight` [3C, C] (and `in_proj_bias` [3C]) becomes q/k/v as row
/// ranges of the same bytes, so nothing is copied. SD 2.x conditions on the penultimate
/// layer: the config gets one layer fewer than the checkpoint has, and the last block (with
/// `text_projection` and `logit_scale`, which only the pooled output uses) is reported unused.
enum OpenCLIPCheckpoint {
    static let prefix = "cond_stage_model.model."

    /// Fixed names outside the residual blocks, OpenCLIP → transformers.
    static let renames = [
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
    ]
    /// Inside `transformer.resblocks.N.`, OpenCLIP → transformers (`text_model.encoder.layers.N.`).
    static let blockRenames = [
        ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."), ("attn.out_proj.", "self_attn.out_proj."),
    ]

    /// The text encoder's tensors under diffusers keys (key within `prefix` → entry): SD 2.x's
    /// tower at `prefix`, or SDXL's second encoder at `conditioner.embedders.1.model.`.
    static func textTensors(_ source: [String: SafetensorsFile.Entry], path: String,
                            prefix: String = OpenCLIPCheckpoint.prefix) throws -> [String: SafetensorsFile.Entry] {
        var out: [String: SafetensorsFile.Entry] = [:]
        for (key, entry) in source {
            if let name = renames[key] {
                out[name] = entry
                continue
            }
            let blockPrefix = "transformer.resblocks."
            guard key.hasPrefix(blockPrefix) else { continue }  // text_projection, logit_scale, attn_mask
            let rest = key.dropFirst(blockPrefix.count)
            guard let dot = rest.firstIndex(of: "."), let index = Int(rest[..<dot]) else { continue }
            let inner = String(rest[rest.index(after: dot)...])
            let layer = "text_model.encoder.layers.\(index)."
            if inner == "attn.in_proj_weight" || inner == "attn.in_proj_bias" {
                guard let rows = entry.shape.first, rows % 3 == 0, rows > 0 else {
                    throw FormatError(path, "\(prefix + key) has shape \(entry.shape); expected [3·width, …]")
                }
                let part = rows / 3, suffix = inner.hasSuffix("weight") ? "weight" : "bias"
                for (i, name) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                    let newKey = layer + "self_attn.\(name).\(suffix)"
                    out[newKey] = entry.rows((i * part)..<((i + 1) * part), key: entry.key)
                }
                continue
            }
            if let (from, to) = blockRenames.first(where: { inner.hasPrefix($0.0) }) {
                out[layer + to + inner.dropFirst(from.count)] = entry
            }
        }
        return out
    }

    /// The transformers CLIPTextConfig of the tower, read off its shapes: heads of 64 (ViT-H:
    /// width 1024, 16 heads), exact GELU, and the penultimate layer's output.
    static func inferTextConfig(_ text: [String: [Int]], path: String) throws -> JSON {
        func need(_ key: String, rank: Int) throws -> [Int] {
            guard let s = text[key], s.count == rank else { throw FormatError(path, "cannot infer the text encoder config: \(key) missing or misshapen") }
            return s
        }
        let token = try need("text_model.embeddings.token_embedding.weight", rank: 2)
        let positions = try need("text_model.embeddings.position_embedding.weight", rank: 2)[0]
        let intermediate = try need("text_model.encoder.layers.0.mlp.fc1.weight", rank: 2)[0]
        let blocks = Set(text.keys.compactMap { k -> Int? in
            let p = "text_model.encoder.layers."
            guard k.hasPrefix(p) else { return nil }
            return Int(k.dropFirst(p.count).prefix { $0 != "." })
        }).count
        let hidden = token[1]
        guard hidden % 64 == 0, blocks >= 2 else {
            throw FormatError(path, "cannot infer the OpenCLIP text encoder's heads or layers (width \(hidden), \(blocks) blocks); pass --config with a diffusers folder")
        }
        return .object([
            ("architectures", .array([.string("CLIPTextModel")])), ("hidden_act", .string("gelu")),
            ("hidden_size", .number(Double(hidden))), ("intermediate_size", .number(Double(intermediate))),
            ("layer_norm_eps", .number(1e-5)), ("max_position_embeddings", .number(Double(positions))),
            ("num_attention_heads", .number(Double(hidden / 64))), ("num_hidden_layers", .number(Double(blocks - 1))),
            ("vocab_size", .number(Double(token[0]))),
            ("bos_token_id", .number(0)), ("eos_token_id", .number(2)), ("pad_token_id", .number(1)),
        ])
    }

    /// SD 2.1's scheduler (DDIM) with the prediction type diffusers' single-file loader picks:
    /// v_prediction for any SD 2.x checkpoint unless told otherwise (the 512-px 2.x base
    /// models are epsilon: `--prediction-type epsilon`).
    static func schedulerConfig(predictionType: String) -> JSON {
        var members = defaultSchedulerConfig.object ?? []
        members.removeAll { $0.0 == "_class_name" || $0.0 == "prediction_type" }
        return .object([("_class_name", .string("DDIMScheduler"))] + members + [("prediction_type", .string(predictionType))])
    }
}

extension JSON {
    /// This object with `key` set to `value` (added at the end when absent).
    func setting(_ key: String, _ value: JSON) -> JSON {
        guard var members = object else { return self }
        if let i = members.firstIndex(where: { $0.0 == key }) { members[i].1 = value } else { members.append((key, value)) }
        return .object(members)
    }
}
