/// Orders a component's tensors as the runtime reads them, so that streaming through the
/// file is sequential: names rank by where their module runs (an embedding before the
/// blocks, `resnets.i` before `attentions.i` before `resnets.i+1`, weight before bias);
/// numbers compare as numbers; unknown names go last, alphabetically.
enum ExecutionOrder {
    static let ranks: [String: Int] = {
        let order = [
            // text encoder
            "embeddings", "token_embedding", "position_embedding", "encoder", "layers", "layer_norm1", "self_attn",
            "layer_norm2", "mlp", "fc1", "fc2", "final_layer_norm",
            // UNet and VAE top level
            "time_proj", "time_embedding", "cond_proj", "linear_1", "linear_2", "post_quant_conv", "decoder", "conv_in",
            "down_blocks", "mid_block", "up_blocks", "conv_norm_out", "conv_out", "quant_conv",
            // blocks
            "resnets", "attentions", "downsamplers", "upsamplers",
            "norm1", "conv1", "time_emb_proj", "norm2", "conv2", "conv_shortcut",
            "group_norm", "norm", "proj_in", "transformer_blocks", "attn1", "norm3", "attn2", "ff", "net", "proj_out",
            "to_q", "q_proj", "to_k", "k_proj", "to_v", "v_proj", "to_out", "out_proj", "proj", "conv",
            "weight", "bias",
        ]
        var d: [String: Int] = [:]
        for (i, name) in order.enumerated() where d[name] == nil { d[name] = i }
        return d
    }()

    /// Component-level keys that must come after everything else in the component
    /// (the VAE encoder serves image-to-image only).
    static let trailing: Set<String> = ["encoder", "quant_conv"]

    enum Part: Comparable {
        case known(Int)
        case number(Int)
        case unknown(String)
    }

    static func sortKey(_ key: String, component: String) -> [Part] {
        let parts = key.split(separator: ".").map(String.init)
        var result: [Part] = []
        if component == "vae" || component == "taesd" { result.append(.number(trailing.contains(parts.first ?? "") ? 1 : 0)) }
        var i = 0
        while i < parts.count {
            let s = parts[i]
            // resnets.i and attentions.i interleave: order by index first.
            if (s == "resnets" || s == "attentions"), i + 1 < parts.count, let n = Int(parts[i + 1]) {
                result += [.known(ranks["resnets"]!), .number(n), .number(s == "resnets" ? 0 : 1)]
                i += 2
                continue
            }
            if let n = Int(s) { result.append(.number(n)) } else if let r = ranks[s] { result.append(.known(r)) } else { result.append(.unknown(s)) }
            i += 1
        }
        return result
    }

    static func sorted<T>(_ items: [T], component: String, key: (T) -> String) -> [T] {
        items.map { (sortKey(key($0), component: component), $0) }
            .sorted { $0.0.lexicographicallyPrecedes($1.0) }
            .map(\.1)
    }
}
