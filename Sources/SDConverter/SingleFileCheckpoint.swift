import SDFormat

/// Reads a single-file checkpoint in the original CompVis/LDM layout (SD 1.x and 2.x; SDXL's
/// layout goes to `SDXLCheckpoint`), renames its keys to diffusers' and infers the component
/// configs from tensor shapes, or takes them from a diffusers folder given with
/// `configFolder` (as diffusers' `from_single_file(config=…)` does).
enum SingleFileCheckpoint {
    static let unetPrefix = "model.diffusion_model."
    static let vaePrefix = "first_stage_model."
    static let textPrefixes = ["cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."]

    /// `predictionType` overrides the scheduler's (SD 2.x: v_prediction unless given).
    static func read(_ path: String, configFolder: String?, predictionType: String? = nil) throws -> SourceModel {
        let file = try SafetensorsFile(path: path)
        let keys = file.tensorKeys
        if keys.contains(where: { $0.hasPrefix("conditioner.embedders.") }) {
            return try SDXLCheckpoint.read(file, path: path, configFolder: configFolder, predictionType: predictionType)
        }
        let openCLIP = keys.contains(where: { $0.hasPrefix(OpenCLIPCheckpoint.prefix) })
        guard keys.contains(where: { $0.hasPrefix(unetPrefix) }) else {
            throw FormatError(path, "not a Stable Diffusion checkpoint (no model.diffusion_model.* tensors)")
        }
        let unetSource = subset(file, unetPrefix)
        let vaeSource = subset(file, vaePrefix)
        var textSource = subset(file, textPrefixes[0])
        var textPrefix = textPrefixes[0]
        if openCLIP {
            textPrefix = OpenCLIPCheckpoint.prefix
            textSource = try OpenCLIPCheckpoint.textTensors(subset(file, textPrefix), path: path, prefix: textPrefix)
        } else if textSource.isEmpty {
            textPrefix = textPrefixes[1]
            textSource = subset(file, textPrefix)
        }
        guard !vaeSource.isEmpty else { throw FormatError(path, "checkpoint has no VAE (first_stage_model.*)") }
        guard !textSource.isEmpty else { throw FormatError(path, "checkpoint has no text encoder (cond_stage_model.transformer.* or cond_stage_model.model.*)") }

        var configs: [String: JSON] = [:]
        var assumptions: [String] = []
        // SD 2.x: SD 2.1's DDIM scheduler, v-prediction unless told otherwise (diffusers' rule:
        // shapes cannot tell), and the OpenCLIP tokenizer's padding with "!".
        let sd2Prediction = predictionType ?? "v_prediction"
        var scheduler = openCLIP ? OpenCLIPCheckpoint.schedulerConfig(predictionType: sd2Prediction) : defaultSchedulerConfig
        var tokenizer = TokenizerData.bundled(padToken: openCLIP ? "!" : nil)
        if let configFolder {
            for name in pipelineComponents {
                configs[name] = try FileSystem.readJSON(FileSystem.join(configFolder, "\(name)/config.json"))
            }
            let schedulerPath = FileSystem.join(configFolder, "scheduler/scheduler_config.json")
            if FileSystem.isFile(schedulerPath) { scheduler = try FileSystem.readJSON(schedulerPath) }
            let tokenizerDir = FileSystem.join(configFolder, "tokenizer")
            if TokenizerData.isTokenizerFolder(tokenizerDir) { tokenizer = try TokenizerData.read(folder: tokenizerDir) }
        } else {
            let inferred = try ConfigInference(path: path, unet: unetSource.mapValues(\.shape),
                                               vae: vaeSource.mapValues(\.shape), text: openCLIP ? [:] : textSource.mapValues(\.shape))
            configs = ["unet": inferred.unet, "vae": inferred.vae, "text_encoder": inferred.text]
            if openCLIP {
                configs["text_encoder"] = try OpenCLIPCheckpoint.inferTextConfig(textSource.mapValues(\.shape), path: path)
                // 768-px v-prediction models (2.0-v, 2.1), 512-px epsilon ones (2.x base).
                configs["unet"] = configs["unet"]!.setting("sample_size", .number(sd2Prediction == "v_prediction" ? 96 : 64))
                    .setting("upcast_attention", .bool(sd2Prediction == "v_prediction"))
                if predictionType == nil {
                    assumptions.append("prediction type v_prediction and default size 768x768 (SD 2.1's), as diffusers assumes "
                                       + "for SD 2.x single files; for the 512-px 2.x base models convert with --prediction-type epsilon")
                }
            }
        }
        guard let lpb = configs["unet"]!["layers_per_block"]?.int, lpb >= 1,
              let levels = configs["vae"]!["block_out_channels"]?.array?.count, levels >= 1 else {
            throw FormatError(configFolder ?? path, "config lacks layers_per_block or block_out_channels")
        }

        var used = Set<String>()
        var components: [SourceModel.Component] = []
        if openCLIP {
            // Keys are already diffusers'; mark the OpenCLIP sources used by their entry key.
            var tensors: [SourceModel.Tensor] = []
            for (key, entry) in textSource.sorted(by: { $0.key < $1.key }) {
                used.insert(entry.key)
                tensors.append(SourceModel.Tensor(key: key, file: file, entry: entry, shape: entry.shape))
            }
            components.append(SourceModel.Component(name: "text_encoder", config: configs["text_encoder"]!, tensors: tensors,
                                                    sourceKey: { k in CheckpointKeyNames.openCLIP(k).map { textPrefix + $0 } }))
        } else {
            components.append(component("text_encoder", config: configs["text_encoder"]!, file: file, prefix: textPrefix,
                                        source: textSource, used: &used, rename: textRename))
        }
        components.append(component("unet", config: configs["unet"]!, file: file, prefix: unetPrefix, source: unetSource,
                                    used: &used, rename: unetRename(layersPerBlock: lpb)))
        components.append(component("vae", config: configs["vae"]!, file: file, prefix: vaePrefix, source: vaeSource,
                                    used: &used, rename: vaeRename(levels: levels)))
        let unused = keys.filter { !used.contains($0) }.sorted()
        var model = SourceModel(components: components, schedulerConfig: scheduler, tokenizer: tokenizer,
                                unusedKeys: unused, kind: "single-file checkpoint")
        model.assumptions = assumptions
        return model
    }

