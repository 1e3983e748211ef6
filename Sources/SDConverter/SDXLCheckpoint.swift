import SDFormat

/// SDXL single-file checkpoints in Stability's original ("sgm") key layout, as SDXL base,
/// SDXL-Turbo and their fine-tunes are shared: the UNet under `model.diffusion_model.` (LDM
/// block numbering, SDXL's `label_emb` added embedding), the VAE under `first_stage_model.`,
/// CLIP ViT-L in transformers' layout under `conditioner.embedders.0.transformer.` and
/// OpenCLIP ViT-bigG under `conditioner.embedders.1.model.` (fused q/k/v, `text_projection`
/// stored as the matrix OpenCLIP multiplies from the right, so it is transposed here).
///
/// Configs come from `configFolder` (a diffusers SDXL folder, as diffusers'
/// `from_single_file(config=…)`), or are read off the shapes. What shapes cannot tell is taken
/// as diffusers' single-file loader takes it: any file with this layout is "xl_base" there, so
/// the scheduler, prediction type, default size and `force_zeros_for_empty_prompt` are SDXL
/// base 1.0's. An SDXL-Turbo file converts with `--config` (its folder's configs) for its own
/// scheduler and size; the report and `pocketsd info` say so.
enum SDXLCheckpoint {
    static let text1Prefixes = ["conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.0.transformer."]
    static let text2Prefix = "conditioner.embedders.1.model."
    /// The refiner's only text encoder (OpenCLIP at embedders.0).
    static let refinerPrefix = "conditioner.embedders.0.model."

