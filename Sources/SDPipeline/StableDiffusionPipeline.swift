import Glibc
import SDFormat
import SDKernels
import SDModels
import SDSchedulers
import SDTokenizer

/// Text-to-image with a model file, matching diffusers' StableDiffusionPipeline
/// (pipelines/stable_diffusion/pipeline_stable_diffusion.py) step for step: the same
/// tokenisation, guidance batching, noise draws and scheduler, so the same seed gives
/// the same image as diffusers on CPU.
public final class StableDiffusionPipeline {
    public let file: ModelFileReader
    public let tokenizer: CLIPTokenizer
    public let textConfig: CLIPTextConfig
    public let unetConfig: UNet2DConditionConfig
    public let vaeConfig: AutoencoderKLConfig
    public let schedulerConfig: SchedulerConfig
    /// For callers that run the models themselves (`pocketsd bench`). `generate` gives each
    /// phase a pool of its own with the same thread count, so the kernels' scratch buffers
    /// (kept and grown by a pool) are freed when the phase ends instead of carrying the
    /// UNet's largest scratch into the VAE phase and between runs.
    public let pool: ThreadPool
    /// Image pixels per latent pixel: 2^(VAE levels − 1).
    public let vaeScaleFactor: Int
    /// How runs spend memory (weight residency, UNet batch, chunking, VAE tiles); may be
    /// changed between runs.
    public var memoryPlan: MemoryPlan

    public init(modelPath: String, threads: Int, memory: MemoryPolicy = .auto) throws {
        file = try ModelFileReader(path: modelPath)
        memoryPlan = MemoryPlan.resolve(memory, modelFileBytes: file.file.byteCount)
        let path = file.sourceName
        tokenizer = try Self.tokenizer(of: file)
        do {
            textConfig = try CLIPTextConfig(json: file.config("text_encoder"))
            unetConfig = try UNet2DConditionConfig(json: file.config("unet"))
            vaeConfig = try AutoencoderKLConfig(json: file.config("vae"))
            schedulerConfig = try SchedulerConfig(diffusersConfig: Self.schedulerValues(file.config("scheduler")))
        } catch let error as FormatError {
            throw error
        } catch {
            throw FormatError(path, "\(error)")
        }
        pool = ThreadPool(threads: threads)
        vaeScaleFactor = 1 << (vaeConfig.blockOutChannels.count - 1)
        // Header, metadata and tensor table have been parsed into the heap: drop their pages.
        if let first = file.components.first?.range.lowerBound { file.file.release(0..<first) }
    }

    /// The CLIP tokenizer stored in a model file; `prefix` "tokenizer_2" is SDXL's second,
    /// whose vocabulary and merges are stored only when they differ from the first's.
    public static func tokenizer(of file: ModelFileReader, prefix: String = "tokenizer") throws -> CLIPTokenizer {
        guard let merges = file.strings(prefix + ".merges") ?? file.strings("tokenizer.merges"),
              let vocab = file.strings(prefix + ".vocab") ?? file.strings("tokenizer.vocab") else {
            throw FormatError(file.sourceName, "the model file has no tokenizer")
        }
        do {
            return try CLIPTokenizer(merges: merges, vocabulary: vocab,
                                     padTokenID: Int32(file.int(prefix + ".pad_token_id") ?? 49407),
                                     maxLength: file.int(prefix + ".model_max_length") ?? 77)
        } catch {
            throw FormatError(file.sourceName, "tokenizer: \(error)")
        }
    }

    static func schedulerValues(_ json: JSON) -> [String: SchedulerConfig.Value] {
        var values: [String: SchedulerConfig.Value] = [:]
        for (key, value) in json.object ?? [] {
            switch value {
            case .null: values[key] = .null
            case .bool(let b): values[key] = .bool(b)
            case .number(let n): values[key] = n == n.rounded() && abs(n) < 1e15 ? .int(Int(n)) : .double(n)
            case .string(let s): values[key] = .string(s)
            case .array(let items): values[key] = .doubles(items.compactMap(\.double))
            case .object: break
            }
        }
        return values
    }

    /// Where the run is, for progress lines and cancellation.
    public struct Progress: Sendable {
        public enum Phase: String, Sendable { case textEncoder = "text encoder", denoising, vaeDecode = "vae decode" }
        public let phase: Phase
        public let step: Int
        public let totalSteps: Int
        /// During denoising, the latents after this step (NCHW, `latentShape`), for previews;
        /// nil in the other phases.
        public var latents: [Float]? = nil
        public var latentShape: [Int] = []
    }

    public struct PhaseReport: Sendable {
        public let name: String
        public let seconds: Double
        public let memory: MemoryStats
        /// The phase's activation arena (text encoder, denoising, vae decode; nil for the
        /// steps and when `memoryPlan.planActivations` is off).
        public var activations: ActivationReport? = nil
    }

