import SDKernels
import SDModels
import SDSchedulers

/// An init image, and optionally a mask: img2img (diffusers' StableDiffusionImg2ImgPipeline)
/// or inpainting (StableDiffusionInpaintPipeline). Both are resized to the request's size
/// with Pillow's Lanczos filter, as diffusers' VaeImageProcessor does.
public struct ImageInput: Sendable {
    /// The init image, any size.
    public var image: RGBImage
    /// White (≥ 50 % grey after PIL's convert("L")) = repaint, black = keep. Must have the
    /// init image's size (diffusers would stretch it; a mask of another size is refused).
    public var mask: RGBImage?
    /// How far the image is noised: the loop runs the last ⌊steps · strength⌋ timesteps.
    /// diffusers' defaults: 0.8 for img2img, 1 for inpainting.
    public var strength: Double

    /// An init image with an optional mask; `strength` defaults to 0.8 without a mask, 1 with one.
    public init(image: RGBImage, mask: RGBImage? = nil, strength: Double? = nil) {
        self.image = image
        self.mask = mask
        self.strength = strength ?? (mask == nil ? 0.8 : 1.0)
    }

    /// Throws `PipelineError.invalidRequest` unless strength is in (0, 1], leaves at least one
    /// denoising step for `steps`, and the mask (if any) has the init image's size.
    public func validate(steps: Int) throws {
        func fail(_ message: String) -> PipelineError { .invalidRequest(message) }
        guard strength.isFinite, strength > 0, strength <= 1 else {
            throw fail("strength must be greater than 0 and at most 1 (got \(strength))")
        }
        guard Self.beginIndex(steps: steps, strength: strength) < steps else {
            throw fail("strength \(strength) × \(steps) steps leaves no denoising step: raise --strength or --steps")
        }
        if let mask, mask.width != image.width || mask.height != image.height {
            throw fail("the mask is \(mask.width)×\(mask.height) but the init image is \(image.width)×\(image.height): they must have the same size")
        }
    }

    /// diffusers' get_timesteps: init_timestep = min(int(steps · strength), steps) and the
    /// loop starts at index steps − init_timestep (scheduler order 1 for every scheduler here).
    public static func beginIndex(steps: Int, strength: Double) -> Int {
        let initTimestep = min(Int(Double(steps) * strength), steps)
        return max(steps - initTimestep, 0)
    }

    /// The generation size when the user gives none: the image's, rounded down to a multiple
    /// of `multiple` (diffusers' VaeImageProcessor.get_default_height_width).
    public func defaultSize(multiple: Int) -> (width: Int, height: Int) {
        (image.width - image.width % multiple, image.height - image.height % multiple)
    }
}

extension GenerationRequest {
    /// Denoising steps the loop runs: all of them, or the last ⌊steps · strength⌋ with an init image.
    public var loopSteps: Int {
        imageInput.map { steps - ImageInput.beginIndex(steps: steps, strength: $0.strength) } ?? steps
    }
}

/// The size a run generates at: the flags when given, else the init image's (rounded down
/// to a multiple of 8), else the model's default. One flag alone keeps the other's default.
public func resolveGenerationSize(width: Int?, height: Int?, initImage: RGBImage?,
                                  modelDefault: (width: Int, height: Int)) -> (width: Int, height: Int) {
    var size = modelDefault
    if let initImage {
        size = (initImage.width - initImage.width % 8, initImage.height - initImage.height % 8)
    }
    return (width ?? size.width, height ?? size.height)
}

/// How the denoising loop starts and what it carries for img2img and inpainting: the
/// latents, the first step, and for inpainting the mask (and masked-image latents for a
/// 9-channel UNet, or the image latents and noise for blending with a 4-channel one).
public struct DenoisingStart {
    /// The latents the loop starts from, NCHW [B, L, h, w].
    public var latents: [Float]
    /// The first index into the scheduler's timesteps (0 for text-to-image).
    public var beginIndex: Int = 0
    /// Latent-size mask [B, 1, h, w] (1 = repaint), for inpainting.
    public var mask: [Float]? = nil
    /// Latents of the masked image [B, L, h, w], fed to a 9-channel UNet.
    public var maskedImageLatents: [Float]? = nil
    /// For a 4-channel UNet's inpainting: the clean image latents and the noise drawn for them.
    public var imageLatents: [Float]? = nil
    /// The noise drawn for `imageLatents` (same layout), used to re-noise them at each step.
    public var noise: [Float]? = nil

    /// The UNet's input for one step: `scaled` (the scheduler-scaled latents), doubled for
    /// guidance, with mask and masked-image latents appended per sample for a 9-channel UNet.
    func unetInput(_ scaled: [Float], guidance: Bool, batch: Int) -> [Float] {
        guard let mask, let maskedImageLatents else { return guidance ? scaled + scaled : scaled }
        let latentPlane = scaled.count / batch, maskPlane = mask.count / batch
        var input: [Float] = []
        input.reserveCapacity((guidance ? 2 : 1) * (scaled.count + mask.count + maskedImageLatents.count))
        for _ in 0..<(guidance ? 2 : 1) {
            for b in 0..<batch {
                input += scaled[(b * latentPlane)..<((b + 1) * latentPlane)]
                input += mask[(b * maskPlane)..<((b + 1) * maskPlane)]
                input += maskedImageLatents[(b * latentPlane)..<((b + 1) * latentPlane)]
            }
        }
        return input
    }

    /// A 4-channel UNet's inpainting after step `stepIndex`: outside the mask, the image
    /// latents noised to the next timestep's level (clean after the last step), as diffusers'
    /// StableDiffusionInpaintPipeline does for 4-channel UNets: (1 − m) · known + m · latents.
    func blendKnownRegion(_ latents: [Float], scheduler: any Scheduler, stepIndex: Int) -> [Float] {
        guard maskedImageLatents == nil, let mask, let imageLatents, let noise else { return latents }
        let known = stepIndex + 1 < scheduler.timesteps.count
            ? scheduler.addNoise(original: imageLatents, noise: noise, stepIndex: stepIndex + 1) : imageLatents
        let pixels = latentPixels, channels = latents.count / mask.count
        var out = latents
        for i in latents.indices {
            let m = mask[i / (channels * pixels) * pixels + i % pixels]
            let keep = (1 - m) * known[i], repaint = m * latents[i]
            out[i] = keep + repaint
        }
        return out
    }

    /// h · w of the latents.
    public var latentPixels: Int = 0
}
