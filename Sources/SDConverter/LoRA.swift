import SDFormat

/// One `--lora FILE[:SCALE]` argument: a LoRA safetensors file and the strength to merge it with.
public struct LoRASpec: Sendable, Equatable {
    /// The LoRA safetensors file.
    public var path: String
    /// The strength the LoRA's deltas are multiplied by (1 by default).
    public var scale: Float

    /// A LoRA at `path` merged with strength `scale`.
    public init(path: String, scale: Float = 1) {
        self.path = path
        self.scale = scale
    }

    /// `FILE` or `FILE:SCALE`; a colon whose tail is not a number belongs to the path.
    public init?(argument: String) {
        if let colon = argument.lastIndex(of: ":"), let s = Float(argument[argument.index(after: colon)...]) {
            guard s.isFinite, colon != argument.startIndex else { return nil }
            self.init(path: String(argument[..<colon]), scale: s)
        } else {
            guard !argument.isEmpty else { return nil }
            self.init(path: argument)
        }
    }

    /// The file name and scale as stored in the model file's `general.loras`.
    var label: String { "\(path.split(separator: "/").last.map(String.init) ?? path):\(scale)" }
}

/// What one LoRA file contributed to a conversion.
public struct LoRAReport: Sendable {
    /// The LoRA file.
    public var path: String
    /// The strength it was merged with.
    public var scale: Float
    /// Base tensors the file changed.
    public var mergedTensors: Int
    /// LoRA keys that match no tensor of the model (listed, not fatal unless nothing matched).
    public var unmatchedKeys: [String]
}

/// A low-rank update of one base tensor, `W += factor · up · down`, with `up` [rows, rank] and
/// `down` [rank, cols] flattened over the kernel axes (kohya's 3×3 conv LoRA has a 3×3 `down`
/// and a 1×1 `up`). The factor is SCALE · alpha / rank, as diffusers' `fuse_lora(lora_scale=SCALE)`.
struct LoRAUpdate {
    let file: SafetensorsFile
    let up: SafetensorsFile.Entry
    let down: SafetensorsFile.Entry
    let rank: Int
    let factor: Float
}

/// The LoRA updates of a conversion, keyed `component.key` like the model file, read from the
/// mapped LoRA files one tensor at a time when the base tensor is written.
struct LoRAPlan {
    /// A base tensor as the matching sees it.
    typealias ModelTensor = (component: String, key: String, shape: [Int])

    var updates: [String: [LoRAUpdate]] = [:]
    var reports: [LoRAReport] = []
    var isEmpty: Bool { updates.isEmpty }

    /// The key suffixes of the formats understood: kohya / AUTOMATIC1111, PEFT (diffusers ≥ 0.22),
    /// and diffusers' older attention-processor names.
    static let downSuffixes = [".lora_down.weight", ".lora_A.weight", ".lora_A.default.weight", ".lora.down.weight", ".lora_linear_layer.down.weight"]
    static let upSuffixes = [".lora_up.weight", ".lora_B.weight", ".lora_B.default.weight", ".lora.up.weight", ".lora_linear_layer.up.weight"]

    init() {}

