// SDXL's text and size conditioning, as diffusers' StableDiffusionXLPipeline builds it
// (pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py: encode_prompt and
// _get_add_time_ids). A model file is SDXL when it has a text_encoder_2 component.
import SDFormat
import SDKernels
import SDModels
import SDTokenizer

extension StableDiffusionPipeline {
    /// SDXL model files carry a second text encoder (OpenCLIP ViT-bigG with projection).
    public var isSDXL: Bool { file.components.contains { $0.name == "text_encoder_2" } }

    /// What the UNet calls of an SDXL run share: the concatenated hidden states of both
    /// encoders [B, T, C1 + C2] and the added conditions, in the UNet batch's order.
    struct SDXLText {
        var context: [Float]
        var added: UNetAddedConditions
    }

    /// nil for SD 1.x/2.x (which refuse size conditioning). For SDXL: encode_prompt with both
    /// tokenizers and encoders, negatives first when guiding; with `force_zeros_for_empty_prompt`
    /// and no negative prompt given, the negative embeddings are zeros, not those of "".
    func encodeSDXLText(_ request: GenerationRequest) throws -> SDXLText? {
        guard isSDXL else {
            if unetConfig.textTimeEmbedding != nil {
                throw FormatError(file.sourceName, "the UNet takes SDXL's text_time conditioning but the model has no text_encoder_2")
            }
            if request.sizeConditioning.isSet {
                throw PipelineError.invalidRequest("original size, crop coordinates and target size apply to SDXL models only")
            }
            return nil
        }
        let path = file.sourceName
        guard let textTime = unetConfig.textTimeEmbedding else {
            throw FormatError(path, "an SDXL model (text_encoder_2) needs a UNet with addition_embed_type text_time")
        }
        let config2: CLIPTextConfig
        do {
            config2 = try CLIPTextConfig(json: file.config("text_encoder_2"))
        } catch let error as FormatError {
            throw error
        } catch {
            throw FormatError(path, "\(error)")
        }
        let c1 = textConfig.hiddenSize, c2 = config2.hiddenSize, pooledDim = config2.projectionDim
        guard c1 + c2 == unetConfig.crossAttentionDim else {
            throw FormatError(path, "the text encoders' widths \(c1) + \(c2) do not add up to the UNet's cross_attention_dim \(unetConfig.crossAttentionDim)")
        }
        guard pooledDim == textTime.pooledDim else {
            throw FormatError(path, "text_encoder_2's projection_dim \(pooledDim) does not match the UNet's pooled width \(textTime.pooledDim)")
        }
        let tokenizer2 = try Self.tokenizer(of: file, prefix: "tokenizer_2")
        let tokens = tokenizer.maxLength
        guard tokenizer2.maxLength == tokens else {
            throw FormatError(path, "the two tokenizers' lengths differ (\(tokens) and \(tokenizer2.maxLength))")
        }

        // An LCM-distilled UNet takes the guidance as an embedding and runs no unconditional half.
        let guiding = usesGuidance(request)
        let zeroNegatives = guiding && request.negativePrompts.isEmpty && forceZerosForEmptyPrompt
        let negatives = request.prompts.indices.map { request.negativePrompt(for: $0) }
        let texts = (guiding && !zeroNegatives ? negatives : []) + request.prompts
        var ids1: [Int32] = [], ids2: [Int32] = []
        for text in texts {
            ids1 += tokenizer.tokenize(text)
            ids2 += tokenizer2.tokenize(text)
        }
        let textPool = ThreadPool(threads: pool.threads, precision: precision)
        let hidden1: [Float]
        do {
            let model = try CLIPTextModel(config: textConfig, weights: file.component("text_encoder"),
                                          memory: memoryOptions("text_encoder"))
            release("text_encoder")
            hidden1 = try model.encodePenultimate(ids: ids1, batch: texts.count, pool: textPool)
        }
        release("text_encoder")
        let hidden2: [Float], pooled: [Float]
        do {
            let model = try CLIPTextModelWithProjection(config: config2, weights: file.component("text_encoder_2"),
                                                        memory: memoryOptions("text_encoder_2"))
            release("text_encoder_2")
            (hidden2, pooled) = try model.encode(ids: ids2, batch: texts.count, pool: textPool)
        }
        release("text_encoder_2")

        // torch.cat([h1, h2], dim=-1) per token; each text repeated imagesPerPrompt times.
        let timeIDs = request.sizeConditioning.timeIDs(width: request.width, height: request.height)
        let samples = (guiding ? 2 : 1) * request.imageCount
        var context: [Float] = [], textEmbeds: [Float] = [], allTimeIDs: [Float] = []
        context.reserveCapacity(samples * tokens * (c1 + c2))
        textEmbeds.reserveCapacity(samples * pooledDim)
        func append(text t: Int?) {
            for _ in 0..<request.imagesPerPrompt {
                if let t {
                    for k in 0..<tokens {
                        let row = t * tokens + k
                        context += hidden1[(row * c1)..<((row + 1) * c1)]
                        context += hidden2[(row * c2)..<((row + 1) * c2)]
                    }
                    textEmbeds += pooled[(t * pooledDim)..<((t + 1) * pooledDim)]
                } else {
                    context += repeatElement(0, count: tokens * (c1 + c2))
                    textEmbeds += repeatElement(0, count: pooledDim)
                }
                allTimeIDs += timeIDs
            }
        }
        if guiding {
            for i in request.prompts.indices { append(text: zeroNegatives ? nil : i) }
        }
        let firstPrompt = guiding && !zeroNegatives ? request.prompts.count : 0
        for i in request.prompts.indices { append(text: firstPrompt + i) }
        return SDXLText(context: context, added: UNetAddedConditions(textEmbeds: textEmbeds, timeIDs: allTimeIDs))
    }

    /// model_index.json's force_zeros_for_empty_prompt (diffusers' default: true).
    var forceZerosForEmptyPrompt: Bool { (file.int("pipeline.force_zeros_for_empty_prompt") ?? 1) != 0 }
}