    public struct Result: Sendable {
        public var images: [RGBImage]
        /// Final latents before the VAE: NCHW [images, latent channels, h, w].
        public var latents: [Float]
        public var latentShape: [Int]
        /// "text encoder", "denoising", "vae decode"; denoising's peak is its steps' maximum.
        public var phases: [PhaseReport]
        /// One per denoising step ("step 1", …); the first includes binding the UNet.
        public var steps: [PhaseReport]
        /// The plan the run used.
        public var memoryPlan: MemoryPlan
    }

    /// The models' memory options for one component under the current plan.
    func memoryOptions(_ component: String, maxBatch: Int = .max) -> MemoryOptions {
        let plan = memoryPlan
        return MemoryOptions(residency: plan.policy == .stream ? StreamingResidency(file: file, component: component) : nil,
                             chunkFloats: plan.chunkFloats, maxBatch: maxBatch)
    }

    /// One phase's activation arena, planned from one run of `call` (kernels skipped), or nil
    /// when the plan says not to (every Tensor is then a plain allocation).
    func activationArena(idlePageEvents: Int? = nil, _ call: () throws -> Void) rethrows -> ActivationArena? {
        guard memoryPlan.planActivations else { return nil }
        return ActivationArena(plan: try ActivationArena.plan(call), idlePageEvents: idlePageEvents)
    }

    /// Runs `call` as one pass of `arena`, or plainly without one.
    func run<R>(in arena: ActivationArena?, _ call: () throws -> R) rethrows -> R {
        guard let arena else { return try call() }
        return try arena.run(call)
    }

