// Matches transformers.CLIPTextConfig (defaults of transformers 5.x).
import SDFormat

/// The CLIP text encoder's architecture, read from transformers' CLIPTextConfig.
public struct CLIPTextConfig: Sendable, Equatable {
    /// The feed-forward activation (`hidden_act`); the raw value is transformers' name.
    public enum HiddenAct: String, Sendable { case quickGelu = "quick_gelu", gelu }

    /// Tokens in the vocabulary.
    public var vocabSize: Int              // vocab_size
    /// Width of the transformer (embedding size).
    public var hiddenSize: Int             // hidden_size
    /// Width of the feed-forward's hidden layer.
    public var intermediateSize: Int       // intermediate_size
    /// Transformer layers.
    public var numHiddenLayers: Int        // num_hidden_layers
    /// Attention heads per layer.
    public var numAttentionHeads: Int      // num_attention_heads
    /// Positions the model has embeddings for (its longest sequence).
    public var maxPositionEmbeddings: Int  // max_position_embeddings
    /// The feed-forward activation.
    public var hiddenAct: HiddenAct        // hidden_act
    /// Epsilon of every LayerNorm.
    public var layerNormEps: Double        // layer_norm_eps
    /// Where transformers pools (the first `eos_token_id`, or the largest id when it is 2).
    public var eosTokenID: Int             // eos_token_id
    /// CLIPTextModelWithProjection's text_projection width (SDXL's second encoder).
    public var projectionDim: Int          // projection_dim

    /// Width of one attention head: hidden size / heads.
    public var headDim: Int { hiddenSize / numAttentionHeads }

    /// Reads a text encoder's config.json; a full CLIPConfig (`model_type` "clip") is read
    /// through its `text_config`.
    public init(json: JSON) throws {
        let root = json["text_config"].flatMap { $0.isNull ? nil : $0 } ?? json
        let r = try ConfigReader(root, component: "text_encoder")
        vocabSize = try r.positiveInt("vocab_size", 49408)
        hiddenSize = try r.positiveInt("hidden_size", 512)
        intermediateSize = try r.positiveInt("intermediate_size", 2048)
        numHiddenLayers = try r.positiveInt("num_hidden_layers", 12)
        numAttentionHeads = try r.positiveInt("num_attention_heads", 8)
        maxPositionEmbeddings = try r.positiveInt("max_position_embeddings", 77)
        let act = try r.string("hidden_act", "quick_gelu")
        guard let hiddenAct = HiddenAct(rawValue: act) else {
            throw r.fail("hidden_act \"\(act)\" is not supported yet (quick_gelu or gelu)")
        }
        self.hiddenAct = hiddenAct
        layerNormEps = try r.double("layer_norm_eps", 1e-5)
        eosTokenID = try r.int("eos_token_id", 49407)
        projectionDim = try r.positiveInt("projection_dim", 512)
        guard hiddenSize % numAttentionHeads == 0 else {
            throw r.fail("hidden_size \(hiddenSize) is not divisible by num_attention_heads \(numAttentionHeads)")
        }
    }
}
