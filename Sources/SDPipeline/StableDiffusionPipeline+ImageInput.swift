import SDFormat
import SDKernels
import SDModels
import SDSchedulers

/// The stages img2img and inpainting add to text-to-image, each usable alone: the VAE
/// encoder, the image as the encoder's input, and the loop's start (`prepareLatents`).
extension StableDiffusionPipeline {
    /// The VAE's encoder, bound to the model file's `vae.encoder.*` and `vae.quant_conv.*`.
    public func makeEncoder() throws -> AutoencoderKLEncoder {
        do {
            return try AutoencoderKLEncoder(config: vaeConfig, weights: file.component("vae"), memory: memoryOptions("vae"))
        } catch {
            throw FormatError(file.sourceName, "the VAE encoder (needed for an init image) cannot be used: \(error)")
        }
    }

    /// An 8-bit RGB image as the VAE encoder's input: NCHW [1, 3, H, W] in [-1, 1], each
    /// value v / 255 · 2 − 1 in float32 (diffusers' VaeImageProcessor with do_normalize).
    public static func imageTensor(_ image: RGBImage) -> [Float] {
        let plane = image.width * image.height
        var values = [Float](repeating: 0, count: 3 * plane)
        for p in 0..<plane {
            for c in 0..<3 {
                let unit = Float(image.pixels[3 * p + c]) / 255
                values[c * plane + p] = 2 * unit - 1
            }
        }
        return values
    }

    /// The VAE encoder's latent distribution for one image (sized to a multiple of the VAE's
    /// factor): mean and std, NCHW [1, L, H/f, W/f].
    public func encodeImage(_ image: RGBImage) throws -> (mean: [Float], std: [Float]) {
        let f = vaeScaleFactor
        guard image.width % f == 0, image.height % f == 0 else {
            throw PipelineError.invalidRequest("the image to encode must be a multiple of \(f) pixels on each side")
        }
        let encoder = try makeEncoder()
        defer { release("vae") }
        return encoder.encode(image: Self.imageTensor(image), batch: 1, height: image.height, width: image.width,
                              pool: ThreadPool(threads: pool.threads))
    }

    /// Latent channels the denoising loop carries: the UNet's input channels for text-to-image
    /// and img2img, the VAE's latent channels for inpainting (a 9-channel UNet takes the
    /// mask and masked-image latents besides).
    func loopLatentChannels(_ request: GenerationRequest) -> Int {
        request.imageInput?.mask != nil ? vaeConfig.latentChannels : unetConfig.inChannels
    }