    /// The file's tensors under `prefix`, keyed by the rest of their name.
    static func subset(_ file: SafetensorsFile, _ prefix: String) -> [String: SafetensorsFile.Entry] {
        var d: [String: SafetensorsFile.Entry] = [:]
        for e in file.entries where e.key.hasPrefix(prefix) { d[String(e.key.dropFirst(prefix.count))] = e }
        return d
    }

    /// One component from `source` (keys within `prefix`), renamed to diffusers' keys; a nil
    /// name drops the tensor (listed unused). Marks what it takes in `used` (full file keys).
    static func component(_ name: String, config: JSON, file: SafetensorsFile, prefix: String,
                          source: [String: SafetensorsFile.Entry], used: inout Set<String>,
                          rename: (String) -> String?) -> SourceModel.Component {
        var c = renamed(name, config: config, file: file, prefix: prefix, source: source, used: &used, rename: rename)
        c.sourceKey = sourceKey(name, config: config, prefix: prefix)
        return c
    }

    /// The inverse renames of `component`: a diffusers key's full name in the checkpoint.
    static func sourceKey(_ name: String, config: JSON, prefix: String) -> ((String) -> String?)? {
        switch name {
        case "unet":
            guard let lpb = config["layers_per_block"]?.int, let up = config["up_block_types"]?.array else { return nil }
            let attention = up.map { $0.string?.hasPrefix("CrossAttn") ?? false }
            return { key in CheckpointKeyNames.unet(key, layersPerBlock: lpb, upAttention: attention).map { prefix + $0 } }
        case "vae":
            guard let levels = config["block_out_channels"]?.array?.count else { return nil }
            return { key in prefix + CheckpointKeyNames.vae(key, levels: levels) }
        default:
            // CLIP in transformers' layout: the prefix may already end in "text_model.".
            return { key in
                prefix.hasSuffix("text_model.") && key.hasPrefix("text_model.") ? prefix + key.dropFirst("text_model.".count) : prefix + key
            }
        }
    }

