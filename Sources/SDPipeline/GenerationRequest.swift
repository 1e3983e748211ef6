import SDSchedulers

/// What to generate: the options of diffusers' StableDiffusionPipeline for text-to-image.
public struct GenerationRequest {
    /// One or more prompts, generated as one batch.
    public var prompts: [String]
    /// None (the empty prompt, diffusers' default), one for every prompt, or one per prompt.
    public var negativePrompts: [String]
    /// Denoising steps (diffusers' `num_inference_steps`), 1–1000.
    public var steps: Int = 50
    /// Classifier-free guidance scale, 0–100; guidance runs only above 1.
    public var guidanceScale: Float = 7.5
    /// The noise seed; see `seedMode` for how several images use it.
    public var seed: UInt64 = 0
    /// Image width in pixels, a positive multiple of 8 up to `maxSide`.
    public var width: Int = 512
    /// Image height in pixels, a positive multiple of 8 up to `maxSide`.
    public var height: Int = 512
    /// Images generated for each prompt (diffusers' `num_images_per_prompt`).
    public var imagesPerPrompt: Int = 1
    /// How several images get their noise; see `SeedMode`.
    public var seedMode: SeedMode = .perImage
    /// nil: the model's own scheduler, built from its stored config with nothing forced, as
    /// diffusers' pipeline loads it (Euler trailing for SD-Turbo, DDIM for SD 2.1, PNDM for SD 1.5).
    public var scheduler: SchedulerKind? = nil
    /// diffusers' `guidance_rescale` (Lin et al. 2023, §3.4): the guided prediction is rescaled
    /// towards the text prediction's standard deviation by this fraction; 0 leaves it alone.
    public var guidanceRescale: Float = 0
    /// Overrides the model's stored `prediction_type` ("epsilon" or "v_prediction"); nil keeps it.
    public var predictionType: String? = nil
    /// The autoencoder for the final images: the full VAE, or the file's TAESD.
    public var decoder: ImageDecoder = .full
    /// An init image (img2img) and mask (inpainting); nil for text-to-image.
    public var imageInput: ImageInput? = nil
    /// SDXL's original size, crop and target size (other models refuse them).
    public var sizeConditioning = SizeConditioning()

    /// A request with diffusers' defaults for everything but the prompts.
    public init(prompts: [String], negativePrompts: [String] = []) {
        self.prompts = prompts
        self.negativePrompts = negativePrompts
    }

    /// The negative prompt that goes with prompt i.
    public func negativePrompt(for i: Int) -> String {
        switch negativePrompts.count {
        case 0: return ""
        case 1: return negativePrompts[0]
        default: return negativePrompts[i]
        }
    }

    /// The largest side accepted: 4096 px is 16.8 megapixels, beyond any SD 1.x use.
    public static let maxSide = 4096
    /// Images in one run (prompts × images per prompt).
    public static let maxImages = 64

    /// Images in the run: prompts × images per prompt.
    public var imageCount: Int { prompts.count * imagesPerPrompt }

    /// How the images of one run draw their noise.
    public enum SeedMode: String, CaseIterable, Sendable {
        /// Image i (in batch order: prompt by prompt, images per prompt within) draws from
        /// its own generator seeded with seed + i, so its metadata's seed remakes it alone:
        /// AUTOMATIC1111's convention, and diffusers' with a list of generators.
        case perImage = "per-image"
        /// One generator for the whole batch: diffusers' `generator=torch.Generator().manual_seed(seed)`.
        /// Image i is then remade only by the same batch (A1111's "Batch size"/"Batch pos").
        case batch
    }

    /// The seed recorded for image i: its own seed (per-image), or the batch's.
    public func seed(ofImage i: Int) -> UInt64 {
        seedMode == .perImage ? seed &+ UInt64(i) : seed
    }

    /// The generator the run draws its noise from.
    public func makeGenerator() -> TorchGenerator {
        switch seedMode {
        case .perImage: return TorchGenerator(seeds: (0..<imageCount).map(seed(ofImage:)))
        case .batch: return TorchGenerator(seed: seed)
        }
    }

    /// Checks every number before anything is allocated from it.
    public func validate() throws {
        func fail(_ message: String) -> PipelineError { .invalidRequest(message) }
        guard !prompts.isEmpty else { throw fail("at least one prompt is needed") }
        guard negativePrompts.count <= 1 || negativePrompts.count == prompts.count else {
            throw fail("give one negative prompt, or one per prompt (\(prompts.count)), not \(negativePrompts.count)")
        }
        for (name, v) in [("width", width), ("height", height)] {
            guard v > 0, v % 8 == 0 else { throw fail("\(name) must be a positive multiple of 8 (got \(v))") }
            guard v <= Self.maxSide else { throw fail("\(name) must be at most \(Self.maxSide) (got \(v))") }
        }
        guard steps >= 1, steps <= 1000 else { throw fail("steps must be between 1 and 1000 (got \(steps))") }
        guard imagesPerPrompt >= 1 else { throw fail("images per prompt must be at least 1 (got \(imagesPerPrompt))") }
        guard imageCount <= Self.maxImages else { throw fail("at most \(Self.maxImages) images per run (got \(imageCount))") }
        guard guidanceScale.isFinite, guidanceScale >= 0, guidanceScale <= 100 else {
            throw fail("guidance scale must be between 0 and 100 (got \(guidanceScale))")
        }
        guard guidanceRescale.isFinite, guidanceRescale >= 0, guidanceRescale <= 1 else {
            throw fail("guidance rescale must be between 0 and 1 (got \(guidanceRescale))")
        }
        if let predictionType, !Self.predictionTypes.contains(predictionType) {
            throw fail("prediction type must be \(Self.predictionTypes.joined(separator: " or ")) (got \(predictionType))")
        }
        try imageInput?.validate(steps: steps)
    }

    /// The prediction types a model may be run with.
    public static let predictionTypes = ["epsilon", "v_prediction"]

    /// Classifier-free guidance runs only when it changes the result (diffusers: scale > 1).
    public var usesGuidance: Bool { guidanceScale > 1 }
}

/// Why a run did not produce images: a rejected request, or cancellation.
public enum PipelineError: Error, CustomStringConvertible, Equatable {
    case invalidRequest(String)
    case cancelled

    /// The invalid request's message, or "cancelled".
    public var description: String {
        switch self {
        case .invalidRequest(let m): return m
        case .cancelled: return "cancelled"
        }
    }
}

/// Which autoencoder turns the final latents into pixels (`generate --vae`). Declared with
/// the request, not with the TAESD code, so that the request compiles without the models
/// (the `http` fuzz target builds the server's body decoding from these files alone).
public enum ImageDecoder: String, CaseIterable, Sendable {
    /// The model's AutoencoderKL: the reference image.
    case full
    /// TAESD (diffusers' AutoencoderTiny), stored by `convert --taesd`: ~100× cheaper, softer.
    case taesd
}
