/// The inverse of the single-file renames (KeyRules, OpenCLIPCheckpoint): the name a diffusers
/// key has in an original-layout checkpoint, so that a tensor a single file lacks is named as
/// the file would hold it ("model.diffusion_model.label_emb.0.2.weight", not only
/// "add_embedding.linear_2.weight").
enum CheckpointKeyNames {
    /// A UNet key in LDM's layout (without "model.diffusion_model."); `upAttention[b]` says
    /// whether up block b has attentions (its up-sampler then comes third, not second).
    static func unet(_ key: String, layersPerBlock lpb: Int, upAttention: [Bool]) -> String? {
        let fixed = [("conv_in.", "input_blocks.0.0."), ("time_embedding.linear_1.", "time_embed.0."),
                     ("time_embedding.linear_2.", "time_embed.2."), ("add_embedding.linear_1.", "label_emb.0.0."),
                     ("add_embedding.linear_2.", "label_emb.0.2."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]
        for (d, l) in fixed where key.hasPrefix(d) { return l + key.dropFirst(d.count) }
        let p = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        func rest(_ i: Int) -> String { p[i...].joined(separator: ".") }
        func resnet(_ r: String) -> String { inverse(r, unetResnetRenames) }
        let stride = lpb + 1
        guard p.count > 4 else { return nil }
        switch (p[0], Int(p[1]), p[2], Int(p[3])) {
        case ("down_blocks", let b?, "resnets", let l?): return "input_blocks.\(1 + b * stride + l).0." + resnet(rest(4))
        case ("down_blocks", let b?, "attentions", let l?): return "input_blocks.\(1 + b * stride + l).1." + rest(4)
        case ("down_blocks", let b?, "downsamplers", 0?) where p[4] == "conv": return "input_blocks.\((b + 1) * stride).0.op." + rest(5)
        case ("up_blocks", let b?, "resnets", let l?): return "output_blocks.\(b * stride + l).0." + resnet(rest(4))
        case ("up_blocks", let b?, "attentions", let l?): return "output_blocks.\(b * stride + l).1." + rest(4)
        case ("up_blocks", let b?, "upsamplers", 0?) where p[4] == "conv" && b < upAttention.count:
            return "output_blocks.\(b * stride + lpb).\(upAttention[b] ? 2 : 1).conv." + rest(5)
        default: break
        }
        if p[0] == "mid_block", let i = Int(p[2]) {
            if p[1] == "resnets" { return "middle_block.\(2 * i)." + resnet(rest(3)) }
            if p[1] == "attentions" { return "middle_block.1." + rest(3) }
        }
        return nil
    }

    /// A VAE key in LDM's layout (without "first_stage_model."); LDM numbers decoder levels
    /// from the lowest resolution.
    static func vae(_ key: String, levels: Int) -> String {
        let p = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        func rest(_ i: Int) -> String { p[i...].joined(separator: ".") }
        if p.count > 2, p[1] == "conv_norm_out" { return p[0] + ".norm_out." + rest(2) }
        guard p.count > 3 else { return key }
        if p[1] == "mid_block", p.count > 4, let i = Int(p[3]) {
            if p[2] == "resnets" { return p[0] + ".mid.block_\(i + 1)." + inverse(rest(4), vaeResnetRenames) }
            if p[2] == "attentions" { return p[0] + ".mid.attn_1." + inverse(rest(4), vaeAttentionRenames) }
        }
        guard p.count > 4, let i = Int(p[2]) else { return key }
        let level = p[0] == "decoder" ? levels - 1 - i : i
        let part = p[0] == "decoder" ? "up" : "down"
        if p[3] == "resnets" { return "\(p[0]).\(part).\(level).block.\(p[4])." + inverse(rest(5), vaeResnetRenames) }
        if p[3] == "downsamplers" || p[3] == "upsamplers" { return "\(p[0]).\(part).\(level).\(part)sample." + rest(5) }
        return key
    }

    /// A text encoder key in OpenCLIP's layout (without the tower's prefix); q/k/v come from
    /// the fused `attn.in_proj_*`.
    static func openCLIP(_ key: String) -> String? {
        if key == "text_projection.weight" { return "text_projection" }
        if let (open, _) = OpenCLIPCheckpoint.renames.first(where: { $0.value == key }) { return open }
        let layers = "text_model.encoder.layers."
        guard key.hasPrefix(layers) else { return nil }
        let rest = key.dropFirst(layers.count)
        guard let dot = rest.firstIndex(of: "."), let index = Int(rest[..<dot]) else { return nil }
        let inner = String(rest[rest.index(after: dot)...])
        let block = "transformer.resblocks.\(index)."
        for name in ["q_proj", "k_proj", "v_proj"] {
            for part in ["weight", "bias"] where inner == "self_attn.\(name).\(part)" { return block + "attn.in_proj_\(part)" }
        }
        if let (open, ours) = OpenCLIPCheckpoint.blockRenames.first(where: { inner.hasPrefix($0.1) }) {
            return block + open + inner.dropFirst(ours.count)
        }
        return nil
    }

    /// `r` with its leading diffusers module name put back to the original one.
    static func inverse(_ r: String, _ renames: [SegmentRename]) -> String {
        for s in renames where r.hasPrefix(s.to + ".") { return s.from + r.dropFirst(s.to.count) }
        return r
    }
}
