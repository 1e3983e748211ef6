import SDFormat
import SDKernels
import SDModels
import SDSchedulers

/// The text conditioning of one request, as `encodePrompt` makes it and `denoise` takes it.
public struct PromptEmbeddings: Sendable {
    /// The UNet's cross-attention context [samples, tokens, width], in the UNet batch's order:
    /// when `guided`, every image's negative prompt first, then every image's prompt (each
    /// prompt repeated `imagesPerPrompt` times, as diffusers does).
    public var context: [Float]
    /// Tokens per sample (the tokenizer's maximum length).
    public var tokens: Int
    /// Whether `context` carries the unconditional half for classifier-free guidance.
    public var guided: Bool
    /// SDXL's pooled text embeddings and size ids (`text_time`); nil for SD 1.x/2.x.
    public var added: UNetAddedConditions?

    /// Wraps an already-computed context; see the properties for its layout.
    public init(context: [Float], tokens: Int, guided: Bool, added: UNetAddedConditions? = nil) {
        self.context = context
        self.tokens = tokens
        self.guided = guided
        self.added = added
    }
}

/// What `denoise` returns: the final latents and the loop's timing and memory.
public struct DenoisedLatents: Sendable {
    /// NCHW [images, latent channels, h, w], before the VAE.
    public var latents: [Float]
    /// The shape of `latents`: [images, latent channels, h, w].
    public var latentShape: [Int]
    /// One per denoising step ("step 1", …); the first includes binding the UNet.
    public var steps: [StableDiffusionPipeline.PhaseReport]
    /// The whole loop ("denoising"); its peak is the steps' maximum, its arena the UNet's.
    public var phase: StableDiffusionPipeline.PhaseReport
}

/// The built-in pipeline's stages, each usable alone: `encodePrompt`, `prepareLatents`
/// (StableDiffusionPipeline+ImageInput.swift), `denoise` and `decode`. `generate` runs them
/// in that order; a caller may run them itself, e.g. to reuse one prompt's embeddings for
/// several seeds or to bring its own scheduler.
extension StableDiffusionPipeline {
    /// Calls `progress` and turns its "stop" (false) into `PipelineError.cancelled`.
    static func reporter(_ progress: ((Progress) -> Bool)?) -> (Progress) throws -> Void {
        { p in if let progress, !progress(p) { throw PipelineError.cancelled } }
    }

    /// The checks every stage needs before it touches a model: the request's own and the
    /// image size against the VAE's factor.
    func validate(_ request: GenerationRequest) throws {
        try request.validate()
        guard request.width % vaeScaleFactor == 0, request.height % vaeScaleFactor == 0 else {
            throw PipelineError.invalidRequest("width and height must be multiples of \(vaeScaleFactor) for this model")
        }
    }

    /// The latent shape a request's loop carries: [images, channels, h, w].
    func latentShape(_ request: GenerationRequest) -> [Int] {
        [request.imageCount, loopLatentChannels(request), request.height / vaeScaleFactor, request.width / vaeScaleFactor]
    }

    // MARK: Text

    /// Encodes the request's prompts (and negative prompts when the run guides) with the
    /// model's text encoder(s). `progress` is called once before (phase `.textEncoder`);
    /// returning false cancels with `PipelineError.cancelled`.
    public func encodePrompt(_ request: GenerationRequest, progress: ((Progress) -> Bool)? = nil) throws -> PromptEmbeddings {
        try validate(request)
        var clock = PhaseClock()
        defer { clock.stop() }
        return try encodePrompt(request, clock: &clock, report: Self.reporter(progress)).embeddings
    }

    /// `encodePrompt` on the run's clock, with the phase's report ("text encoder").
    func encodePrompt(_ request: GenerationRequest, clock: inout PhaseClock,
                      report: (Progress) throws -> Void) throws -> (embeddings: PromptEmbeddings, phase: PhaseReport) {
        // Prompts (and the negative prompt when guiding) in one batch of [negatives…, prompts…],
        // each repeated imagesPerPrompt times as diffusers does.
        try report(Progress(phase: .textEncoder, step: 0, totalSteps: request.steps))
        let guiding = usesGuidance(request)
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
        return (PromptEmbeddings(context: context, tokens: tokenizer.maxLength, guided: guiding, added: sdxlText?.added),
                textPhase)
    }

    // MARK: Denoising

    /// The denoising loop from `start` (`prepareLatents`) over `scheduler`'s timesteps, with
    /// classifier-free guidance (and guidance rescale) when the embeddings carry the
    /// unconditional half, and the known region blended back for a 4-channel UNet's inpainting.
    /// `scheduler` may be any `Scheduler`, including one written outside this package; it
    /// must be the one `prepareLatents` was given. `generator` feeds ancestral samplers.
    /// `progress` is called after every step with the step's latents (phase `.denoising`);
    /// returning false cancels with `PipelineError.cancelled`.
    public func denoise(_ request: GenerationRequest, embeddings: PromptEmbeddings, start: DenoisingStart,
                        scheduler: inout any Scheduler, generator: inout TorchGenerator,
                        progress: ((Progress) -> Bool)? = nil) throws -> DenoisedLatents {
        try validate(request)
        var clock = PhaseClock()
        defer { clock.stop() }
        return try denoise(request, embeddings: embeddings, start: start, scheduler: &scheduler, generator: &generator,
                           clock: &clock, report: Self.reporter(progress))
    }

