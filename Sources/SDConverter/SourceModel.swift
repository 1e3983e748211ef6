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
        /// 1×1-conv attention weights become diffusers' linear weights) or, when
        /// `transposed`, by the swapped axes.
        let shape: [Int]
        /// The source is the transpose of the stored matrix (OpenCLIP's `text_projection`,
        /// applied as x · P where diffusers' linear weight is Pᵀ); rank 2 only.
        var transposed = false
    }

    struct Component {
        let name: String
        let config: JSON
        var tensors: [Tensor]
        /// For a single file: the checkpoint's name of a diffusers key, so that a missing
        /// tensor is named as the file would hold it.
        var sourceKey: ((String) -> String?)? = nil
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
    /// Settings the input did not determine and the converter chose, each naming the flag
    /// that sets them (single files without --config); in the report and the model file.
    var assumptions: [String] = []
}

/// The components a text-to-image pipeline needs, in execution order.
let pipelineComponents = ["text_encoder", "unet", "vae"]

extension LoRAPlan {
    /// The LoRA updates of `specs` for the UNet and text encoders of `model`.
    init(specs: [LoRASpec], model: SourceModel) throws {
        // The single-file converter's inverse renames name the UNet's keys as kohya's SDXL LoRAs do.
        let unet = model.components.first { $0.name == "unet" }
        let originalUNetKey = unet.flatMap { SingleFileCheckpoint.sourceKey("unet", config: $0.config, prefix: "") }
        try self.init(specs: specs, tensors: model.components.flatMap { c in
            c.tensors.map { (component: c.name, key: $0.key, shape: $0.shape) }
        }, originalUNetKey: originalUNetKey ?? { _ in nil })
    }
}
