import SDFormat
import SDModels
import SDSchedulers
import SDTokenizer

/// The configurations and tokenizer a model file stores, in the types the components take:
/// what a custom pipeline needs to build each stage the way `StableDiffusionPipeline` does.
extension ModelFileReader {
    /// The stored tokenizer (vocabulary, merges, pad token, maximum length).
    public func clipTokenizer() throws -> CLIPTokenizer {
        try StableDiffusionPipeline.tokenizer(of: self)
    }

    /// The stored diffusers scheduler config (`scheduler_config.json`), every key kept, so
    /// `makeScheduler(kind, config:steps:)` builds the schedulers diffusers would build from it.
    public func schedulerConfig() throws -> SchedulerConfig {
        try wrapped("scheduler") { try SchedulerConfig(diffusersConfig: StableDiffusionPipeline.schedulerValues(config("scheduler"))) }
    }

    /// The stored CLIP text encoder config (`text_encoder`).
    public func textEncoderConfig() throws -> CLIPTextConfig {
        try wrapped("text_encoder") { try CLIPTextConfig(json: config("text_encoder")) }
    }

    /// The stored UNet config (`unet`).
    public func unetConfig() throws -> UNet2DConditionConfig {
        try wrapped("unet") { try UNet2DConditionConfig(json: config("unet")) }
    }

    /// The stored VAE (AutoencoderKL) config (`vae`).
    public func vaeConfig() throws -> AutoencoderKLConfig {
        try wrapped("vae") { try AutoencoderKLConfig(json: config("vae")) }
    }

    /// Errors from a config parser, as one line naming the file and the component.
    private func wrapped<T>(_ component: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as FormatError {
            throw error
        } catch {
            throw FormatError(sourceName, "\(component) config: \(error)")
        }
    }
}
