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
    /// Operand precision of the matrix products (`usePrecision` picks it from a
    /// `PrecisionChoice`); f32, the exact mode, unless set. Every pool the pipeline runs
    /// its models on carries it.
    public var precision: Kernels.Precision = .f32 {
        didSet { pool.precision = precision }
    }

    public init(modelPath: String, threads: Int, memory: MemoryPolicy = .auto) throws {
        file = try ModelFileReader(path: modelPath)
        memoryPlan = MemoryPlan.resolve(memory, modelFileBytes: file.file.byteCount)
        tokenizer = try file.clipTokenizer()
        textConfig = try file.textEncoderConfig()
        unetConfig = try file.unetConfig()
        vaeConfig = try file.vaeConfig()
        schedulerConfig = try file.schedulerConfig()
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

    static func schedulerValues(_ json: JSON) -> [String: SchedulerConfig.Value] { schedulerConfigValues(json) }

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
        if request.decoder == .taesd && !hasTinyAutoencoder {
            throw PipelineError.invalidRequest("--vae taesd: this model file has no TAESD (convert it with --taesd DIR|FILE)")
        }
        var phases: [PhaseReport] = []
        var clock = PhaseClock()
        defer { clock.stop() }
        func report(_ p: Progress) throws {
            if let progress, !progress(p) { throw PipelineError.cancelled }
        }
        let scheduler0 = try makeScheduler(for: request)
        let guiding = usesGuidance(request)
        let count = request.imageCount
        let h = request.height / vaeScaleFactor, w = request.width / vaeScaleFactor
        let latentChannels = loopLatentChannels(request)
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
            let texts = (guiding ? negatives : []) + request.prompts
            for text in texts { ids += tokenizer.tokenize(text) }
            let textPool = ThreadPool(threads: pool.threads, precision: precision)
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

        // 2. Denoising: latents from torch's generator, scaled by the initial sigma (or an encoded
        //    init image noised to the first kept timestep: prepareLatents).
        var generator = request.makeGenerator()
        var scheduler = scheduler0
        let start = try prepareLatents(request, scheduler: &scheduler, generator: &generator)
        var latents = start.latents
        if request.imageInput != nil { phases.append(clock.lap("vae encode")) }
        let denoisingStart = monotonicSeconds()
        let guidance = request.guidanceScale
        var steps: [PhaseReport] = []
        var unetActivations: ActivationReport?
        do {  // The UNet, its pool (with the kernels' scratch) and its arena end with this block.
            let unet = try UNet2DConditionModel(config: unetConfig, weights: file.component("unet"),
                                                memory: memoryOptions("unet", maxBatch: memoryPlan.unetBatch(latentPixels: h * w)))
            release("unet")
            let unetPool = ThreadPool(threads: pool.threads, precision: precision)
            let unetBatch = guiding ? 2 * count : count
            let condition = timestepCondition(for: request)
            // The UNet splits the batch itself (memoryPlan.unetBatch(latentPixels:) per call).
            func predict(_ batchInput: [Float], _ t: Float) -> [Float] {
                unet.predictNoise(sample: batchInput, batch: unetBatch, height: h, width: w, timestep: t,
                                  context: context, contextTokens: tokens, timestepCondition: condition,
                                  added: sdxlText?.added, pool: unetPool)
            }
            // Every step makes the same tensors: plan one, run all of them in its arena.
            let arena = activationArena(idlePageEvents: memoryPlan.unetIdlePageEvents) {
                _ = predict([Float](repeating: 0, count: unetBatch * unetConfig.inChannels * h * w), scheduler.timesteps[0])
            }
            defer {
                arena?.close()
                unetActivations = arena?.report
            }
            let loopSteps = scheduler.timesteps.count - start.beginIndex
            for (i, t) in scheduler.timesteps.enumerated() where i >= start.beginIndex {
                let input = start.unetInput(scheduler.scaleModelInput(latents, stepIndex: i),
                                            guidance: guiding, batch: count)
                let prediction = run(in: arena) { predict(input, t) }
                var noise: [Float]
                if guiding {
                    let n = latents.count
                    noise = [Float](repeating: 0, count: n)
                    prediction.withUnsafeBufferPointer { p in
                        for j in 0..<n { noise[j] = p[j] + guidance * (p[n + j] - p[j]) }
                    }
                    if request.guidanceRescale > 0 {
                        Self.rescaleGuidance(&noise, text: prediction[n...], images: count, fraction: request.guidanceRescale)
                    }
                } else {
                    noise = prediction
                }
                latents = scheduler.step(modelOutput: noise, stepIndex: i, sample: latents, generator: &generator)
                latents = start.blendKnownRegion(latents, scheduler: scheduler, stepIndex: i)
                let done = i + 1 - start.beginIndex
                steps.append(clock.lap("step \(done)"))
                try report(Progress(phase: .denoising, step: done, totalSteps: loopSteps,
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
        if request.decoder == .taesd {
            let images = try decodeImagesWithTinyAutoencoder(latents: latents, shape: [count, latentChannels, h, w])
            phases.append(clock.lap("vae decode"))
            return Result(images: images, latents: latents, latentShape: [count, latentChannels, h, w], phases: phases,
                          steps: steps, memoryPlan: memoryPlan)
        }
        let vae = try AutoencoderKL(config: vaeConfig, weights: file.component("vae"), memory: memoryOptions("vae"))
        release("vae")
        let scale = Float(vaeConfig.scalingFactor)
        let scaled = latents.map { $0 / scale }
        let vaePool = ThreadPool(threads: pool.threads, precision: precision)
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

    /// The image size diffusers' pipeline uses when none is given: the UNet's `sample_size`
    /// (64 when the config has none) times the VAE scale (512 for SD 1.x/2.x base, 768 for
    /// the 768-v models).
    public var defaultImageSize: (width: Int, height: Int) {
        let side = (unetConfig.sampleSize ?? 64) * vaeScaleFactor
        return (side, side)
    }

    /// The model's scheduler settings with the request's overrides (prediction type).
    public func schedulerConfig(for request: GenerationRequest) -> SchedulerConfig {
        var config = schedulerConfig
        if let type = request.predictionType {
            config.predictionType = type
            config.storedKeys.insert("prediction_type")
        }
        return config
    }

    /// The scheduler a run uses: the named kind built from the model's config, or with no
    /// kind named the model's own class with every stored setting (`makeModelScheduler`).
    public func makeScheduler(for request: GenerationRequest) throws -> any Scheduler {
        let config = schedulerConfig(for: request)
        if let kind = request.scheduler { return try SDSchedulers.makeScheduler(kind, config: config, steps: request.steps) }
        return try makeModelScheduler(config: config, steps: request.steps)
    }

    /// The kind a run uses, for metadata: the named one or the model's own.
    public func schedulerKind(for request: GenerationRequest) throws -> SchedulerKind {
        try request.scheduler ?? SchedulerKind(modelConfig: schedulerConfig)
    }

    /// Whether a run batches an unconditional half: guidance above 1, and not for an
    /// LCM-distilled UNet, which takes the guidance scale as an embedding instead (diffusers:
    /// `guidance_scale > 1 and unet.config.time_cond_proj_dim is None`).
    public func usesGuidance(_ request: GenerationRequest) -> Bool {
        request.usesGuidance && unetConfig.timeCondProjDim == nil
    }

    /// LCM's guidance embedding of w = guidance − 1 for a UNet with `time_cond_proj_dim`, else nil.
    func timestepCondition(for request: GenerationRequest) -> [Float]? {
        unetConfig.timeCondProjDim.map { guidanceScaleEmbedding(request.guidanceScale - 1, dimension: $0) }
    }

    /// diffusers' `rescale_noise_cfg`: per image, the guided prediction scaled to the text
    /// prediction's standard deviation (unbiased, as torch's `std`), blended with the guided
    /// one: fraction · rescaled + (1 − fraction) · guided. Sums in Double.
    static func rescaleGuidance(_ guided: inout [Float], text: ArraySlice<Float>, images: Int, fraction: Float) {
        let plane = guided.count / images
        guard plane > 1 else { return }
        func std(_ x: ArraySlice<Float>) -> Double {
            let mean = x.reduce(0.0) { $0 + Double($1) } / Double(x.count)
            return (x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(x.count - 1)).squareRoot()
        }
        for image in 0..<images {
            let range = (image * plane)..<((image + 1) * plane)
            let textPart = text[(text.startIndex + range.lowerBound)..<(text.startIndex + range.upperBound)]
            let sdText = Float(std(textPart)), sdGuided = Float(std(guided[range]))
            guard sdGuided > 0 else { continue }
            let factor = sdText / sdGuided
            for j in range { guided[j] = fraction * (guided[j] * factor) + (1 - fraction) * guided[j] }
        }
    }

    /// Drops a component's weight pages (they stay in the page cache): after binding (which
    /// read the biases and norms, and the kernel mapped their neighbours too), and when the
    /// component is done.
    func release(_ component: String) {
        if let range = file.components.first(where: { $0.name == component })?.range { file.file.release(range) }
    }
}

/// Times phases and records each one's peak memory (`PhasePeaks`: the process's own peak
/// is never reset) and how the resident set split into anonymous and file pages at its
/// sampled peak. `stop()` ends the sampling thread.
struct PhaseClock {
    var start = monotonicSeconds()
    let peaks = PhasePeaks()

    mutating func lap(_ name: String) -> StableDiffusionPipeline.PhaseReport {
        let t = monotonicSeconds()
        defer { start = t }
        return .init(name: name, seconds: t - start, memory: peaks.take())
    }

    func stop() { peaks.stop() }
}

public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
