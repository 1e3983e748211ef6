import SDFormat
import SDKernels
import SDModels

extension StableDiffusionPipeline {
    /// The model file's TAESD component name.
    static let tinyAutoencoderComponent = "taesd"

    /// Whether the model file carries a TAESD (`convert --taesd`).
    public var hasTinyAutoencoder: Bool { file.components.contains { $0.name == Self.tinyAutoencoderComponent } }

    /// Binds the stored TAESD (cheap: a few dozen tensors, biases copied).
    public func tinyAutoencoder(memory: MemoryOptions? = nil) throws -> AutoencoderTiny {
        guard hasTinyAutoencoder else {
            throw PipelineError.invalidRequest("this model file has no TAESD (convert it with --taesd DIR|FILE)")
        }
        let config: AutoencoderTinyConfig
        do { config = try AutoencoderTinyConfig(json: file.config(Self.tinyAutoencoderComponent)) } catch let e as FormatError {
            throw e
        } catch {
            throw FormatError(file.sourceName, "\(error)")
        }
        return try AutoencoderTiny(config: config, weights: file.component(Self.tinyAutoencoderComponent),
                                   memory: memory ?? memoryOptions(Self.tinyAutoencoderComponent))
    }

    /// Image `index` of NCHW `latents` ([n, C, h, w], as the UNet makes them) decoded by TAESD
    /// at full size; nil when the shape does not fit.
    public func decodeWithTinyAutoencoder(_ taesd: AutoencoderTiny, latents: [Float], shape: [Int], index: Int,
                                          pool: ThreadPool) -> RGBImage? {
        guard shape.count == 4, shape[1] == taesd.config.latentChannels, shape.allSatisfy({ $0 > 0 }),
              index >= 0, index < shape[0], shape.reduce(1, *) == latents.count else { return nil }
        let plane = shape[1] * shape[2] * shape[3]
        let scale = Float(taesd.config.scalingFactor)
        let one = latents[(index * plane)..<((index + 1) * plane)].map { $0 / scale }
        let decoded = taesd.decode(latents: one, batch: 1, height: shape[2], width: shape[3], pool: pool)
        let f = taesd.upsamplingFactor
        return decoded.withUnsafeBufferPointer { RGBImage(decoded: $0, width: f * shape[3], height: f * shape[2]) }
    }

    /// A live preview of image `index` of a denoising step's latents: TAESD at full size when the
    /// model file has one, else `LatentPreview`'s cheap latent-size picture. For the CLI's
    /// `--preview` and the server's progress image; call it between steps (from `progress`).
    public func previewImage(latents: [Float], shape: [Int], index: Int = 0) -> RGBImage? {
        if hasTinyAutoencoder, let taesd = try? tinyAutoencoder(memory: MemoryOptions()) {
            return decodeWithTinyAutoencoder(taesd, latents: latents, shape: shape, index: index, pool: pool)
        }
        return LatentPreview.image(latents: latents, shape: shape, index: index)
    }

    /// The final images through TAESD (`--vae taesd`), one at a time, and the decode's arena.
    func decodeImagesWithTinyAutoencoder(latents: [Float], shape: [Int]) throws -> ([RGBImage], ActivationReport?) {
        let taesd = try tinyAutoencoder()
        release(Self.tinyAutoencoderComponent)
        // The run's operand precision, as the full VAE decodes with it.
        let taesdPool = ThreadPool(threads: pool.threads, precision: precision)
        defer { release(Self.tinyAutoencoderComponent) }
        // Every image, band by band, makes the same tensors: one plan, one arena (as the VAE),
        // so the bands reuse the same pages instead of mapping and faulting in fresh ones.
        let arena = activationArena {
            _ = taesd.decode(latents: [Float](repeating: 0, count: shape[1...].reduce(1, *)), batch: 1,
                             height: shape[2], width: shape[3], pool: taesdPool)
        }
        defer { arena?.close() }
        let images = (0..<shape[0]).compactMap { n in
            run(in: arena) { decodeWithTinyAutoencoder(taesd, latents: latents, shape: shape, index: n, pool: taesdPool) }
        }
        return (images, arena?.report)
    }
}