    /// The plan for a model given by its tensors' keys and shapes, all the matching needs
    /// (`init(specs:model:)`, in SourceModel.swift, passes a source model's; the fuzz target
    /// a fixed small key set, so this file compiles without the converter). `originalUNetKey`
    /// gives a UNet key's name in Stability's original layout (CheckpointKeyNames.unet).
    init(specs: [LoRASpec], tensors: [ModelTensor], originalUNetKey: (String) -> String? = { _ in nil }) throws {
        guard !specs.isEmpty else { return }
        let targets = Self.targetNames(tensors, originalUNetKey: originalUNetKey)
        for spec in specs {
            let file = try SafetensorsFile(path: spec.path)
            let metadataAlpha = Self.peftAlphas(file)
            var downs: [String: SafetensorsFile.Entry] = [:], ups: [String: SafetensorsFile.Entry] = [:]
            var alphas: [String: SafetensorsFile.Entry] = [:]
            var unmatched: [String] = []
            for e in file.entries {
                if let (module, _) = Self.split(e.key, Self.downSuffixes) { downs[module] = e }
                else if let (module, _) = Self.split(e.key, Self.upSuffixes) { ups[module] = e }
                else if e.key.hasSuffix(".alpha") { alphas[String(e.key.dropLast(".alpha".count))] = e }
                else { unmatched.append(e.key) }
            }
            var merged = 0
            for (rawModule, down) in downs.sorted(by: { $0.key < $1.key }) {
                let module = rawModule.hasPrefix("base_model.model.") ? "unet." + rawModule.dropFirst("base_model.model.".count) : rawModule
                guard let up = ups.removeValue(forKey: rawModule) else {
                    throw FormatError(spec.path, "\(rawModule) has a down (A) matrix but no up (B) matrix (truncated or damaged LoRA?)")
                }
                guard let target = targets[module] else {
                    unmatched.append(down.key)
                    unmatched.append(up.key)
                    if alphas.removeValue(forKey: rawModule) != nil { unmatched.append(rawModule + ".alpha") }
                    continue
                }
                for e in [down, up] where !e.dtype.isFloat {
                    throw FormatError(spec.path, "tensor \(e.key) has dtype \(e.dtype.rawValue); LoRA weights must be F32, F16 or BF16")
                }
                let shape = target.shape
                let rank = down.shape.first ?? 0
                let cols = shape.dropFirst().reduce(1, *)
                // down [rank, in, kh, kw] must cover the weight's columns exactly, up [out, rank, 1, 1] its rows.
                let fits = rank > 0 && down.shape.count == shape.count && Array(down.shape.dropFirst()) == Array(shape.dropFirst())
                    && up.shape.count == shape.count && up.shape[0] == shape[0] && up.shape[1] == rank
                    && up.shape.dropFirst(2).allSatisfy { $0 == 1 } && cols > 0
                guard fits else {
                    throw FormatError(spec.path, "\(rawModule): LoRA shapes down \(down.shape), up \(up.shape) do not fit \(target.component).\(target.key) \(shape) (a LoRA for another architecture?)")
                }
                var alpha = Float(rank)
                if let a = alphas.removeValue(forKey: rawModule) {
                    guard a.dtype.isFloat, a.shape.reduce(1, *) == 1 else { throw FormatError(spec.path, "\(a.key) is not one number") }
                    var v: Float = 0
                    try SourceFloats.load(a.dtype, file.file.base + a.range.lowerBound, from: 0, count: 1, into: &v, key: a.key, path: spec.path)
                    alpha = v
                } else if let a = metadataAlpha(target.component, target.key) {
                    alpha = a
                }
                let factor = spec.scale * alpha / Float(rank)
                updates["\(target.component).\(target.key)", default: []]
                    .append(LoRAUpdate(file: file, up: up, down: down, rank: rank, factor: factor))
                merged += 1
            }
            if let module = ups.keys.sorted().first {
                throw FormatError(spec.path, "\(module) has an up (B) matrix but no down (A) matrix (truncated or damaged LoRA?)")
            }
            unmatched += alphas.keys.map { $0 + ".alpha" }
            guard merged > 0 else {
                throw FormatError(spec.path, "no LoRA weight matches a tensor of this model (\(file.entries.count) keys, e.g. \(file.entries.first?.key ?? "none"); a LoRA for another architecture?)")
            }
            reports.append(LoRAReport(path: spec.path, scale: spec.scale, mergedTensors: merged, unmatchedKeys: unmatched.sorted()))
        }
    }

    /// Every name a LoRA may give a base weight, for each (component, key) of the model:
    /// diffusers' (`unet.`, `text_encoder.`, `text_encoder_2.` + module) and kohya's (`_` for `.`).
    /// kohya writes `lora_unet_` and `lora_te_` for SD 1.x; for SDXL `lora_te1_` and `lora_te2_`,
    /// and UNet names in the original layout, as it trains SDXL on Stability's own UNet
    /// (`lora_unet_input_blocks_4_1_…`; diffusers-style names are read too). Those are offered
    /// for SDXL models only, so that an SDXL LoRA on SD 1.x fails as a whole instead of merging
    /// its first text encoder (the same CLIP) and leaving the rest.
    static func targetNames(_ tensors: [ModelTensor], originalUNetKey: (String) -> String?) -> [String: ModelTensor] {
        let isSDXL = tensors.contains { $0.component == "text_encoder_2" }
        let kohyaPrefixes = isSDXL ? ["unet": ["lora_unet_"], "text_encoder": ["lora_te1_", "lora_te_"], "text_encoder_2": ["lora_te2_"]]
                                   : ["unet": ["lora_unet_"], "text_encoder": ["lora_te_"]]
        var targets: [String: ModelTensor] = [:]
        for t in tensors where t.key.hasSuffix(".weight") && t.shape.count >= 2 {
            guard let prefixes = kohyaPrefixes[t.component] else { continue }
            let module = String(t.key.dropLast(".weight".count))
            var modules = [module]
            // transformers ≥ 5.6 names the text encoders' modules without "text_model.".
            if t.component.hasPrefix("text_encoder"), module.hasPrefix("text_model.") {
                modules.append(String(module.dropFirst("text_model.".count)))
            }
            var kohyaModules = modules
            if isSDXL, t.component == "unet", let original = originalUNetKey(t.key), original.hasSuffix(".weight") {
                kohyaModules.append(String(original.dropLast(".weight".count)))
            }
            let names = modules.map { t.component + "." + $0 } + prefixes.flatMap { p in kohyaModules.map { p + $0.replacingDots() } }
            for n in names { targets[n] = t }
        }
        return targets
    }

