// SDXL diffusers folders (StableDiffusionXLPipeline): a second text encoder
// (CLIPTextModelWithProjection) and tokenizer, and force_zeros_for_empty_prompt.
import SDFormat

extension DiffusersFolder {
    static let supportedPipelineClasses = ["StableDiffusionPipeline", "StableDiffusionXLPipeline"]

    /// The components to convert, in execution order: SDXL's text_encoder_2 when
    /// model_index.json names one (refiner-style folders without text_encoder are refused
    /// by the missing-folder check).
    static func componentNames(index: JSON) -> [String] {
        guard let entry = index["text_encoder_2"], !entry.isNull, entry.array?.first?.isNull != true else {
            return pipelineComponents
        }
        return ["text_encoder", "text_encoder_2", "unet", "vae"]
    }

    /// tokenizer_2 and model_index.json's force_zeros_for_empty_prompt, for SDXL folders.
    static func readSDXLParts(_ root: String, index: JSON, into model: inout SourceModel) throws {
        guard model.components.contains(where: { $0.name == "text_encoder_2" }) else { return }
        let dir = FileSystem.join(root, "tokenizer_2")
        guard TokenizerData.isTokenizerFolder(dir) else { throw FormatError(root, "component folder tokenizer_2/ is missing") }
        model.tokenizer2 = try TokenizerData.read(folder: dir)
        let forceZeros = index["force_zeros_for_empty_prompt"]?.bool ?? true
        model.pipelineMetadata.append(("pipeline.force_zeros_for_empty_prompt", .int(forceZeros ? 1 : 0)))
    }
}

extension Converter {
    /// The second tokenizer's ids (its tables only when they differ from the first's) and
    /// the pipeline settings.
    static func sdxlMetadata(_ source: SourceModel) -> [(String, MetadataValue)] {
        var m = source.pipelineMetadata
        if let t2 = source.tokenizer2 {
            let shared = t2.vocabulary == source.tokenizer.vocabulary && t2.merges == source.tokenizer.merges
            m += t2.metadata(prefix: "tokenizer_2", withTables: !shared)
        }
        return m
    }
}