    /// Runs the whole pipeline. `progress` is called before each phase and after each
    /// denoising step; returning false cancels the run.
    ///
    /// Each phase first records its model call's tensor allocations (the kernels skipped)
    /// and lays them out in one arena (`ActivationArena`); the text encoding, every UNet
    /// step and every image's VAE decode then run in it, and it is unmapped when the phase
    /// ends.
    public func generate(_ request: GenerationRequest, progress: ((Progress) -> Bool)? = nil) throws -> Result {
        try request.validate()
        guard request.width % vaeScaleFactor == 0, request.height % vaeScaleFactor == 0 else {
            throw PipelineError.invalidRequest("width and height must be multiples of \(vaeScaleFactor) for this model")
        }
        var phases: [PhaseReport] = []
        var clock = PhaseClock()
        defer { clock.stop() }
        func report(_ p: Progress) throws {
            if let progress, !progress(p) { throw PipelineError.cancelled }
        }
        let scheduler0 = try makeScheduler(request.scheduler, config: schedulerConfig, steps: request.steps)
        let count = request.imageCount
        let h = request.height / vaeScaleFactor, w = request.width / vaeScaleFactor
        let latentChannels = unetConfig.inChannels
        let tokens = tokenizer.maxLength

        // 1. Text: prompts (and the negative prompt when guiding) in one batch of
        //    [negatives…, prompts…], each repeated imagesPerPrompt times as diffusers does.
        try report(Progress(phase: .textEncoder, step: 0, totalSteps: request.steps))
        let context: [Float]
        var textActivations: ActivationReport?
        let sdxlText = try encodeSDXLText(request)  // nil unless the model is SDXL
        if let sdxlText {
            context = sdxlText.context
        } else {
            let textModel = try CLIPTextModel(config: textConfig, weights: file.component("text_encoder"),
                                              memory: memoryOptions("text_encoder"))
            release("text_encoder")  // binding read the biases and norms: drop those pages again
            var ids: [Int32] = []
            let negatives = request.prompts.indices.map { request.negativePrompt(for: $0) }
            let texts = (request.usesGuidance ? negatives : []) + request.prompts
            for text in texts { ids += tokenizer.tokenize(text) }
            let textPool = ThreadPool(threads: pool.threads)
            let encode = { try textModel.encode(ids: ids, batch: texts.count, pool: textPool) }
            let arena = try activationArena { _ = try encode() }
            let hidden = try run(in: arena, encode)
            arena?.close()
            textActivations = arena?.report
            let width = hidden.count / texts.count
            var repeated: [Float] = []
            repeated.reserveCapacity(width * texts.count * request.imagesPerPrompt)
            for t in 0..<texts.count {
                for _ in 0..<request.imagesPerPrompt { repeated += hidden[(t * width)..<((t + 1) * width)] }
            }
            context = repeated
        }
        release("text_encoder")
        if sdxlText != nil { release("text_encoder_2") }
        var textPhase = clock.lap("text encoder")
        textPhase.activations = textActivations
        phases.append(textPhase)

        // 2. Denoising: latents from torch's generator, scaled by the initial sigma.
        let denoisingStart = monotonicSeconds()
        var generator = request.makeGenerator()
        var scheduler = scheduler0
        var latents = generator.randn(count: count * latentChannels * h * w)
        let sigma = scheduler.initNoiseSigma
        if sigma != 1 { for i in latents.indices { latents[i] *= sigma } }
        let guidance = request.guidanceScale
        var steps: [PhaseReport] = []
        var unetActivations: ActivationReport?
        do {  // The UNet, its pool (with the kernels' scratch) and its arena end with this block.
            let unet = try UNet2DConditionModel(config: unetConfig, weights: file.component("unet"),
                                                memory: memoryOptions("unet", maxBatch: memoryPlan.unetBatch(latentPixels: h * w)))
            release("unet")
            let unetPool = ThreadPool(threads: pool.threads)
            let unetBatch = request.usesGuidance ? 2 * count : count
            // The UNet splits the batch itself (memoryPlan.unetBatch(latentPixels:) per call).
            func predict(_ batchInput: [Float], _ t: Float) -> [Float] {
                unet.predictNoise(sample: batchInput, batch: unetBatch, height: h, width: w, timestep: t,
                                  context: context, contextTokens: tokens, added: sdxlText?.added, pool: unetPool)
            }
            // Every step makes the same tensors: plan one, run all of them in its arena.
            let arena = activationArena(idlePageEvents: memoryPlan.unetIdlePageEvents) {
                _ = predict([Float](repeating: 0, count: unetBatch * latentChannels * h * w), scheduler.timesteps[0])
            }
            defer {
                arena?.close()
                unetActivations = arena?.report
            }
            for (i, t) in scheduler.timesteps.enumerated() {
                let input = scheduler.scaleModelInput(latents, stepIndex: i)
                let prediction = run(in: arena) { predict(request.usesGuidance ? input + input : input, t) }
                var noise: [Float]
                if request.usesGuidance {
                    let n = latents.count
                    noise = [Float](repeating: 0, count: n)
                    prediction.withUnsafeBufferPointer { p in
                        for j in 0..<n { noise[j] = p[j] + guidance * (p[n + j] - p[j]) }
                    }
                } else {
                    noise = prediction
                }
                latents = scheduler.step(modelOutput: noise, stepIndex: i, sample: latents, generator: &generator)
                steps.append(clock.lap("step \(i + 1)"))
                try report(Progress(phase: .denoising, step: i + 1, totalSteps: scheduler.timesteps.count,
                                    latents: latents, latentShape: [count, latentChannels, h, w]))
            }
        }
        release("unet")
        let last = clock.lap("unet release")
        phases.append(PhaseReport(
            name: "denoising", seconds: monotonicSeconds() - denoisingStart,
            memory: (steps + [last]).max { $0.memory.peakResident < $1.memory.peakResident }?.memory ?? last.memory,
            activations: unetActivations))

        // 3. Decode: latents / scaling_factor through the VAE, then to 8 bits.
        try report(Progress(phase: .vaeDecode, step: request.steps, totalSteps: request.steps))
        let vae = try AutoencoderKL(config: vaeConfig, weights: file.component("vae"), memory: memoryOptions("vae"))
        release("vae")
        let scale = Float(vaeConfig.scalingFactor)
        let scaled = latents.map { $0 / scale }
        let vaePool = ThreadPool(threads: pool.threads)
        var images: [RGBImage] = []
        let plane = latentChannels * h * w
        let tiling = memoryPlan.vaeTiling
        // One image at a time: the decoder's activations are the largest of the run. Every
        // image (and within it every tile) makes the same tensors: one plan, one arena.
        func decode(_ n: Int) -> [Float] {
            vae.decode(latents: Array(scaled[(n * plane)..<((n + 1) * plane)]), batch: 1,
                       height: h, width: w, tiling: tiling, pool: vaePool)
        }
        let vaeArena = activationArena { _ = decode(0) }
        for n in 0..<count {
            let decoded = run(in: vaeArena) { decode(n) }
            decoded.withUnsafeBufferPointer {
                images.append(RGBImage(decoded: $0, width: request.width, height: request.height))
            }
        }
        vaeArena?.close()
        release("vae")
        var vaePhase = clock.lap("vae decode")
        vaePhase.activations = vaeArena?.report
        phases.append(vaePhase)
        return Result(images: images, latents: latents, latentShape: [count, latentChannels, h, w], phases: phases,
                      steps: steps, memoryPlan: memoryPlan)
    }

    /// Drops a component's weight pages (they stay in the page cache): after binding (which
    /// read the biases and norms, and the kernel mapped their neighbours too), and when the
    /// component is done.
    func release(_ component: String) {
        if let range = file.components.first(where: { $0.name == component })?.range { file.file.release(range) }
    }
}

/// Times phases and records each one's peak memory (VmHWM, reset per phase) and how the
/// resident set split into anonymous and file pages at its sampled peak. `stop()` ends
/// the sampling thread.
struct PhaseClock {
    var start = monotonicSeconds()
    let sampler = MemorySampler()

    init() {
        MemoryStats.resetPeak()
        _ = sampler.take()
    }

    mutating func lap(_ name: String) -> StableDiffusionPipeline.PhaseReport {
        let t = monotonicSeconds()
        defer {
            start = t
            MemoryStats.resetPeak()
        }
        var memory = MemoryStats.current()
        let split = sampler.take()
        if split.anonymous + split.file > 0 {
            memory.residentAnonymous = split.anonymous
            memory.residentFile = split.file
        }
        return .init(name: name, seconds: t - start, memory: memory)
    }

    func stop() { sampler.stop() }
}

public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
