import SDFormat

/// Reads a diffusers pipeline folder: model_index.json, and per component config.json
/// plus safetensors weights (plain, `.fp16` variant, or sharded with an index).
enum DiffusersFolder {
    static func read(_ root: String) throws -> SourceModel {
        let indexPath = FileSystem.join(root, "model_index.json")
        guard FileSystem.isFile(indexPath) else {
            throw FormatError(root, "not a diffusers folder (no model_index.json)")
        }
        let index = try FileSystem.readJSON(indexPath)
        if let cls = index["_class_name"]?.string, !supportedPipelineClasses.contains(cls) {
            throw FormatError(indexPath, "pipeline class \(cls) is not supported (\(supportedPipelineClasses.joined(separator: ", ")))")
        }
        var components: [SourceModel.Component] = []
        for name in componentNames(index: index) {
            let dir = FileSystem.join(root, name)
            guard FileSystem.isDirectory(dir) else { throw FormatError(root, "component folder \(name)/ is missing") }
            let configPath = FileSystem.join(dir, "config.json")
            guard FileSystem.isFile(configPath) else { throw FormatError(dir, "config.json is missing") }
            let config = try FileSystem.readJSON(configPath)
            var tensors: [SourceModel.Tensor] = []
            for file in try weightFiles(dir, base: name.hasPrefix("text_encoder") ? "model" : "diffusion_pytorch_model") {
                let st = try SafetensorsFile(path: file)
                for e in st.entries {
                    tensors.append(SourceModel.Tensor(key: canonicalKey(e.key, component: name), file: st, entry: e, shape: e.shape))
                }
            }
            components.append(SourceModel.Component(name: name, config: config, tensors: tensors))
        }
        let schedulerPath = FileSystem.join(root, "scheduler/scheduler_config.json")
        let scheduler = FileSystem.isFile(schedulerPath) ? try FileSystem.readJSON(schedulerPath) : defaultSchedulerConfig
        let tokenizerDir = FileSystem.join(root, "tokenizer")
        // No tokenizer/ at all: the bundled CLIP vocabulary. A tokenizer/ without its
        // vocabulary is a broken download, not a reason to guess (SD 2.x pads with "!").
        let tokenizer: TokenizerData
        if TokenizerData.isTokenizerFolder(tokenizerDir) {
            tokenizer = try TokenizerData.read(folder: tokenizerDir)
        } else if FileSystem.isDirectory(tokenizerDir) {
            throw FormatError(tokenizerDir, "has neither vocab.json nor tokenizer.json (an incomplete download?)")
        } else {
            tokenizer = TokenizerData.bundled()
        }
        var model = SourceModel(components: components, schedulerConfig: scheduler, tokenizer: tokenizer,
                                unusedKeys: [], kind: "diffusers folder")
        try readSDXLParts(root, index: index, into: &model)
        return model
    }

    /// transformers ≥ 5.6 saves CLIPTextModel without the `text_model.` prefix that every
    /// published SD checkpoint has; the model file always uses the prefixed keys.
    static func canonicalKey(_ key: String, component: String) -> String {
        component.hasPrefix("text_encoder") && !key.hasPrefix("text_model.") && key != "text_projection.weight"
            ? "text_model." + key : key
    }

    /// The safetensors files of a component, preferring full precision over the fp16
    /// variant when both are present (the converter rounds anyway).
    static func weightFiles(_ dir: String, base: String) throws -> [String] {
        for variant in ["", ".fp16"] {
            let single = FileSystem.join(dir, "\(base)\(variant).safetensors")
            if FileSystem.isFile(single) { return [single] }
            let indexPath = FileSystem.join(dir, "\(base).safetensors\(variant).index.json")
            let altIndexPath = FileSystem.join(dir, "\(base)\(variant).safetensors.index.json")
            // diffusers ≥ 0.28 save_pretrained(variant=…) puts the variant before ".json".
            let currentIndexPath = FileSystem.join(dir, "\(base).safetensors.index\(variant).json")
            for path in [indexPath, altIndexPath, currentIndexPath] where FileSystem.isFile(path) {
                guard let map = try FileSystem.readJSON(path)["weight_map"]?.object else {
                    throw FormatError(path, "no weight_map in the shard index")
                }
                var files: [String] = []
                for (_, file) in map {
                    guard let name = file.string, !name.contains("/") else { throw FormatError(path, "bad shard name") }
                    let full = FileSystem.join(dir, name)
                    if !files.contains(full) { files.append(full) }
                }
                return files
            }
        }
        for legacy in ["\(base).bin", "pytorch_model.bin", "\(base).fp16.bin"] where FileSystem.isFile(FileSystem.join(dir, legacy)) {
            throw FormatError(FileSystem.join(dir, legacy), "PyTorch pickle weights are not supported; use the .safetensors files")
        }
        throw FormatError(dir, "no \(base).safetensors weights found")
    }
}

/// Stable Diffusion 1.x's scheduler config (PNDM), used when the input carries none.
let defaultSchedulerConfig: JSON = .object([
    ("_class_name", .string("PNDMScheduler")),
    ("beta_end", .number(0.012)),
    ("beta_schedule", .string("scaled_linear")),
    ("beta_start", .number(0.00085)),
    ("clip_sample", .bool(false)),
    ("num_train_timesteps", .number(1000)),
    ("prediction_type", .string("epsilon")),
    ("set_alpha_to_one", .bool(false)),
    ("skip_prk_steps", .bool(true)),
    ("steps_offset", .number(1)),
    ("timestep_spacing", .string("leading")),
    ("trained_betas", .null),
])
