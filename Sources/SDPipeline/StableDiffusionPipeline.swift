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
    /// The opened model file the weights and configs come from.
    public let file: ModelFileReader
    /// The model's CLIP tokenizer.
    public let tokenizer: CLIPTokenizer
    /// The text encoder's config.
    public let textConfig: CLIPTextConfig
    /// The UNet's config.
    public let unetConfig: UNet2DConditionConfig
    /// The VAE's config.
    public let vaeConfig: AutoencoderKLConfig
    /// The model's stored scheduler config.
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

    /// Opens the model file at `modelPath` and reads its configs and tokenizer; weights are
    /// bound later. `threads` sizes the thread pool; `memory` picks the memory plan.
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
        /// The stage of a run; the raw value is its display name.
        public enum Phase: String, Sendable { case textEncoder = "text encoder", denoising, vaeDecode = "vae decode" }
        /// The current phase.
        public let phase: Phase
        /// Denoising steps completed so far.
        public let step: Int
        /// Denoising steps the run has in all.
        public let totalSteps: Int
        /// During denoising, the latents after this step (NCHW, `latentShape`), for previews;
        /// nil in the other phases.
        public var latents: [Float]? = nil
        /// The shape of `latents` (empty when it is nil).
        public var latentShape: [Int] = []
    }

    /// Timing and memory of one phase or step of a run.
    public struct PhaseReport: Sendable {
        /// The phase's name ("text encoder", "step 1", …).
        public let name: String
        /// Wall-clock duration, seconds.
        public let seconds: Double
        /// Resident memory for the phase: its peak (see `PhasePeaks`).
        public let memory: MemoryStats
        /// The phase's activation arena (text encoder, denoising, vae decode; nil for the
        /// steps and when `memoryPlan.planActivations` is off).
        public var activations: ActivationReport? = nil
    }

    /// What `generate` returns: the images, the final latents and per-phase reports.
    public struct Result: Sendable {
        /// The generated images, in batch order.
        public var images: [RGBImage]
        /// Final latents before the VAE: NCHW [images, latent channels, h, w].
        public var latents: [Float]
        /// The shape of `latents`.
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

    /// Runs the whole pipeline with the request's scheduler (`makeScheduler(for:)`).
    /// `progress` is called before each phase and after each denoising step; returning
    /// false cancels the run.
    public func generate(_ request: GenerationRequest, progress: ((Progress) -> Bool)? = nil) throws -> Result {
        try validate(request)
        return try generate(request, scheduler: makeScheduler(for: request), progress: progress)
    }

    /// Runs the whole pipeline with `scheduler`, which may be any `Scheduler` (one written
    /// outside this package too), set up for the run's steps; `request.scheduler` is then
    /// not used. The stages, in order: `encodePrompt`, `prepareLatents`, `denoise`, `decode`.
    /// `progress` is called before each phase and after each denoising step; returning
    /// false cancels the run.
    ///
    /// Each phase first records its model call's tensor allocations (the kernels skipped)
    /// and lays them out in one arena (`ActivationArena`); the text encoding, every UNet
    /// step and every image's VAE decode then run in it, and it is unmapped when the phase
    /// ends.
    public func generate(_ request: GenerationRequest, scheduler: any Scheduler,
                         progress: ((Progress) -> Bool)? = nil) throws -> Result {
        try validate(request)
        if request.decoder == .taesd && !hasTinyAutoencoder {
            throw PipelineError.invalidRequest("--vae taesd: this model file has no TAESD (convert it with --taesd DIR|FILE)")
        }
        var phases: [PhaseReport] = []
        var clock = PhaseClock()
        defer { clock.stop() }
        let report = Self.reporter(progress)

        // 1. Text.
        let text = try encodePrompt(request, clock: &clock, report: report)
        phases.append(text.phase)

        // 2. Denoising: latents from torch's generator, scaled by the initial sigma (or an encoded
        //    init image noised to the first kept timestep: prepareLatents).
        var generator = request.makeGenerator()
        var scheduler = scheduler
        let start = try prepareLatents(request, scheduler: &scheduler, generator: &generator)
        if request.imageInput != nil { phases.append(clock.lap("vae encode")) }
        let denoised = try denoise(request, embeddings: text.embeddings, start: start, scheduler: &scheduler,
                                   generator: &generator, clock: &clock, report: report)
        phases.append(denoised.phase)

        // 3. Decode.
        let decoded = try decode(latents: denoised.latents, shape: denoised.latentShape, request: request,
                                 clock: &clock, report: report)
        phases.append(decoded.phase)
        return Result(images: decoded.images, latents: denoised.latents, latentShape: denoised.latentShape,
                      phases: phases, steps: denoised.steps, memoryPlan: memoryPlan)
    }

    /// The image size diffusers' pipeline uses when none is given: the UNet's `sample_size`
    /// (64 when the config has none) times the VAE scale (512 for SD 1.x/2.x base, 768 for
    /// the 768-v models).
    public var defaultImageSize: (width: Int, height: Int) {
        let side = (unetConfig.sampleSize ?? 64) * vaeScaleFactor
        return (side, side)
    }

    /// The model's scheduler settings with the request's overrides (prediction type), for an
    /// SD 1.x/2.x model as diffusers' StableDiffusionPipeline leaves them (steps_offset 1,
    /// clip_sample false; see `SchedulerConfig.adjustedAsStableDiffusionPipeline`).
    public func schedulerConfig(for request: GenerationRequest) -> SchedulerConfig {
        var config = isSDXL ? schedulerConfig
            : schedulerConfig.adjustedAsStableDiffusionPipeline(modelScheduler: request.scheduler == nil)
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

/// Seconds on the monotonic clock (CLOCK_MONOTONIC), for measuring durations.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
