import SDFormat

/// A model as read from the user's files, before conversion: per component, its config
/// and every tensor under its diffusers key, pointing into the mapped source files.
struct SourceModel {
    struct Tensor {
        /// diffusers state-dict key within the component.
        let key: String
        let file: SafetensorsFile
        let entry: SafetensorsFile.Entry
        /// The shape to store; differs from the source only by dropped unit axes (LDM's
        /// 1×1-conv attention weights become diffusers' linear weights).
        let shape: [Int]
    }

    struct Component {
        let name: String
        let config: JSON
        var tensors: [Tensor]
    }

    var components: [Component]
    var schedulerConfig: JSON
    var tokenizer: TokenizerData
    /// Source keys that were not used, to list in the report.
    var unusedKeys: [String]
    /// What the input was, for the report and metadata.
    var kind: String
    /// SDXL's second tokenizer (pad token "!"), stored under "tokenizer_2.".
    var tokenizer2: TokenizerData? = nil
    /// Pipeline settings from model_index.json (e.g. force_zeros_for_empty_prompt).
    var pipelineMetadata: [(String, MetadataValue)] = []
}

/// The components a text-to-image pipeline needs, in execution order.
let pipelineComponents = ["text_encoder", "unet", "vae"]

extension LoRAPlan {
    /// The LoRA updates of `specs` for the UNet and text encoder of `model`.
    init(specs: [LoRASpec], model: SourceModel) throws {
        try self.init(specs: specs, tensors: model.components.flatMap { c in
            c.tensors.map { (component: c.name, key: $0.key, shape: $0.shape) }
        })
    }
}