    /// `denoise` on the run's clock: each step is one lap of it.
    func denoise(_ request: GenerationRequest, embeddings: PromptEmbeddings, start: DenoisingStart,
                 scheduler: inout any Scheduler, generator: inout TorchGenerator,
                 clock: inout PhaseClock, report: (Progress) throws -> Void) throws -> DenoisedLatents {
        let shape = latentShape(request)
        let count = shape[0], h = shape[2], w = shape[3]
        let guiding = usesGuidance(request)
        let tokens = embeddings.tokens
        // Stages run alone can be handed parts made for another request: refuse them here
        // rather than let a model read past an array.
        guard embeddings.guided == guiding,
              embeddings.context.count == (guiding ? 2 : 1) * count * tokens * unetConfig.crossAttentionDim else {
            throw PipelineError.invalidRequest("the prompt embeddings were made for another request (batch, guidance or model differ)")
        }
        guard start.latents.count == shape.reduce(1, *) else {
            throw PipelineError.invalidRequest("the start latents have \(start.latents.count) values, the request needs \(shape.reduce(1, *))")
        }
        guard !scheduler.timesteps.isEmpty, start.beginIndex >= 0, start.beginIndex < scheduler.timesteps.count else {
            throw PipelineError.invalidRequest("the scheduler has no timestep at the start's begin index \(start.beginIndex)")
        }
        var latents = start.latents
        let denoisingStart = monotonicSeconds()
        let guidance = request.guidanceScale
        var steps: [PhaseReport] = []
        var unetActivations: ActivationReport?
        do {  // The UNet, its pool (with the kernels' scratch) and its arena end with this block.
            let unet = try UNet2DConditionModel(config: unetConfig, weights: file.component("unet"),
                                                memory: memoryOptions("unet", maxBatch: memoryPlan.unetBatch(latentPixels: h * w)))
            release("unet")
            let unetPool = ThreadPool(threads: pool.threads, precision: precision, scratch: memoryPlan.kernelScratch)
            let unetBatch = guiding ? 2 * count : count
            let condition = timestepCondition(for: request)
            // The UNet splits the batch itself (memoryPlan.unetBatch(latentPixels:) per call).
            func predict(_ batchInput: [Float], _ t: Float) -> [Float] {
                unet.predictNoise(sample: batchInput, batch: unetBatch, height: h, width: w, timestep: t,
                                  context: embeddings.context, contextTokens: tokens, timestepCondition: condition,
                                  added: embeddings.added, pool: unetPool)
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
                                    latents: latents, latentShape: shape))
            }
        }
        release("unet")
        let last = clock.lap("unet release")
        let phase = PhaseReport(
            name: "denoising", seconds: monotonicSeconds() - denoisingStart,
            memory: (steps + [last]).max { $0.memory.peakResident < $1.memory.peakResident }?.memory ?? last.memory,
            activations: unetActivations)
        return DenoisedLatents(latents: latents, latentShape: shape, steps: steps, phase: phase)
    }

    // MARK: Decoding

    /// The final latents (NCHW `shape`, as `denoise` returns them) to 8-bit images of the
    /// request's size, through the model's VAE or, with `request.decoder == .taesd`, its TAESD.
    /// `progress` is called once before (phase `.vaeDecode`); returning false cancels with
    /// `PipelineError.cancelled`.
    public func decode(latents: [Float], shape: [Int], request: GenerationRequest,
                       progress: ((Progress) -> Bool)? = nil) throws -> [RGBImage] {
        try validate(request)
        var clock = PhaseClock()
        defer { clock.stop() }
        return try decode(latents: latents, shape: shape, request: request, clock: &clock,
                          report: Self.reporter(progress)).images
    }

    /// `decode` on the run's clock, with the phase's report ("vae decode").
    func decode(latents: [Float], shape: [Int], request: GenerationRequest, clock: inout PhaseClock,
                report: (Progress) throws -> Void) throws -> (images: [RGBImage], phase: PhaseReport) {
        guard shape.count == 4, shape.allSatisfy({ $0 > 0 }), shape.reduce(1, *) == latents.count,
              shape[2] * vaeScaleFactor == request.height, shape[3] * vaeScaleFactor == request.width else {
            throw PipelineError.invalidRequest("latents of shape \(shape) (\(latents.count) values) do not decode to \(request.width)×\(request.height)")
        }
        if request.decoder == .taesd && !hasTinyAutoencoder {
            throw PipelineError.invalidRequest("--vae taesd: this model file has no TAESD (convert it with --taesd DIR|FILE)")
        }
        guard request.decoder == .taesd || shape[1] == vaeConfig.latentChannels else {
            throw PipelineError.invalidRequest("the VAE takes \(vaeConfig.latentChannels) latent channels, the latents have \(shape[1])")
        }
        // Latents / scaling_factor through the VAE, then to 8 bits.
        try report(Progress(phase: .vaeDecode, step: request.steps, totalSteps: request.steps))
        if request.decoder == .taesd {
            let (images, activations) = try decodeImagesWithTinyAutoencoder(latents: latents, shape: shape)
            var phase = clock.lap("vae decode")
            phase.activations = activations
            return (images, phase)
        }
        let count = shape[0], h = shape[2], w = shape[3]
        let vae = try AutoencoderKL(config: vaeConfig, weights: file.component("vae"), memory: memoryOptions("vae"))
        release("vae")
        let scale = Float(vaeConfig.scalingFactor)
        let scaled = latents.map { $0 / scale }
        let vaePool = ThreadPool(threads: pool.threads, precision: precision, scratch: memoryPlan.kernelScratch)
        var images: [RGBImage] = []
        let plane = shape[1] * h * w
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
        return (images, vaePhase)
    }
}