    /// The denoising loop's start, drawing from `generator` in diffusers' order:
    /// - text-to-image: noise × the scheduler's initial sigma;
    /// - img2img (StableDiffusionImg2ImgPipeline): the init image encoded and sampled
    ///   (one draw per image with per-image seeds, else one draw repeated), scaled by
    ///   scaling_factor, then noise added by the scheduler at the first kept timestep;
    /// - inpainting (StableDiffusionInpaintPipeline): the image latents (4-channel UNet, or
    ///   strength < 1), noise, (noise × initial sigma at strength 1), the masked image's
    ///   latents, and the mask at latent size.
    /// Sets the scheduler's begin index (`ImageInput.beginIndex`).
    public func prepareLatents(_ request: GenerationRequest, scheduler: inout any Scheduler,
                               generator: inout TorchGenerator) throws -> DenoisingStart {
        let count = request.imageCount
        let h = request.height / vaeScaleFactor, w = request.width / vaeScaleFactor
        guard let input = request.imageInput else {
            var latents = generator.randn(count: count * unetConfig.inChannels * h * w)
            let sigma = scheduler.initNoiseSigma
            if sigma != 1 { for i in latents.indices { latents[i] *= sigma } }
            return DenoisingStart(latents: latents, latentPixels: h * w)
        }
        try input.validate(steps: request.steps)
        let channels = vaeConfig.latentChannels, plane = channels * h * w
        let inpaintChannels = 2 * channels + 1
        if input.mask == nil && unetConfig.inChannels != channels {
            throw PipelineError.invalidRequest("this model's UNet takes \(unetConfig.inChannels) input channels (an inpainting model): give a mask")
        }
        if input.mask != nil && unetConfig.inChannels != channels && unetConfig.inChannels != inpaintChannels {
            throw PipelineError.invalidRequest("inpainting needs a UNet with \(channels) or \(inpaintChannels) input channels, this one has \(unetConfig.inChannels)")
        }
        let begin = ImageInput.beginIndex(steps: request.steps, strength: input.strength)
        scheduler.setBeginIndex(begin)
        let image = input.image.resizedLanczos(width: request.width, height: request.height)
        var encoded: (mean: [Float], std: [Float])?
        func imageDistribution() throws -> (mean: [Float], std: [Float]) {
            if let encoded { return encoded }
            encoded = try encodeImage(image)
            return encoded!
        }
        func repeated(_ x: [Float]) -> [Float] { Array((0..<count).map { _ in x }.joined()) }

        guard let mask = input.mask else {
            let (mean, std) = try imageDistribution()
            let encoder = try makeEncoder()
            let perImage = request.seedMode == .perImage && count > 1
            let sampleNoise = generator.randn(count: (perImage ? count : 1) * plane)
            let imageLatents = perImage
                ? encoder.scaledSample(mean: repeated(mean), std: repeated(std), noise: sampleNoise)
                : repeated(encoder.scaledSample(mean: mean, std: std, noise: sampleNoise))
            let noise = generator.randn(count: count * plane)
            return DenoisingStart(latents: scheduler.addNoise(original: imageLatents, noise: noise, stepIndex: begin),
                                  beginIndex: begin, latentPixels: h * w)
        }

        let fourChannel = unetConfig.inChannels == channels
        let strengthIsMax = input.strength == 1
        let encoder = try makeEncoder()
        var imageLatents: [Float]?
        if fourChannel || !strengthIsMax {
            let (mean, std) = try imageDistribution()
            imageLatents = repeated(encoder.scaledSample(mean: mean, std: std, noise: generator.randnFromFirstImage(count: plane)))
        }
        let noise = generator.randn(count: count * plane)
        var latents: [Float]
        if strengthIsMax {
            let sigma = scheduler.initNoiseSigma
            latents = noise.map { $0 * sigma }
        } else {
            latents = scheduler.addNoise(original: imageLatents!, noise: noise, stepIndex: begin)
        }

        // The mask: PIL's convert("L"), Lanczos to the size, binarised at 0.5 (1 = repaint).
        let luma = LanczosResampler.resize(mask.luma(), width: mask.width, height: mask.height, channels: 1,
                                           outWidth: request.width, outHeight: request.height)
        let repaint = luma.map { Float($0) / 255 >= 0.5 }
        let pixels = Self.imageTensor(image), imagePlane = request.width * request.height
        let maskedPixels = pixels.indices.map { repaint[$0 % imagePlane] ? 0 : pixels[$0] }
        // diffusers encodes the masked image for both UNet kinds; a 4-channel UNet does not
        // use it, so only its draw is made, which keeps the generator where diffusers has it.
        let maskedNoise = generator.randnFromFirstImage(count: plane)
        var maskedImageLatents: [Float]?
        if !fourChannel {
            let (mean, std) = encoder.encode(image: maskedPixels, batch: 1, height: request.height, width: request.width,
                                             pool: ThreadPool(threads: pool.threads))
            release("vae")
            maskedImageLatents = repeated(encoder.scaledSample(mean: mean, std: std, noise: maskedNoise))
        }
        // torch.nn.functional.interpolate(mode="nearest") to the latent size.
        var latentMask = [Float](repeating: 0, count: h * w)
        let sy = Float(request.height) / Float(h), sx = Float(request.width) / Float(w)
        for y in 0..<h {
            let sourceY = min(Int((Float(y) * sy).rounded(.down)), request.height - 1)
            for x in 0..<w {
                let sourceX = min(Int((Float(x) * sx).rounded(.down)), request.width - 1)
                latentMask[y * w + x] = repaint[sourceY * request.width + sourceX] ? 1 : 0
            }
        }
        return DenoisingStart(latents: latents, beginIndex: begin, mask: repeated(latentMask),
                              maskedImageLatents: maskedImageLatents,
                              imageLatents: fourChannel ? imageLatents : nil, noise: fourChannel ? noise : nil,
                              latentPixels: h * w)
    }
}