    static func renamed(_ name: String, config: JSON, file: SafetensorsFile, prefix: String,
                        source: [String: SafetensorsFile.Entry], used: inout Set<String>,
                        rename: (String) -> String?) -> SourceModel.Component {
        var tensors: [SourceModel.Tensor] = []
        for (key, entry) in source.sorted(by: { $0.key < $1.key }) {
            guard let newKey = rename(key) else { continue }
            var shape = entry.shape
            // LDM's VAE attention uses 1×1 convolutions where diffusers uses linear layers.
            if name == "vae", newKey.contains("mid_block.attentions."), shape.count == 4, shape[2] == 1, shape[3] == 1 {
                shape = [shape[0], shape[1]]
            }
            used.insert(prefix + key)
            tensors.append(SourceModel.Tensor(key: newKey, file: file, entry: entry, shape: shape))
        }
        return SourceModel.Component(name: name, config: config, tensors: tensors)
    }

    /// CLIP in transformers' layout: keys already diffusers', `text_model.` restored when the
    /// prefix took it; position_ids (an index buffer) dropped.
    static func textRename(_ key: String) -> String? {
        key.hasSuffix("position_ids") ? nil : (key.hasPrefix("text_model.") ? key : "text_model." + key)
    }

    static func unetRename(layersPerBlock lpb: Int) -> (String) -> String? {
        let rules = unetKeyRules(layersPerBlock: lpb)
        return { key in
            guard let k = rules.apply(key) else { return nil }
            return renameInside(k, block: "resnets", unetResnetRenames)
        }
    }

    static func vaeRename(levels: Int) -> (String) -> String? {
        let rules = vaeKeyRules(levels: levels)
        return { key in
            let k = rules.apply(key) ?? key
            return renameInside(renameInside(k, block: "resnets", vaeResnetRenames), block: "attentions", vaeAttentionRenames)
        }
    }
}

/// Component configs of an SD 1.x checkpoint, read off its tensor shapes (LDM keys).
struct ConfigInference {
    var unet: JSON
    var vae: JSON
    var text: JSON

