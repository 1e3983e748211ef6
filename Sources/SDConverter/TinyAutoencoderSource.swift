import SDFormat
import SDModels

/// Reads `convert --taesd DIR|FILE` as the model file's "taesd" component: a diffusers
/// AutoencoderTiny folder (config.json + diffusion_pytorch_model.safetensors), or the original
/// madebyollin/taesd files (`taesd_decoder.safetensors`, optionally `taesd_encoder.safetensors`
/// beside it, or a folder holding them), whose Sequential indices are renamed to diffusers'
/// (the original decoder counts its parameterless clamp as layer 0; diffusers' does not).
enum TinyAutoencoderSource {
    static let component = "taesd"

    static func read(_ path: String, latentChannels expectedLatents: Int, upsamplingFactor expectedFactor: Int) throws -> SourceModel.Component {
        guard FileSystem.exists(path) else { throw FormatError(path, "no such file or folder") }
        var config: JSON
        var tensors: [SourceModel.Tensor] = []
        let configPath = FileSystem.join(path, "config.json")
        if FileSystem.isDirectory(path) && FileSystem.isFile(configPath) {
            config = try FileSystem.readJSON(configPath)
            for file in try DiffusersFolder.weightFiles(path, base: "diffusion_pytorch_model") {
                let st = try SafetensorsFile(path: file)
                tensors += st.entries.map { SourceModel.Tensor(key: $0.key, file: st, entry: $0, shape: $0.shape) }
            }
        } else {
            var decoderPath = path, encoderPath: String?
            if FileSystem.isDirectory(path) {
                decoderPath = FileSystem.join(path, "taesd_decoder.safetensors")
                guard FileSystem.isFile(decoderPath) else {
                    throw FormatError(path, "not a TAESD folder (no config.json, no taesd_decoder.safetensors)")
                }
            }
            let name = decoderPath.split(separator: "/").last.map(String.init) ?? decoderPath
            if name.contains("decoder") {
                let dir = String(decoderPath.dropLast(name.count))
                let sibling = dir + name.replacing("decoder", with: "encoder")
                if FileSystem.isFile(sibling) { encoderPath = sibling }
            }
            let decoder = try SafetensorsFile(path: decoderPath)
            guard decoder.entry("0.weight") == nil, let first = decoder.entry("1.weight"), first.shape.count == 4 else {
                throw FormatError(decoderPath, "not a TAESD decoder (expected the original taesd_decoder keys 1.weight, 3.conv.0.weight, …)")
            }
            tensors += try renamed(decoder, prefix: "decoder.layers.", shift: -1)
            if let encoderPath { tensors += try renamed(SafetensorsFile(path: encoderPath), prefix: "encoder.layers.", shift: 0) }
            config = try inferredConfig(tensors, latentChannels: first.shape[1], path: decoderPath)
        }
        let where_ = tensors.first?.file.sourceName ?? path
        let parsed: AutoencoderTinyConfig
        do { parsed = try AutoencoderTinyConfig(json: config) } catch { throw FormatError(path, "\(error)") }
        guard parsed.upsamplingFactor == expectedFactor else {
            throw FormatError(path, "TAESD up-samples \(parsed.upsamplingFactor)× but the VAE \(expectedFactor)× (a TAESD for another model?)")
        }
        guard parsed.latentChannels == expectedLatents else {
            throw FormatError(path, "TAESD has \(parsed.latentChannels) latent channels but the UNet has \(expectedLatents) (a TAESD for another model?)")
        }
        // Shape check by building the runtime model over the source's shapes.
        let floats = tensors.filter { $0.entry.dtype.isFloat }
        guard !floats.isEmpty else { throw FormatError(where_, "TAESD has no weights") }
        let weights = ShapeOnlyWeights(floats, name: where_)
        do {
            _ = try AutoencoderTiny(config: parsed, weights: weights)
        } catch let error as FormatError {
            throw FormatError(error.path, "TAESD: " + error.message)
        } catch {
            throw FormatError(where_, "TAESD: \(error)")
        }
        return SourceModel.Component(name: component, config: config,
                                     tensors: floats.filter { weights.requested.contains($0.key) })
    }

    /// The original files carry no config: read the levels off the Sequential's indices. A
    /// block has `conv.0.weight`; a bare `weight` is a level's convolution; in the decoder an
    /// absent index between them is the up-sampling that ends a level.
    static func inferredConfig(_ tensors: [SourceModel.Tensor], latentChannels: Int, path: String) throws -> JSON {
        func layout(_ prefix: String) -> [Int: String] {
            var kinds: [Int: String] = [:]
            for t in tensors where t.key.hasPrefix(prefix) {
                let rest = t.key.dropFirst(prefix.count).split(separator: ".", maxSplits: 1)
                guard rest.count == 2, let n = Int(rest[0]) else { continue }
                if rest[1].hasPrefix("conv.") || rest[1].hasPrefix("skip.") { kinds[n] = "block" } else if kinds[n] == nil { kinds[n] = "conv" }
            }
            return kinds
        }
        let decoder = layout("decoder.layers.")
        var decoderBlocks: [Int] = [], count = 0
        var channels = 64
        if let w = tensors.first(where: { $0.key == "decoder.layers.0.weight" }) { channels = w.shape[0] }
        // 0: conv, 1: ReLU, then per level: blocks, (up-sampling), conv.
        for n in 2...(decoder.keys.max() ?? 2) {
            switch decoder[n] {
            case "block": count += 1
            case "conv": decoderBlocks.append(count); count = 0
            default: break
            }
        }
        guard !decoderBlocks.isEmpty, decoderBlocks.count <= 8 else { throw FormatError(path, "cannot read the TAESD decoder's levels from its keys") }
        var fields: [(String, JSON)] = [
            ("_class_name", .string("AutoencoderTiny")), ("latent_channels", .number(Double(latentChannels))),
            ("decoder_block_out_channels", .array(decoderBlocks.map { _ in .number(Double(channels)) })),
            ("num_decoder_blocks", .array(decoderBlocks.map { .number(Double($0)) })),
        ]
        let encoder = layout("encoder.layers.")
        if let last = encoder.keys.max() {
            var encoderBlocks: [Int] = []
            // Per level: conv (stride 2 after the first), blocks; then the conv to the latents.
            for n in 0..<last {
                switch encoder[n] {
                case "conv": encoderBlocks.append(0)
                case "block" where !encoderBlocks.isEmpty: encoderBlocks[encoderBlocks.count - 1] += 1
                default: throw FormatError(path, "cannot read the TAESD encoder's levels from its keys")
                }
            }
            fields += [("encoder_block_out_channels", .array(encoderBlocks.map { _ in .number(Double(channels)) })),
                       ("num_encoder_blocks", .array(encoderBlocks.map { .number(Double($0)) }))]
        }
        return .object(fields)
    }

    /// The original Sequential's "N.rest" keys as diffusers' "prefix(N + shift).rest".
    static func renamed(_ file: SafetensorsFile, prefix: String, shift: Int) throws -> [SourceModel.Tensor] {
        try file.entries.map { e in
            let parts = e.key.split(separator: ".", maxSplits: 1)
            guard parts.count == 2, let n = Int(parts[0]), n + shift >= 0 else {
                throw FormatError(file.sourceName, "unexpected key \(e.key) for an original TAESD file")
            }
            return SourceModel.Tensor(key: "\(prefix)\(n + shift).\(parts[1])", file: file, entry: e, shape: e.shape)
        }
    }
}