    static func read(_ file: SafetensorsFile, path: String, configFolder: String?, predictionType: String?) throws -> SourceModel {
        let keys = file.tensorKeys
        if keys.contains(where: { $0.hasPrefix(refinerPrefix) }) {
            throw FormatError(path, "SDXL refiner checkpoints (one OpenCLIP text encoder at \(refinerPrefix)*) are not supported")
        }
        let unetSource = SingleFileCheckpoint.subset(file, SingleFileCheckpoint.unetPrefix)
        let vaeSource = SingleFileCheckpoint.subset(file, SingleFileCheckpoint.vaePrefix)
        var text1Prefix = text1Prefixes[0]
        var text1Source = SingleFileCheckpoint.subset(file, text1Prefix)
        if text1Source.isEmpty {
            text1Prefix = text1Prefixes[1]
            text1Source = SingleFileCheckpoint.subset(file, text1Prefix)
        }
        let text2Raw = SingleFileCheckpoint.subset(file, text2Prefix)
        for (source, what) in [(unetSource, "UNet (\(SingleFileCheckpoint.unetPrefix)*)"), (vaeSource, "VAE (\(SingleFileCheckpoint.vaePrefix)*)"),
                               (text1Source, "first text encoder (\(text1Prefixes[1])*)"), (text2Raw, "second text encoder (\(text2Prefix)*)")]
            where source.isEmpty {
            throw FormatError(path, "SDXL checkpoint has no \(what)")
        }
        let text2 = try OpenCLIPCheckpoint.textTensors(text2Raw, path: path, prefix: text2Prefix)
        guard let projection = text2Raw["text_projection"] else {
            throw FormatError(path, "SDXL checkpoint lacks \(text2Prefix)text_projection")
        }
        guard projection.shape.count == 2 else {
            throw FormatError(path, "\(text2Prefix)text_projection has shape \(projection.shape); expected [width, projection]")
        }

        var configs: [String: JSON] = [:]
        var scheduler = baseSchedulerConfig
        var tokenizer = TokenizerData.bundled()
        var tokenizer2 = TokenizerData.bundled(padToken: "!")
        var forceZeros = true
        var assumptions: [String] = []
        if let configFolder {
            for name in componentNames {
                configs[name] = try FileSystem.readJSON(FileSystem.join(configFolder, "\(name)/config.json"))
            }
            let schedulerPath = FileSystem.join(configFolder, "scheduler/scheduler_config.json")
            if FileSystem.isFile(schedulerPath) { scheduler = try FileSystem.readJSON(schedulerPath) }
            for (name, pad) in [("tokenizer", nil), ("tokenizer_2", "!")] as [(String, String?)] {
                let dir = FileSystem.join(configFolder, name)
                guard TokenizerData.isTokenizerFolder(dir) else { continue }
                if pad == nil { tokenizer = try TokenizerData.read(folder: dir) } else { tokenizer2 = try TokenizerData.read(folder: dir) }
            }
            let indexPath = FileSystem.join(configFolder, "model_index.json")
            if FileSystem.isFile(indexPath) { forceZeros = try FileSystem.readJSON(indexPath)["force_zeros_for_empty_prompt"]?.bool ?? true }
        } else {
            // Inference reads CLIP keys below text_model. (the prefix may have kept it).
            var text1Shapes: [String: [Int]] = [:]
            for (k, e) in text1Source { text1Shapes[k.hasPrefix("text_model.") ? String(k.dropFirst("text_model.".count)) : k] = e.shape }
            configs = try inferConfigs(path: path, unet: unetSource.mapValues(\.shape), vae: vaeSource.mapValues(\.shape),
                                       text1: text1Shapes, text2: text2.mapValues(\.shape),
                                       projection: projection.shape)
            assumptions.append(assumption(predictionType: predictionType))
        }
        guard let lpb = configs["unet"]!["layers_per_block"]?.int, lpb >= 1,
              let levels = configs["vae"]!["block_out_channels"]?.array?.count, levels >= 1 else {
            throw FormatError(configFolder ?? path, "config lacks layers_per_block or block_out_channels (a per-block layers_per_block is not supported for single files)")
        }

        var used = Set<String>()
        var components: [SourceModel.Component] = []
        components.append(SingleFileCheckpoint.component("text_encoder", config: configs["text_encoder"]!, file: file, prefix: text1Prefix,
                                                         source: text1Source, used: &used, rename: SingleFileCheckpoint.textRename))
        // Keys are already diffusers'; the OpenCLIP sources are marked used by their entry key.
        var tensors2: [SourceModel.Tensor] = []
        for (key, entry) in text2.sorted(by: { $0.key < $1.key }) {
            used.insert(entry.key)
            tensors2.append(SourceModel.Tensor(key: key, file: file, entry: entry, shape: entry.shape))
        }
        used.insert(projection.key)
        tensors2.append(SourceModel.Tensor(key: "text_projection.weight", file: file, entry: projection,
                                           shape: [projection.shape[1], projection.shape[0]], transposed: true))
        components.append(SourceModel.Component(name: "text_encoder_2", config: configs["text_encoder_2"]!, tensors: tensors2,
                                                sourceKey: { k in CheckpointKeyNames.openCLIP(k).map { text2Prefix + $0 } }))
        components.append(SingleFileCheckpoint.component("unet", config: configs["unet"]!, file: file, prefix: SingleFileCheckpoint.unetPrefix,
                                                         source: unetSource, used: &used, rename: SingleFileCheckpoint.unetRename(layersPerBlock: lpb)))
        components.append(SingleFileCheckpoint.component("vae", config: configs["vae"]!, file: file, prefix: SingleFileCheckpoint.vaePrefix,
                                                         source: vaeSource, used: &used, rename: SingleFileCheckpoint.vaeRename(levels: levels)))
        var model = SourceModel(components: components, schedulerConfig: scheduler, tokenizer: tokenizer,
                                unusedKeys: keys.filter { !used.contains($0) }.sorted(), kind: "single-file SDXL checkpoint")
        model.tokenizer2 = tokenizer2
        model.pipelineMetadata.append(("pipeline.force_zeros_for_empty_prompt", .int(forceZeros ? 1 : 0)))
        model.assumptions = assumptions
        return model
    }

    static let componentNames = ["text_encoder", "text_encoder_2", "unet", "vae"]

    /// What a conversion without --config takes that shapes cannot tell, and the flags that
    /// change it (one line, in the report and `pocketsd info`).
    static func assumption(predictionType: String?) -> String {
        let prediction = predictionType == nil ? "prediction type epsilon, " : ""
        return "scheduler (EulerDiscreteScheduler, leading timesteps), \(prediction)default size 1024x1024 and heads of 64 "
            + "are SDXL base 1.0's, as diffusers assumes for single files; for SDXL-Turbo convert with --config DIR "
            + "(its diffusers folder's configs)" + (predictionType == nil ? ", for a v-prediction model with --prediction-type v_prediction" : "")
    }

