import ArgumentParser
import Glibc
import SDFormat
import SDKernels
import SDModels
import SDPipeline
import SDSchedulers
import SDTokenizer

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Generate images from a prompt with a .pdm model file.")

    @Option(name: .shortAndLong, help: "The model file (.pdm).")
    var model: String

    @Option(name: [.short, .customLong("prompt")], help: "The prompt; repeat for several prompts in one batch.")
    var prompts: [String] = []

    @Option(name: [.short, .customLong("negative-prompt")], help: "What to steer away from: once for every prompt, or once per prompt.")
    var negativePrompts: [String] = []

    @Option(help: "Denoising steps.")
    var steps: Int = 50

    @Option(name: [.customLong("guidance"), .customLong("cfg-scale")], help: "Classifier-free guidance scale; 1 or less turns guidance off.")
    var guidance: Float = 7.5

    @Option(help: "Random seed (torch.manual_seed compatible); random when omitted.")
    var seed: UInt64?

    @Option(help: "Image width in pixels, a multiple of 8 (default: the init image's width rounded down to 8, else the model's own size, sample_size × 8: 512, 768 for 768-v models, 1024 for SDXL base).")
    var width: Int?

    @Option(help: "Image height in pixels, a multiple of 8 (default: the init image's height rounded down to 8, else the model's own size).")
    var height: Int?

    @Option(help: "SDXL: the original_size the UNet is told about, W,H (default: the image size).")
    var originalSize: String?

    @Option(help: "SDXL: the crop's top-left corner X,Y (diffusers' crops_coords_top_left is (Y, X); default 0,0).")
    var cropsCoords: String?

    @Option(help: "SDXL: the target_size the UNet is told about, W,H (default: the image size).")
    var targetSize: String?

    @Option(help: "img2img: start from this PNG (resized to the size with Lanczos, as diffusers does).")
    var initImage: String?

    @Option(help: "Inpainting: a PNG of the init image's size, white where the image is repainted (needs --init-image).")
    var mask: String?

    @Option(help: "With --init-image: how much the image is changed, above 0 up to 1 (default 0.8; 1 with --mask).")
    var strength: Double?

    @Option(help: "Scheduler: \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", ")) (default: the model's own stored scheduler, with all its settings).")
    var scheduler: String?

    @Option(help: "Rescale classifier-free guidance towards the text prediction's spread by this fraction, 0 to 1 (diffusers' guidance_rescale; 0.7 is the paper's value for zero-terminal-SNR models).")
    var guidanceRescale: Float = 0

    @Option(help: "Override the model's prediction type: epsilon or v_prediction.")
    var predictionType: String?

    @Option(help: "Images per prompt.")
    var images: Int = 1

    @Option(help: "How several images get their noise: per-image (image i uses seed + i, so each PNG's recorded seed remakes it alone; AUTOMATIC1111's way, and diffusers' with a list of generators) or batch (one generator for the whole batch, as diffusers with one generator).")
    var seedMode: String = GenerationRequest.SeedMode.perImage.rawValue

    @Option(help: "Save all images as one grid, ROWSxCOLS (e.g. 2x2).")
    var grid: String?

    @Option(help: threadsHelp)
    var threads: Int?

    @Option(name: .shortAndLong, help: "Output PNG; with several images and no grid, -N is added before .png.")
    var output: String = "output.png"

    @Option(help: "Also write the final latents (before the VAE) as a float32 NCHW .npy file.")
    var saveLatents: String?

    @Option(help: "Weight residency: keep (pages stay mapped; fastest with RAM to spare), stream (each layer's weight pages dropped after use; least memory) or auto (keep if the model file fits with room to spare).")
    var memory: String = "auto"

    @Option(help: "VAE decode tile size in pixels (a multiple of 8, 64 to 4096), or 0 to decode in one piece; default: 512 with --memory keep, 160 with stream.")
    var vaeTile: Int?

    @Option(help: ArgumentHelp(stringLiteral: PrecisionChoice.help))
    var precision: String = "auto"

    @Option(help: "Autoencoder for the final images: full (the model's VAE) or taesd (the tiny autoencoder stored by convert --taesd; much faster, softer).")
    var vae: String = ImageDecoder.full.rawValue

    @Option(help: "A PNG rewritten after every denoising step with a preview of the first image (TAESD when the model file has one, else a latent-size approximation).")
    var preview: String?

    @Option(help: ArgumentHelp(stringLiteral: KernelVariant.help))
    var kernels: String?

    @Flag(help: "Print time and peak memory per phase and per denoising step.")
    var stats = false

    @Flag(help: "Print the result as JSON on stdout.")
    var json = false

    func validate() throws {
        guard !prompts.isEmpty else { throw ValidationError("give a prompt with -p") }
        guard !output.isEmpty else { throw ValidationError("-o needs a file name (got an empty one)") }
        if saveLatents == "" { throw ValidationError("--save-latents needs a file name (got an empty one)") }
        guard negativePrompts.count <= 1 || negativePrompts.count == prompts.count else {
            throw ValidationError("give -n once, or once per -p (\(prompts.count) times)")
        }
        if let scheduler, SchedulerKind(rawValue: scheduler) == nil {
            throw ValidationError("unknown scheduler \(scheduler); choose one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        // Omitted sides take the init image's or the model's size (checked when they are read).
        let sides = [width, height].compactMap { $0 }
        guard sides.allSatisfy({ $0 > 0 && $0 % 8 == 0 }) else {
            throw ValidationError("width and height must be positive multiples of 8 (got \(width.map(String.init) ?? "default")x\(height.map(String.init) ?? "default"))")
        }
        guard sides.allSatisfy({ $0 <= GenerationRequest.maxSide }) else {
            throw ValidationError("width and height must be at most \(GenerationRequest.maxSide)")
        }
        guard guidanceRescale.isFinite, guidanceRescale >= 0, guidanceRescale <= 1 else {
            throw ValidationError("--guidance-rescale must be a number from 0 to 1 (got \(guidanceRescale))")
        }
        if let predictionType, !GenerationRequest.predictionTypes.contains(predictionType) {
            throw ValidationError("--prediction-type must be \(GenerationRequest.predictionTypes.joined(separator: " or ")) (got \(predictionType))")
        }
        try validateImageInputFlags()
        guard steps >= 1, steps <= 1000 else { throw ValidationError("--steps must be between 1 and 1000 (got \(steps))") }
        guard images >= 1 else { throw ValidationError("--images must be at least 1 (got \(images))") }
        guard guidance.isFinite, guidance >= 0, guidance <= 100 else {
            throw ValidationError("--guidance must be a number from 0 to 100 (got \(guidance))")
        }
        guard GenerationRequest.SeedMode(rawValue: seedMode) != nil else {
            throw ValidationError("--seed-mode must be one of \(GenerationRequest.SeedMode.allCases.map(\.rawValue).joined(separator: ", ")) (got \(seedMode))")
        }
        guard prompts.count * images <= GenerationRequest.maxImages else {
            throw ValidationError("at most \(GenerationRequest.maxImages) images per run")
        }
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
        guard ImageDecoder(rawValue: vae) != nil else {
            throw ValidationError("--vae must be one of \(ImageDecoder.allCases.map(\.rawValue).joined(separator: ", ")) (got \(vae))")
        }
        if let vaeTile, vaeTile != 0 && (vaeTile < 64 || vaeTile > 4096 || vaeTile % 8 != 0) {
            throw ValidationError("--vae-tile must be 0 or a multiple of 8 from 64 to 4096 (got \(vaeTile))")
        }
        _ = try PrecisionChoice.parse(precision)
        if let kernels { _ = try KernelVariant.parseOption(kernels) }
        _ = try sizeConditioning()
        guard MemoryPolicy(rawValue: memory) != nil else {
            throw ValidationError("--memory must be one of \(MemoryPolicy.allCases.map(\.rawValue).joined(separator: ", ")) (got \(memory))")
        }
        if let grid {
            guard let (r, c) = Self.parseGrid(grid) else { throw ValidationError("--grid must look like 2x2 (got \(grid))") }
            guard r * c == prompts.count * images else {
                throw ValidationError("--grid \(grid) holds \(r * c) images but the run makes \(prompts.count * images)")
            }
        }
    }

    /// --original-size, --crops-coords and --target-size as SDXL's size conditioning.
    func sizeConditioning() throws -> SizeConditioning {
        var s = SizeConditioning()
        func pair(_ flag: String, _ text: String?) throws -> (Int, Int)? {
            guard let text else { return nil }
            guard let p = SizeConditioning.parsePair(text) else {
                throw ValidationError("--\(flag) must be two whole numbers from 0 to \(SizeConditioning.maxValue), like 1024,768 (got \(text))")
            }
            return p
        }
        if let (w, h) = try pair("original-size", originalSize) { (s.originalWidth, s.originalHeight) = (w, h) }
        if let (x, y) = try pair("crops-coords", cropsCoords) { (s.cropLeft, s.cropTop) = (x, y) }
        if let (w, h) = try pair("target-size", targetSize) { (s.targetWidth, s.targetHeight) = (w, h) }
        return s
    }

    static func parseGrid(_ text: String) -> (Int, Int)? {
        let parts = text.lowercased().split(separator: "x")
        guard parts.count == 2, let r = Int(parts[0]), let c = Int(parts[1]), r >= 1, c >= 1, r <= 64, c <= 64 else { return nil }
        return (r, c)
    }

    /// Output files, decided (and their folders checked) before any work is done.
    func outputPaths(count: Int) -> [String] {
        if count == 1 || grid != nil { return [output] }
        let stem = output.hasSuffix(".png") ? String(output.dropLast(4)) : output
        return (0..<count).map { "\(stem)-\($0).png" }
    }

    func run() throws {
        var request = GenerationRequest(prompts: prompts, negativePrompts: negativePrompts)
        request.steps = steps
        request.guidanceScale = guidance
        request.seed = seed ?? randomSeed()
        request.imageInput = try loadImageInput()
        request.imagesPerPrompt = images
        request.seedMode = GenerationRequest.SeedMode(rawValue: seedMode)!
        request.scheduler = scheduler.map { SchedulerKind(rawValue: $0)! }
        request.guidanceRescale = guidanceRescale
        request.predictionType = predictionType
        request.decoder = ImageDecoder(rawValue: vae)!
        request.sizeConditioning = try sizeConditioning()
        let paths = outputPaths(count: request.imageCount)
        // Every output is checked (and none may replace an input) before the model loads.
        let inputs = [model] + [initImage, mask].compactMap { $0 }
        let outputs = try OutputFiles(outputs: paths + (saveLatents.map { [$0] } ?? []), inputs: inputs)
        // The preview is rewritten in place every step, not committed with the outputs; it
        // may replace neither an input nor an output.
        if let preview { try OutputFiles.check(preview, inputs: inputs + outputs.paths) }

        let start = now()
        let pipeline = try StableDiffusionPipeline(modelPath: model, threads: threads ?? ThreadPool.defaultThreadCount,
                                                   memory: MemoryPolicy(rawValue: memory)!)
        (request.width, request.height) = resolveGenerationSize(width: width, height: height, initImage: request.imageInput?.image,
                                                                modelDefault: pipeline.defaultImageSize)
        try request.validate()
        // The scheduler is built (and its settings checked) before any model runs; the PNG
        // metadata names the kind actually used.
        _ = try pipeline.makeScheduler(for: request)
        var described = request
        described.scheduler = try pipeline.schedulerKind(for: request)
        if let kernels { Kernels.variant = try KernelVariant.parseOption(kernels) }  // before precision's auto
        try pipeline.usePrecision(option: precision)
        if let vaeTile { pipeline.memoryPlan.vaeTiling = vaeTile == 0 ? nil : VAETiling(tileSize: vaeTile) }
        let loadSeconds = now() - start
        let loadMemory = MemoryStats.current()
        warnAboutTruncation(request, tokenizer: pipeline.tokenizer)
        var stepStart = now()
        let result = try pipeline.generate(request) { p in
            switch p.phase {
            case .denoising:
                let t = now()
                Terminal.progress(Self.stepLabel(call: p.step, calls: p.totalSteps, steps: request.loopSteps)
                                  + "  \(format(t - stepStart, 2)) s/call")
                if let preview, let latents = p.latents,
                   let image = pipeline.previewImage(latents: latents, shape: p.latentShape) {
                    // A failed preview must not end the run: the next step tries again.
                    try? PNGWriter.write(image, to: preview)
                }
                stepStart = now()
            default:
                Terminal.progress(p.phase.rawValue + "…")
                stepStart = now()
            }
            return true
        }
        Terminal.progress("")
        let modelName = Self.modelName(model)
        var written: [JSON] = []
        // Per image: what remakes it (its seed, and in batch mode its place in the batch).
        func imageFields(_ i: Int) -> [(String, JSON)] {
            [("seed", .number(Double(request.seed(ofImage: i)))), ("batch_index", .number(Double(i))),
             ("prompt", .string(prompts[i / images])),
             ("parameters", .string(automatic1111Parameters(image: i, request: described, modelName: modelName)))]
        }
        if let grid, let (r, c) = Self.parseGrid(grid) {
            let image = RGBImage.grid(result.images, rows: r, columns: c)
            try PNGWriter.write(image, to: paths[0],
                                text: automatic1111GridText(request: described, modelName: modelName, rows: r, columns: c), in: outputs)
            written.append(.object([("file", .string(paths[0])), ("seed", .number(Double(request.seed))), ("grid", .string(grid)),
                                    ("width", .number(Double(image.width))), ("height", .number(Double(image.height))),
                                    ("cells", .array((0..<result.images.count).map { .object(imageFields($0)) }))]))
        } else {
            for (i, image) in result.images.enumerated() {
                try PNGWriter.write(image, to: paths[i], text: [("parameters", automatic1111Parameters(image: i, request: described, modelName: modelName))],
                                    in: outputs)
                written.append(.object([("file", .string(paths[i]))] + imageFields(i)))
            }
        }
        if let saveLatents {
            try outputs.write(saveLatents, bytes: NPYArray.encode(shape: result.latentShape, floats: result.latents))
        }
        // All images and the latents appear together, or (on any failure above) none does.
        try outputs.commit()
        let total = now() - start
        let phases = [("load", loadSeconds, loadMemory, nil)] + result.phases.map { ($0.name, $0.seconds, $0.memory, $0.activations) }
        let stepRows = result.steps.map { ($0.name, $0.seconds, $0.memory, $0.activations) }
        if json {
            func rows(_ list: [(String, Double, MemoryStats, ActivationReport?)]) -> JSON {
                .array(list.map { name, seconds, m, a in
                    var fields: [(String, JSON)] = [
                        ("name", .string(name)), ("seconds", .number(seconds)),
                        ("peak_rss_bytes", .number(Double(m.peakResident))),
                        ("rss_anon_bytes", .number(Double(m.residentAnonymous))),
                        ("rss_file_bytes", .number(Double(m.residentFile)))]
                    if let a {
                        fields += [("activation_arena_bytes", .number(Double(a.arenaBytes))),
                                   ("activation_peak_live_bytes", .number(Double(a.peakLiveBytes))),
                                   ("activation_allocations", .number(Double(a.allocations))),
                                   ("activation_idle_bytes_per_pass", .number(Double(a.idleBytesPerPass))),
                                   ("activation_fallbacks", .number(Double(a.fallbacks)))]
                    }
                    return .object(fields)
                })
            }
            Terminal.printJSON(.object([
                ("images", .array(written)), ("seed", .number(Double(request.seed))), ("seconds", .number(total)),
                ("steps", .number(Double(steps))), ("scheduler", .string(described.scheduler!.rawValue)),
                ("scheduler_from_model", .bool(scheduler == nil)), ("seed_mode", .string(seedMode)),
                ("guidance_rescale", .number(Double(guidanceRescale))),
                ("prediction_type", .string(pipeline.schedulerConfig(for: request).predictionType)),
                ("width", .number(Double(request.width))), ("height", .number(Double(request.height))),
                ("precision", .string(pipeline.precision.rawValue)), ("kernel_variant", .string(Kernels.variant.rawValue)),
                ("int8_kernel", .string(Kernels.variant.int8KernelName)),
                ("attention_products", .string(pipeline.precision.attention.rawValue)),
                ("vae_tile_pixels", .number(Double(result.memoryPlan.vaeTiling?.tileSize ?? 0))),
                ("memory", .string(result.memoryPlan.policy.rawValue)), ("memory_reason", .string(result.memoryPlan.reason)),
                ("peak_rss_bytes", .number(Double(phases.map(\.2.peakResident).max() ?? 0))),
                ("phases", rows(phases)),
                ("step_stats", rows(stepRows)),
            ]))
            return
        }
        for w in written { if let f = w["file"]?.string { print("wrote \(f)") } }
        if seed == nil { print("seed: \(request.seed)") }
        if stats {
            let tiles = result.memoryPlan.vaeTiling.map { "\($0.tileSize) px tiles" } ?? "one piece"
            print("memory: \(result.memoryPlan.policy.rawValue) (\(result.memoryPlan.reason)); precision: "
                  + "\(pipeline.precision.rawValue)\(int8Details(pipeline.precision)); kernels: \(Kernels.variant.rawValue); VAE decode: \(tiles)")
            print(pad("phase", 14) + pad("seconds", 10, right: true) + pad("peak RSS", 12, right: true) + pad("anon", 12, right: true)
                  + pad("file", 12, right: true) + pad("arena", 12, right: true) + pad("peak live", 12, right: true))
            func line(_ name: String, _ seconds: Double, _ m: MemoryStats, _ a: ActivationReport?) {
                var text = pad(name, 14) + pad(format(seconds, 2), 10, right: true) + pad(formatBytes(m.peakResident), 12, right: true)
                    + pad(formatBytes(m.residentAnonymous), 12, right: true) + pad(formatBytes(m.residentFile), 12, right: true)
                if let a {
                    text += pad(formatBytes(a.arenaBytes), 12, right: true) + pad(formatBytes(a.peakLiveBytes), 12, right: true)
                    if a.fallbacks > 0 { text += "  (\(a.fallbacks) unplanned allocations)" }
                }
                print(text)
            }
            for (name, seconds, memory, activations) in phases {
                line(name, seconds, memory, activations)
                // Under denoising, one indented line per step.
                if name == "denoising" { for (n, s, m, a) in stepRows { line("  " + n, s, m, a) } }
            }
            print(pad("total", 14) + pad(format(total, 2), 10, right: true))
            print("(peak RSS: the phase's peak: VmHWM if the phase raised it, else the sampled maximum; anon/file: how the")
            print(" resident set split at its sampled peak;")
            print(" arena: the phase's planned activation arena; peak live: the most activation bytes live at once)")
        }
    }

    /// The progress label of UNet call `call` of `calls`. PNDM makes one call more than
    /// `steps` (its first step is a two-call warm-up), and that call is named as such
    /// instead of counting to "step 11/10".
    static func stepLabel(call: Int, calls: Int, steps: Int) -> String {
        let extra = max(0, calls - steps)
        if extra == 0 { return "step \(call)/\(steps)" }
        if call <= extra + 1 { return "step 1/\(steps) (warm-up call \(call) of \(extra + 1))" }
        return "step \(call - extra)/\(steps)"
    }

    /// diffusers' warning for text the text encoder never sees: the words cut by the
    /// 77-token limit, quoted, for every prompt and (when guidance uses it) negative prompt.
    func warnAboutTruncation(_ request: GenerationRequest, tokenizer: CLIPTokenizer) {
        let limit = tokenizer.maxLength
        for (i, prompt) in request.prompts.enumerated() {
            var texts = [("prompt", prompt)]
            if request.usesGuidance { texts.append(("negative prompt", request.negativePrompt(for: i))) }
            for (kind, text) in texts {
                guard let dropped = tokenizer.truncatedText(of: text) else { continue }
                let which = request.prompts.count > 1 ? "\(kind) \(i + 1)" : kind
                Terminal.warning("\(which) is longer than \(limit) tokens; the text encoder does not see: \"\(dropped)\"")
            }
        }
    }

    static func modelName(_ path: String) -> String {
        let base = path.split(separator: "/").last.map(String.init) ?? path
        return base.hasSuffix(".pdm") ? String(base.dropLast(4)) : base
    }
}

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize", abstract: "Print the token ids the text encoder receives for a prompt.")

    @Option(name: .shortAndLong, help: "The model file (.pdm).")
    var model: String

    @Flag(help: "Print {\"ids\": [...]} on stdout.")
    var json = false

    @Argument(help: "The prompt.")
    var prompt: String

    func run() throws {
        let tokenizer = try StableDiffusionPipeline.tokenizer(of: ModelFileReader(path: model))
        let ids = tokenizer.tokenize(prompt)
        if json {
            Terminal.printJSON(.object([("ids", .array(ids.map { .number(Double($0)) }))]))
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}

func randomSeed() -> UInt64 {
    // 32-bit seeds, as AUTOMATIC1111 uses, so they are easy to type back.
    UInt64(UInt32.random(in: 0...UInt32.max))
}