    static func split(_ key: String, _ suffixes: [String]) -> (String, String)? {
        for s in suffixes where key.hasSuffix(s) { return (String(key.dropLast(s.count)), s) }
        return nil
    }

    /// PEFT's `lora_alpha` (and per-module `alpha_pattern`) from the `lora_adapter_metadata` JSON
    /// that diffusers' `save_lora_weights(..., unet_lora_adapter_metadata=...)` writes into the
    /// safetensors header, keyed "unet.lora_alpha", "text_encoder.alpha_pattern", …; without it
    /// alpha = rank, as diffusers assumes.
    static func peftAlphas(_ file: SafetensorsFile) -> (_ component: String, _ key: String) -> Float? {
        guard let text = file.metadata.first(where: { $0.0 == "lora_adapter_metadata" })?.1,
              let json = try? JSON(parsing: text) else { return { _, _ in nil } }
        return { component, key in
            let module = String(key.dropLast(".weight".count))
            let shortModule = module.hasPrefix("text_model.") ? String(module.dropFirst("text_model.".count)) : module
            if let patterns = json["\(component).alpha_pattern"]?.object {
                for (pattern, value) in patterns where [module, shortModule].contains(where: { $0 == pattern || $0.hasSuffix("." + pattern) }) {
                    if let v = value.double { return Float(v) }
                }
            }
            return json["\(component).lora_alpha"]?.double.map(Float.init)
        }
    }

    /// Drops the pages of `key`'s LoRA matrices once its weight is written, so memory stays flat.
    func release(_ key: String) {
        for u in updates[key] ?? [] {
            u.file.file.release(u.up.range)
            u.file.file.release(u.down.range)
        }
    }

    /// Adds the updates of `key` to rows [firstRow, firstRow + rowCount) of a chunk of its weight.
    func apply(to key: String, firstRow: Int, rowCount: Int, cols: Int, chunk: UnsafeMutablePointer<Float>) throws {
        guard let list = updates[key] else { return }
        for u in list {
            var up = [Float](repeating: 0, count: rowCount * u.rank)
            var down = [Float](repeating: 0, count: u.rank * cols)
            try up.withUnsafeMutableBufferPointer { p in
                try SourceFloats.load(u.up.dtype, u.file.file.base + u.up.range.lowerBound, from: firstRow * u.rank,
                                         count: rowCount * u.rank, into: p.baseAddress!, key: u.up.key, path: u.file.sourceName)
            }
            try down.withUnsafeMutableBufferPointer { p in
                try SourceFloats.load(u.down.dtype, u.file.file.base + u.down.range.lowerBound, from: 0,
                                         count: u.rank * cols, into: p.baseAddress!, key: u.down.key, path: u.file.sourceName)
            }
            down.withUnsafeBufferPointer { d in
                for r in 0..<rowCount {
                    let row = chunk + r * cols
                    for j in 0..<u.rank {
                        let w = u.factor * up[r * u.rank + j]
                        let dj = d.baseAddress! + j * cols
                        for k in 0..<cols { row[k] += w * dj[k] }
                    }
                }
            }
        }
        for i in 0..<rowCount * cols where !chunk[i].isFinite {
            throw FormatError(list[0].file.sourceName, "merging the LoRA into \(key) gives NaN or infinity")
        }
    }
}

extension String {
    /// kohya's module names: the diffusers path with `_` for `.`.
    func replacingDots() -> String { String(map { $0 == "." ? "_" : $0 }) }
}