    /// stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json: what diffusers'
    /// single-file loader uses for every SDXL-layout file (its "xl_base" default).
    static let baseSchedulerConfig: JSON = .object([
        ("_class_name", .string("EulerDiscreteScheduler")),
        ("beta_end", .number(0.012)), ("beta_schedule", .string("scaled_linear")), ("beta_start", .number(0.00085)),
        ("clip_sample", .bool(false)), ("interpolation_type", .string("linear")), ("num_train_timesteps", .number(1000)),
        ("prediction_type", .string("epsilon")), ("sample_max_value", .number(1)), ("set_alpha_to_one", .bool(false)),
        ("skip_prk_steps", .bool(true)), ("steps_offset", .number(1)), ("timestep_spacing", .string("leading")),
        ("trained_betas", .null), ("use_karras_sigmas", .bool(false)),
    ])

    /// Attention heads per width. Shapes do not hold the head count; SDXL's are all 64 wide:
    /// CLIP ViT-L 768 → 12 heads, OpenCLIP ViT-bigG 1280 → 20, UNet levels 320/640/1280 →
    /// 5/10/20 (SDXL's `attention_head_dim`, which counts heads). Other widths that are
    /// multiples of 64 get the same rule (distilled SDXLs keep SDXL's widths); anything else
    /// needs --config.
    static func heads(width: Int) -> Int? { width > 0 && width % 64 == 0 ? width / 64 : nil }