    init(path: String, unet: [String: [Int]], vae: [String: [Int]], text: [String: [Int]]) throws {
        func need(_ d: [String: [Int]], _ key: String, rank: Int) throws -> [Int] {
            guard let s = d[key], s.count == rank else { throw FormatError(path, "cannot infer the model config: \(key) missing or misshapen") }
            return s
        }
        func indices(_ d: [String: [Int]], _ prefix: String) -> [Int] {
            Set(d.keys.compactMap { k -> Int? in
                guard k.hasPrefix(prefix) else { return nil }
                return Int(k.dropFirst(prefix.count).prefix { $0 != "." })
            }).sorted()
        }
        func jsonInts(_ v: [Int]) -> JSON { .array(v.map { .number(Double($0)) }) }

        // UNet: LDM numbers input blocks flatly: conv_in, then per level `layers` blocks and
        // a downsampler (none after the last level).
        let inputBlocks = indices(unet, "input_blocks.")
        let downsamplers = inputBlocks.filter { unet["input_blocks.\($0).0.op.weight"] != nil }
        let levels = downsamplers.count + 1
        guard let lastInput = inputBlocks.last, (lastInput + 1) % levels == 0 else {
            throw FormatError(path, "cannot infer the UNet layout from input_blocks")
        }
        let lpb = (lastInput + 1) / levels - 1
        guard lpb >= 1 else { throw FormatError(path, "cannot infer the UNet layout from input_blocks") }
        var channels: [Int] = []
        var down: [JSON] = [], up: [JSON] = []
        var hasAttention: [Bool] = []
        for level in 0..<levels {
            let first = 1 + level * (lpb + 1)
            channels.append(try need(unet, "input_blocks.\(first).0.out_layers.3.weight", rank: 4)[0])
            hasAttention.append(unet["input_blocks.\(first).1.proj_in.weight"] != nil)
            down.append(.string(hasAttention[level] ? "CrossAttnDownBlock2D" : "DownBlock2D"))
        }
        for level in (0..<levels).reversed() { up.append(.string(hasAttention[level] ? "CrossAttnUpBlock2D" : "UpBlock2D")) }
        guard let attentionLevel = hasAttention.firstIndex(of: true) else { throw FormatError(path, "UNet has no attention blocks") }
        let probe = "input_blocks.\(1 + attentionLevel * (lpb + 1)).1."
        let contextDim = try need(unet, probe + "transformer_blocks.0.attn2.to_k.weight", rank: 2)[1]
        let linearProjection = unet[probe + "proj_in.weight"]?.count == 2
        let depth = indices(unet, probe + "transformer_blocks.").count
        // SD 2.x fixes the head size at 64; SD 1.x fixes the head count at 8.
        let heads: JSON = contextDim == 1024 ? jsonInts(channels.map { $0 / 64 }) : .number(8)
        let inChannels = try need(unet, "input_blocks.0.0.weight", rank: 4)[1]
        let outChannels = try need(unet, "out.2.weight", rank: 4)[0]
        self.unet = .object([
            ("_class_name", .string("UNet2DConditionModel")),
            ("act_fn", .string("silu")), ("attention_head_dim", heads),
            ("block_out_channels", jsonInts(channels)), ("center_input_sample", .bool(false)),
            ("cross_attention_dim", .number(Double(contextDim))),
            ("down_block_types", .array(down)), ("downsample_padding", .number(1)),
            ("flip_sin_to_cos", .bool(true)), ("freq_shift", .number(0)),
            ("in_channels", .number(Double(inChannels))), ("layers_per_block", .number(Double(lpb))),
            ("mid_block_scale_factor", .number(1)), ("norm_eps", .number(1e-5)), ("norm_num_groups", .number(32)),
            ("out_channels", .number(Double(outChannels))), ("sample_size", .number(contextDim == 1024 ? 96 : 64)),
            ("transformer_layers_per_block", .number(Double(max(depth, 1)))),
            ("up_block_types", .array(up)), ("use_linear_projection", .bool(linearProjection)),
        ])

        // VAE: encoder levels and their widths.
        let vaeLevels = indices(vae, "encoder.down.")
        guard !vaeLevels.isEmpty else { throw FormatError(path, "cannot infer the VAE layout") }
        let vaeChannels = try vaeLevels.map { try need(vae, "encoder.down.\($0).block.0.conv1.weight", rank: 4)[0] }
        let vaeLayers = indices(vae, "encoder.down.0.block.").count
        let latent = try need(vae, "decoder.conv_in.weight", rank: 4)[1]
        let imageChannels = try need(vae, "decoder.conv_out.weight", rank: 4)[0]
        self.vae = .object([
            ("_class_name", .string("AutoencoderKL")), ("act_fn", .string("silu")),
            ("block_out_channels", jsonInts(vaeChannels)),
            ("down_block_types", .array(vaeChannels.map { _ in .string("DownEncoderBlock2D") })),
            ("in_channels", .number(Double(imageChannels))), ("latent_channels", .number(Double(latent))),
            ("layers_per_block", .number(Double(vaeLayers))), ("norm_num_groups", .number(32)),
            ("out_channels", .number(Double(imageChannels))), ("sample_size", .number(512)),
            ("scaling_factor", .number(0.18215)),
            ("up_block_types", .array(vaeChannels.map { _ in .string("UpDecoderBlock2D") })),
        ])

        // Text encoder (CLIP ViT-L/14 in SD 1.x): heads of 64. (SD 2.x: OpenCLIPCheckpoint.)
        guard !text.isEmpty else {
            self.text = .null
            return
        }
        let tokenEmbedding = try need(text, "embeddings.token_embedding.weight", rank: 2)
        let positions = try need(text, "embeddings.position_embedding.weight", rank: 2)[0]
        let layers = indices(text, "encoder.layers.").count
        let intermediate = try need(text, "encoder.layers.0.mlp.fc1.weight", rank: 2)[0]
        let hidden = tokenEmbedding[1]
        guard hidden % 64 == 0 else {
            throw FormatError(path, "cannot infer the text encoder's head count (hidden size \(hidden)); pass --config with a diffusers folder")
        }
        self.text = .object([
            ("architectures", .array([.string("CLIPTextModel")])), ("hidden_act", .string("quick_gelu")),
            ("hidden_size", .number(Double(hidden))), ("intermediate_size", .number(Double(intermediate))),
            ("layer_norm_eps", .number(1e-5)), ("max_position_embeddings", .number(Double(positions))),
            ("num_attention_heads", .number(Double(hidden / 64))), ("num_hidden_layers", .number(Double(layers))),
            ("vocab_size", .number(Double(tokenEmbedding[0]))),
            ("bos_token_id", .number(49406)), ("eos_token_id", .number(49407)), ("pad_token_id", .number(1)),
        ])
    }
}
