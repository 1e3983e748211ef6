/// Renaming of original (CompVis/LDM) checkpoint keys to diffusers' state-dict keys, as
/// an ordered table of small rules. A rule matches a dotted key prefix whose `#`
/// segments capture integers, and rewrites that prefix; the first matching rule wins.
struct KeyRule {
    let pattern: [String]
    let rewrite: ([Int]) -> String

    init(_ pattern: String, _ rewrite: @escaping ([Int]) -> String) {
        self.pattern = pattern.split(separator: ".").map(String.init)
        self.rewrite = rewrite
    }

    /// The renamed key, or nil when the rule does not match.
    func apply(_ key: String) -> String? {
        let parts = key.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count > pattern.count else { return nil }
        var captures: [Int] = []
        for (p, s) in zip(pattern, parts) {
            if p == "#" {
                guard let n = Int(s), n >= 0 else { return nil }
                captures.append(n)
            } else if p != s {
                return nil
            }
        }
        guard let prefix = Optional(rewrite(captures)), !prefix.isEmpty else { return nil }
        return prefix + "." + parts[pattern.count...].joined(separator: ".")
    }
}

extension Array where Element == KeyRule {
    func apply(_ key: String) -> String? {
        for rule in self { if let k = rule.apply(key) { return k } }
        return nil
    }
}

/// Renames applied to every occurrence of a path segment pair inside a block.
struct SegmentRename {
    let from: String
    let to: String
    init(_ from: String, _ to: String) {
        self.from = from
        self.to = to
    }
}

/// Renames the path right after `block.N.` (e.g. inside `resnets.0.`) by the first
/// matching entry.
func renameInside(_ key: String, block: String, _ renames: [SegmentRename]) -> String {
    let parts = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    guard let i = parts.indices.first(where: { parts[$0] == block && $0 + 2 < parts.count && Int(parts[$0 + 1]) != nil }) else {
        return key
    }
    let head = parts[...(i + 1)].joined(separator: ".")
    let tail = parts[(i + 2)...].joined(separator: ".")
    for r in renames where tail.hasPrefix(r.from + ".") {
        return head + "." + r.to + tail.dropFirst(r.from.count)
    }
    return key
}

/// The UNet's rules need the number of layers per block (LDM numbers blocks flatly).
func unetKeyRules(layersPerBlock lpb: Int) -> [KeyRule] {
    let stride = lpb + 1
    return [
        KeyRule("time_embed.0") { _ in "time_embedding.linear_1" },
        KeyRule("time_embed.2") { _ in "time_embedding.linear_2" },
        // SDXL's added embedding of pooled text and size ids (diffusers' text_time add_embedding).
        KeyRule("label_emb.0.0") { _ in "add_embedding.linear_1" },
        KeyRule("label_emb.0.2") { _ in "add_embedding.linear_2" },
        KeyRule("input_blocks.0.0") { _ in "conv_in" },
        KeyRule("input_blocks.#.0.op") { c in "down_blocks.\((c[0] - 1) / stride).downsamplers.0.conv" },
        KeyRule("input_blocks.#.0") { c in "down_blocks.\((c[0] - 1) / stride).resnets.\((c[0] - 1) % stride)" },
        KeyRule("input_blocks.#.1") { c in "down_blocks.\((c[0] - 1) / stride).attentions.\((c[0] - 1) % stride)" },
        KeyRule("middle_block.0") { _ in "mid_block.resnets.0" },
        KeyRule("middle_block.1") { _ in "mid_block.attentions.0" },
        KeyRule("middle_block.2") { _ in "mid_block.resnets.1" },
        KeyRule("output_blocks.#.0") { c in "up_blocks.\(c[0] / stride).resnets.\(c[0] % stride)" },
        // The up-sampler follows the resnet, or the resnet and the attention.
        KeyRule("output_blocks.#.1.conv") { c in "up_blocks.\(c[0] / stride).upsamplers.0.conv" },
        KeyRule("output_blocks.#.1") { c in "up_blocks.\(c[0] / stride).attentions.\(c[0] % stride)" },
        KeyRule("output_blocks.#.2.conv") { c in "up_blocks.\(c[0] / stride).upsamplers.0.conv" },
        KeyRule("out.0") { _ in "conv_norm_out" },
        KeyRule("out.2") { _ in "conv_out" },
    ]
}

/// Inside a UNet resnet block (LDM's Sequential indices skip the parameterless SiLU and dropout).
let unetResnetRenames = [
    SegmentRename("in_layers.0", "norm1"), SegmentRename("in_layers.2", "conv1"),
    SegmentRename("emb_layers.1", "time_emb_proj"), SegmentRename("out_layers.0", "norm2"),
    SegmentRename("out_layers.3", "conv2"), SegmentRename("skip_connection", "conv_shortcut"),
]

/// The VAE's rules need the number of resolution levels (LDM numbers decoder levels from
/// the lowest resolution up, diffusers from the top down).
func vaeKeyRules(levels: Int) -> [KeyRule] {
    var rules: [KeyRule] = []
    for part in ["encoder", "decoder"] {
        rules += [
            KeyRule("\(part).mid.block_1") { _ in "\(part).mid_block.resnets.0" },
            KeyRule("\(part).mid.block_2") { _ in "\(part).mid_block.resnets.1" },
            KeyRule("\(part).mid.attn_1") { _ in "\(part).mid_block.attentions.0" },
            KeyRule("\(part).norm_out") { _ in "\(part).conv_norm_out" },
        ]
    }
    rules += [
        KeyRule("encoder.down.#.block.#") { c in "encoder.down_blocks.\(c[0]).resnets.\(c[1])" },
        KeyRule("encoder.down.#.downsample") { c in "encoder.down_blocks.\(c[0]).downsamplers.0" },
        KeyRule("decoder.up.#.block.#") { c in "decoder.up_blocks.\(levels - 1 - c[0]).resnets.\(c[1])" },
        KeyRule("decoder.up.#.upsample") { c in "decoder.up_blocks.\(levels - 1 - c[0]).upsamplers.0" },
    ]
    return rules
}

let vaeResnetRenames = [SegmentRename("nin_shortcut", "conv_shortcut")]
let vaeAttentionRenames = [
    SegmentRename("norm", "group_norm"), SegmentRename("q", "to_q"), SegmentRename("k", "to_k"),
    SegmentRename("v", "to_v"), SegmentRename("proj_out", "to_out.0"),
]