    /// The four component configs read off the shapes (keys within each component's prefix;
    /// `text2` already under diffusers keys). Throws one line naming every width whose heads
    /// cannot be known, and --config.
    static func inferConfigs(path: String, unet: [String: [Int]], vae: [String: [Int]], text1: [String: [Int]],
                             text2: [String: [Int]], projection: [Int],
                             heads: (Int) -> Int? = SDXLCheckpoint.heads(width:)) throws -> [String: JSON] {
        func need(_ d: [String: [Int]], _ prefix: String, _ key: String, rank: Int) throws -> [Int] {
            guard let s = d[key], s.count == rank else { throw FormatError(path, "cannot infer the model config: \(prefix)\(key) missing or misshapen") }
            return s
        }
        func count(_ d: [String: [Int]], _ prefix: String) -> Int {
            Set(d.keys.compactMap { k -> Int? in
                guard k.hasPrefix(prefix) else { return nil }
                return Int(k.dropFirst(prefix.count).prefix { $0 != "." })
            }).count
        }
        func ints(_ v: [Int]) -> JSON { .array(v.map { .number(Double($0)) }) }
        let unetPrefix = SingleFileCheckpoint.unetPrefix

        // SD's rules give the levels, channels, layers and projections; SDXL adds per-level
        // transformer depths, heads of 64, the text_time embedding and its own sizes.
        let base = try ConfigInference(path: path, unet: unet, vae: vae, text: [:])
        var u = base.unet
        let channels = u["block_out_channels"]!.array!.map { $0.int! }
        let lpb = u["layers_per_block"]!.int!
        let levels = channels.count
        var depths: [Int] = []
        for level in 0..<levels {
            let block = 1 + level * (lpb + 1)
            let n = count(unet, "input_blocks.\(block).1.transformer_blocks.")
            // diffusers writes 1 for levels without attention (SDXL's first: [1, 2, 10]).
            depths.append(max(n, 1))
            // Every layer of a level has the same depth; the up path mirrors the down path.
            for layer in 1..<lpb where count(unet, "input_blocks.\(block + layer).1.transformer_blocks.") != n {
                throw FormatError(path, "input_blocks of level \(level) differ in transformer depth; not supported")
            }
            let upLevel = levels - 1 - level
            for layer in 0...lpb where count(unet, "output_blocks.\(upLevel * (lpb + 1) + layer).1.transformer_blocks.") != n {
                throw FormatError(path, "output_blocks of level \(level) differ in transformer depth from input_blocks; not supported")
            }
        }
        let midDepth = count(unet, "middle_block.1.transformer_blocks.")
        guard midDepth == depths[levels - 1] else {
            throw FormatError(path, "middle_block has \(midDepth) transformer layers where diffusers takes the last level's \(depths[levels - 1]); not supported")
        }
        let added = try need(unet, unetPrefix, "label_emb.0.0.weight", rank: 2)
        let pooled = projection[1]
        let timeIDs = 6  // original size, crop top-left, target size
        guard added[1] > pooled, (added[1] - pooled) % timeIDs == 0 else {
            throw FormatError(path, "\(unetPrefix)label_emb.0.0.weight takes \(added[1]) inputs, which is not the pooled text width \(pooled) plus 6 equal time embeddings")
        }

        // Text encoder 1: CLIP ViT-L (quick GELU), all its layers (SDXL takes the penultimate
        // hidden states at run time, so none is dropped here).
        let token1 = try need(text1, text1Prefixes[0], "embeddings.token_embedding.weight", rank: 2)
        let width1 = token1[1]
        // Text encoder 2: OpenCLIP bigG as CLIPTextModelWithProjection (exact GELU), all layers
        // (the pooled output runs the last).
        let token2 = try need(text2, text2Prefix, "text_model.embeddings.token_embedding.weight", rank: 2)
        let width2 = token2[1]
        var unknown: [String] = []
        if heads(width1) == nil { unknown.append("text_encoder width \(width1)") }
        if heads(width2) == nil { unknown.append("text_encoder_2 width \(width2)") }
        if channels.contains(where: { heads($0) == nil }) { unknown.append("unet block_out_channels \(channels)") }
        guard unknown.isEmpty else {
            throw FormatError(path, "cannot infer the attention heads (\(unknown.joined(separator: ", ")); SDXL's heads are 64 wide); pass --config with a diffusers SDXL folder")
        }
        u = u.setting("attention_head_dim", ints(channels.map { heads($0)! }))
            .setting("transformer_layers_per_block", ints(depths))
            .setting("addition_embed_type", .string("text_time"))
            .setting("addition_embed_type_num_heads", .number(64))
            .setting("addition_time_embed_dim", .number(Double((added[1] - pooled) / timeIDs)))
            .setting("projection_class_embeddings_input_dim", .number(Double(added[1])))
            .setting("sample_size", .number(128))  // 1024 px, SDXL base's

        func textConfig(_ d: [String: [Int]], _ prefix: String, keyPrefix: String, width: Int, heads: Int, vocab: Int,
                        architecture: String, act: String, extra: [(String, JSON)]) throws -> JSON {
            let positions = try need(d, prefix, keyPrefix + "embeddings.position_embedding.weight", rank: 2)[0]
            let intermediate = try need(d, prefix, keyPrefix + "encoder.layers.0.mlp.fc1.weight", rank: 2)[0]
            let layers = count(d, keyPrefix + "encoder.layers.")
            return .object([
                ("architectures", .array([.string(architecture)])), ("hidden_act", .string(act)),
                ("hidden_size", .number(Double(width))), ("intermediate_size", .number(Double(intermediate))),
                ("layer_norm_eps", .number(1e-5)), ("max_position_embeddings", .number(Double(positions))),
                ("num_attention_heads", .number(Double(heads))), ("num_hidden_layers", .number(Double(layers))),
                ("vocab_size", .number(Double(vocab))),
            ] + extra)
        }
        // Token ids as in SDXL base's text_encoder*/config.json (eos 2 makes transformers pool
        // at the largest id, which is the end token for CLIP's vocabulary).
        let ids: [(String, JSON)] = [("bos_token_id", .number(0)), ("eos_token_id", .number(2)), ("pad_token_id", .number(1))]
        let t1 = try textConfig(text1, text1Prefixes[0], keyPrefix: "", width: width1, heads: heads(width1)!, vocab: token1[0],
                                architecture: "CLIPTextModel", act: "quick_gelu", extra: ids)
        let t2 = try textConfig(text2, text2Prefix, keyPrefix: "text_model.", width: width2, heads: heads(width2)!, vocab: token2[0],
                                architecture: "CLIPTextModelWithProjection", act: "gelu",
                                extra: ids + [("projection_dim", .number(Double(pooled)))])
        // The UNet attends to both encoders' hidden states side by side (768 + 1280 = 2048).
        let context = u["cross_attention_dim"]?.int ?? 0
        guard context == width1 + width2 else {
            throw FormatError(path, "the UNet's cross-attention width \(context) is not the two text encoders' widths \(width1) + \(width2)")
        }
        let vaeConfig = base.vae.setting("scaling_factor", .number(0.13025)).setting("force_upcast", .bool(true))
            .setting("sample_size", .number(1024))
        return ["text_encoder": t1, "text_encoder_2": t2, "unet": u, "vae": vaeConfig]
    }
}
