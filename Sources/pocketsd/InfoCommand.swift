import ArgumentParser
import SDFormat

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show a model file's components, configs, parameter counts and dtypes.")

    @Option(name: .shortAndLong, help: "The model file (.pdm).")
    var model: String

    @Flag(help: "Print JSON on stdout.")
    var json = false

    func run() throws {
        let file = try ModelFileReader(path: model)
        var components: [JSON] = []
        var lines: [String] = []
        for (name, range) in file.components {
            let entries = file.entries.filter { $0.component == name }
            var dtypes: [String: Int] = [:]
            for e in entries { dtypes[e.dtype.rawValue, default: 0] += e.elementCount }
            let params = entries.reduce(0) { $0 + $1.elementCount }
            let config = (try? file.config(name)) ?? .null
            components.append(.object([
                ("name", .string(name)), ("tensors", .number(Double(entries.count))),
                ("parameters", .number(Double(params))), ("bytes", .number(Double(range.count))),
                ("offset", .number(Double(range.lowerBound))),
                ("parameters_by_dtype", .object(dtypes.sorted { $0.key < $1.key }.map { ($0.key, .number(Double($0.value))) })),
                ("config", config),
            ]))
            let breakdown = dtypes.sorted { $0.key < $1.key }.map { "\($0.key) \(formatCount($0.value))" }.joined(separator: ", ")
            lines.append(pad(name, 14) + pad("\(entries.count) tensors", 14, right: true) + pad(formatCount(params) + " params", 16, right: true)
                         + pad(formatBytes(range.count), 12, right: true) + "   " + breakdown)
        }
        let scheduler = (try? file.config("scheduler")) ?? .null
        let vocabSize = file.strings("tokenizer.vocab")?.count ?? 0
        if json {
            Terminal.printJSON(.object([
                ("path", .string(model)), ("format_version", .number(Double(file.version))),
                ("bytes", .number(Double(file.file.byteCount))),
                ("family", .string(file.string("general.family") ?? "")),
                ("weights", .string(file.string("general.weights") ?? "")),
                ("converter", .string(file.string("general.converter") ?? "")),
                ("components", .array(components)), ("scheduler", scheduler),
                ("assumptions", .array((file.strings("general.assumptions") ?? []).map { .string($0) })),
                ("loras", .array(loraEntries(file).map { .object([("name", .string($0.name)), ("scale", .number(Double($0.scale)))]) })),
                ("tokenizer", .object([("vocab_size", .number(Double(vocabSize))),
                                       ("merges", .number(Double(file.strings("tokenizer.merges")?.count ?? 0))),
                                       ("pad_token_id", .number(Double(file.int("tokenizer.pad_token_id") ?? -1)))])),
            ]))
            return
        }
        print("\(model): PocketDiffusion model, format \(file.version), \(formatBytes(file.file.byteCount))")
        print("family \(file.string("general.family") ?? "?"), weights \(file.string("general.weights") ?? "?"), converted by \(file.string("general.converter") ?? "?")")
        lines.forEach { print($0) }
        if let unet = try? file.config("unet") {
            print("unet: block_out_channels \(unet["block_out_channels"]?.serialized ?? "?"), layers_per_block \(unet["layers_per_block"]?.serialized ?? "?"), attention_head_dim \(unet["attention_head_dim"]?.serialized ?? "?"), cross_attention_dim \(unet["cross_attention_dim"]?.serialized ?? "?")")
        }
        if let text = try? file.config("text_encoder") {
            print("text_encoder: hidden_size \(text["hidden_size"]?.serialized ?? "?"), layers \(text["num_hidden_layers"]?.serialized ?? "?"), heads \(text["num_attention_heads"]?.serialized ?? "?"), act \(text["hidden_act"]?.serialized ?? "?")")
        }
        if let vae = try? file.config("vae") {
            print("vae: block_out_channels \(vae["block_out_channels"]?.serialized ?? "?"), scaling_factor \(vae["scaling_factor"]?.serialized ?? "?")")
        }
        print("scheduler: \(scheduler["_class_name"]?.string ?? "?"), tokenizer: \(vocabSize) tokens")
        let loras = loraEntries(file)
        if !loras.isEmpty { print("loras merged: " + loras.map { "\($0.name) (scale \($0.scale))" }.joined(separator: ", ")) }
        // What the converter chose where the input said nothing (single files), with the flag to change it.
        for a in file.strings("general.assumptions") ?? [] { print("assumed at conversion: \(a)") }
    }

    /// The LoRAs merged at conversion, stored as `name:scale` in `general.loras`.
    func loraEntries(_ file: ModelFileReader) -> [(name: String, scale: Float)] {
        (file.strings("general.loras") ?? []).map { item in
            guard let colon = item.lastIndex(of: ":"), let scale = Float(item[item.index(after: colon)...]) else { return (item, 1) }
            return (String(item[..<colon]), scale)
        }
    }
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Check every tensor of a model file against its checksum.")

    @Option(name: .shortAndLong, help: "The model file (.pdm).")
    var model: String

    func run() throws {
        let file = try ModelFileReader(path: model)
        let bad = file.verify { done, total in Terminal.progress("verifying [\(done)/\(total)]") }
        Terminal.progress("")
        guard bad.isEmpty else {
            throw FormatError(model, "checksum mismatch in \(bad.count) tensor(s): \(bad.prefix(5).joined(separator: ", "))")
        }
        print("\(model): OK, \(file.entries.count) tensors verified")
    }
}
