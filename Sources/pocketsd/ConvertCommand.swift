import ArgumentParser
import SDConverter
import SDFormat

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a diffusers folder or a single-file .safetensors checkpoint into a .pdm model file.")

    @Argument(help: "A diffusers folder (with model_index.json) or a single-file SD 1.x, 2.x or SDXL .safetensors checkpoint (original layouts: CompVis for SD 1.x/2.x, Stability's for SDXL and SDXL-Turbo).")
    var input: String

    @Option(name: .shortAndLong, help: "The model file to write (.pdm).")
    var output: String

    @Option(help: "Weight storage: fp32, fp16 or int8 (per-output-channel int8 for linear and conv weights).")
    var weights: String = "int8"

    @Option(help: "For a single-file checkpoint: a diffusers folder whose configs (and tokenizers, scheduler) to use instead of inferring them (e.g. SDXL-Turbo's, whose scheduler and size a file does not hold).")
    var config: String?

    @Option(help: "The model's prediction type, stored in its scheduler config: epsilon or v_prediction (default: the folder's scheduler config; v_prediction for single-file SD 2.x checkpoints, as diffusers; use epsilon for the 512-px 2.x base models).")
    var predictionType: String?

    @Option(name: .customLong("lora"), help: ArgumentHelp("A LoRA .safetensors (kohya/A1111 or diffusers/PEFT keys) to merge into the weights before rounding, at strength SCALE (default 1); repeatable.", valueName: "FILE[:SCALE]"))
    var loras: [String] = []

    @Option(help: ArgumentHelp("A TAESD to store beside the VAE (for generate --vae taesd and live previews): a diffusers AutoencoderTiny folder, or the original taesd_decoder.safetensors (taesd_encoder.safetensors beside it is taken too).", valueName: "DIR|FILE"))
    var taesd: String?

    @Flag(help: "Print the report as JSON on stdout.")
    var json = false

    func validate() throws {
        guard !output.isEmpty else { throw ValidationError("-o needs a file name (got an empty one)") }
        guard WeightMode(rawValue: weights) != nil else {
            throw ValidationError("--weights must be one of fp32, fp16, int8 (got \(weights))")
        }
        if let predictionType, !ConversionOptions.predictionTypes.contains(predictionType) {
            throw ValidationError("--prediction-type must be \(ConversionOptions.predictionTypes.joined(separator: " or ")) (got \(predictionType))")
        }
        for l in loras where LoRASpec(argument: l) == nil {
            throw ValidationError("--lora must be FILE or FILE:SCALE with a finite SCALE (got \(l))")
        }
    }

    func run() throws {
        // Before reading anything: the output must be creatable and must not replace the
        // checkpoint, the config folder or a file inside an input folder.
        try OutputFiles.check(output, inputs: [input] + (config.map { [$0] } ?? []))
        let start = now()
        var options = ConversionOptions(weights: WeightMode(rawValue: weights)!, configFolder: config, predictionType: predictionType)
        options.loras = loras.compactMap(LoRASpec.init(argument:))
        options.taesd = taesd
        let report = try Converter.convert(input: input, output: output, options: options) { done, total, key in
            if done < total { Terminal.progress("[\(done + 1)/\(total)] \(key)") } else { Terminal.progress("", final: false) }
        }
        let seconds = now() - start
        Terminal.progress("")
        if json {
            Terminal.printJSON(.object([
                ("output", .string(output)), ("input_kind", .string(report.inputKind)), ("weights", .string(weights)),
                ("bytes", .number(Double(report.outputBytes))), ("seconds", .number(seconds)),
                ("tokenizer", .string(report.tokenizerSource)),
                ("components", .array(report.components.map { c in
                    .object([("name", .string(c.name)), ("tensors", .number(Double(c.tensorCount))),
                             ("parameters", .number(Double(c.parameterCount))), ("bytes", .number(Double(c.storedBytes))),
                             ("dtypes", .object(c.dtypeCounts.sorted { $0.key < $1.key }.map { ($0.key, .number(Double($0.value))) })),
                             ("max_relative_error", .number(c.maxRelativeError)),
                             ("rms_relative_error", .number(c.rmsRelativeError))])
                })),
                ("unused_keys", .array(report.unusedKeys.map { .string($0) })),
                ("assumptions", .array(report.assumptions.map { .string($0) })),
                ("loras", .array(report.loras.map { l in
                    .object([("path", .string(l.path)), ("scale", .number(Double(l.scale))),
                             ("merged_tensors", .number(Double(l.mergedTensors))),
                             ("unmatched_keys", .array(l.unmatchedKeys.map { .string($0) }))])
                })),
            ]))
            return
        }
        print("Converted \(report.inputKind) \(input) -> \(output) (\(weights), \(formatBytes(report.outputBytes))) in \(format(seconds, 1)) s")
        print("tokenizer: \(report.tokenizerSource)")
        print(pad("component", 14) + pad("tensors", 9, right: true) + pad("params", 10, right: true) + pad("stored", 12, right: true)
              + "  dtypes" + pad("", 18) + pad("max rel err", 13, right: true) + pad("rms rel err", 13, right: true))
        for c in report.components {
            let dtypes = c.dtypeCounts.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: " ")
            print(pad(c.name, 14) + pad("\(c.tensorCount)", 9, right: true) + pad(formatCount(c.parameterCount), 10, right: true)
                  + pad(formatBytes(c.storedBytes), 12, right: true) + "  " + pad(dtypes, 24)
                  + pad(formatScientific(c.maxRelativeError), 13, right: true) + pad(formatScientific(c.rmsRelativeError), 13, right: true))
        }
        for l in report.loras {
            print("lora \(l.path) at scale \(l.scale): merged into \(l.mergedTensors) tensors")
            if !l.unmatchedKeys.isEmpty {
                let shown = l.unmatchedKeys.prefix(20).joined(separator: ", ")
                print("  keys matching nothing (\(l.unmatchedKeys.count)): \(shown)\(l.unmatchedKeys.count > 20 ? ", …" : "")")
            }
        }
        for a in report.assumptions { print("assumed: \(a)") }
        if !report.unusedKeys.isEmpty {
            let shown = report.unusedKeys.prefix(20).joined(separator: ", ")
            print("unused keys (\(report.unusedKeys.count)): \(shown)\(report.unusedKeys.count > 20 ? ", …" : "")")
        }
    }
}
