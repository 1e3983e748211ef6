// Matches transformers.models.clip.modeling_clip.CLIPTextModel (last_hidden_state).
import SDFormat
import SDKernels

/// Immutable after init, so one instance may serve several threads.
public final class CLIPTextModel: @unchecked Sendable {
    /// The configuration the model was built from.
    public let config: CLIPTextConfig
    /// Keeps the mapped weights alive: the views below point into it.
    public let weights: WeightSource

    // Keys below are under "text_model." in the legacy layout.
    let tokenEmbedding: TensorView     // embeddings.token_embedding.weight: [vocab, C], read in place
    let positionEmbedding: TensorView  // embeddings.position_embedding.weight: [maxPositions, C], read in place
    let layers: [CLIPEncoderLayer]     // encoder.layers.{i}
    let finalLayerNorm: LayerNorm      // final_layer_norm: [C]
    let scope: ResidencyScope          // all of the model's weight pages

    /// Binds and shape-checks every tensor under `prefix` ("" for a transformers
    /// text_encoder/model.safetensors, "text_encoder." in a model file). Both key layouts
    /// are read: "text_model.embeddings.…" (every published SD 1.x repo) and the flattened
    /// "embeddings.…" that transformers ≥ 5.6 writes.
    public init(config c: CLIPTextConfig, weights: WeightSource, prefix: String = "",
                memory: MemoryOptions = MemoryOptions()) throws {
        config = c
        self.weights = weights
        let legacy = weights.tensor(prefix + "text_model.embeddings.token_embedding.weight") != nil
        let w = Weights(source: weights, prefix: prefix + (legacy ? "text_model." : ""), memory: memory)
        scope = w.scope
        tokenEmbedding = try w.view("embeddings.token_embedding.weight", [c.vocabSize, c.hiddenSize])
        positionEmbedding = try w.view("embeddings.position_embedding.weight", [c.maxPositionEmbeddings, c.hiddenSize])
        layers = try (0..<c.numHiddenLayers).map { try CLIPEncoderLayer(w["encoder.layers", $0], config: c) }
        finalLayerNorm = try LayerNorm(w["final_layer_norm"], channels: c.hiddenSize, eps: Float(c.layerNormEps))
    }

    /// last_hidden_state [B, T, C] row-major for token ids [B, T] (already padded by the
    /// tokenizer; T ≤ max_position_embeddings). `skipLastLayers` = k stops k layers early
    /// and applies the final layer norm to that output (diffusers' clip_skip).
    public func encode(ids: [Int32], batch: Int, skipLastLayers: Int = 0, pool: ThreadPool) throws -> [Float] {
        guard skipLastLayers >= 0, skipLastLayers < config.numHiddenLayers else {
            throw ModelError("text_encoder", "cannot skip \(skipLastLayers) of \(config.numHiddenLayers) layers")
        }
        defer { scope.finished() }
        let h = try embed(ids: ids, batch: batch)
        let c = config
        for layer in layers.prefix(c.numHiddenLayers - skipLastLayers) { layer(h, pool: pool) }
        return finalLayerNorm(h, pool: pool).toTokenRows()
    }

    /// Checks the ids and returns token + position embeddings as h: [C, B, T].
    func embed(ids: [Int32], batch: Int) throws -> Tensor {
        let c = config
        guard batch >= 1, !ids.isEmpty, ids.count % batch == 0 else {
            throw ModelError("text_encoder", "\(ids.count) token ids do not split into a batch of \(batch)")
        }
        let tokens = ids.count / batch
        guard tokens <= c.maxPositionEmbeddings else {
            throw ModelError("text_encoder", "\(tokens) tokens exceed max_position_embeddings \(c.maxPositionEmbeddings)")
        }
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= c.vocabSize }) {
            throw ModelError("text_encoder", "token id \(bad) is outside the vocabulary of \(c.vocabSize)")
        }
        // Embeddings: token row + position row, written as columns of h: [C, B·T]. Only
        // the rows of the ids are read from the mapped table.
        let h = Tensor(channels: c.hiddenSize, batch: batch, tokens: tokens)
        let columns = h.columns
        for (col, id) in ids.enumerated() {
            let row = Int(id) * c.hiddenSize, pos = (col % tokens) * c.hiddenSize
            for ch in 0..<c.hiddenSize {
                h.data[ch * columns + col] = tokenEmbedding.float(at: row + ch) + positionEmbedding.float(at: pos + ch)
            }
        }
        return h
    }
}

struct CLIPEncoderLayer {
    let layerNorm1: LayerNorm  // layer_norm1: [C]
    let selfAttn: CLIPAttention  // self_attn
    let layerNorm2: LayerNorm  // layer_norm2: [C]
    let mlp: CLIPMLP           // mlp
    let scope: ResidencyScope  // this layer's weight pages

    init(_ w: Weights, config c: CLIPTextConfig) throws {
        let eps = Float(c.layerNormEps)
        layerNorm1 = try LayerNorm(w["layer_norm1"], channels: c.hiddenSize, eps: eps)
        selfAttn = try CLIPAttention(w["self_attn"], config: c)
        layerNorm2 = try LayerNorm(w["layer_norm2"], channels: c.hiddenSize, eps: eps)
        mlp = try CLIPMLP(w["mlp"], config: c)
        scope = w.scope
    }

    /// Updates h: [C, B, T] in place (pre-norm residual blocks).
    func callAsFunction(_ h: Tensor, pool: ThreadPool) {
        scope.using {
            selfAttn(layerNorm1(h, pool: pool), residualInto: h, pool: pool)
            mlp(layerNorm2(h, pool: pool), residualInto: h, pool: pool)
        }
    }
}

struct CLIPAttention {
    let qProj: Linear    // q_proj: [C, C]
    let kProj: Linear    // k_proj: [C, C]
    let vProj: Linear    // v_proj: [C, C]
    let outProj: Linear  // out_proj: [C, C]
    let heads: Int

    init(_ w: Weights, config c: CLIPTextConfig) throws {
        let d = c.hiddenSize
        qProj = try Linear(w["q_proj"], in: d, out: d)
        kProj = try Linear(w["k_proj"], in: d, out: d)
        vProj = try Linear(w["v_proj"], in: d, out: d)
        outProj = try Linear(w["out_proj"], in: d, out: d)
        heads = c.numAttentionHeads
    }

    /// h += out_proj(causal attention(x)); x: [C, B, T] normalised.
    func callAsFunction(_ x: Tensor, residualInto h: Tensor, pool: ThreadPool) {
        let q = qProj(x, pool: pool), k = kProj(x, pool: pool), v = vProj(x, pool: pool)
        let o = Tensor(channels: x.channels, like: x)
        Kernels.attention(query: q.pointer, key: k.pointer, value: v.pointer, heads: heads,
                          headDim: x.channels / heads, batch: x.batch, queryTokens: x.height,
                          keyTokens: x.height, causal: true, output: o.data, pool: pool)
        outProj.apply(o, residual: h, into: h, pool: pool)
    }
}

struct CLIPMLP {
    let fc1: Linear  // fc1: [intermediate, C]
    let fc2: Linear  // fc2: [C, intermediate]
    let activation: Kernels.Activation

    init(_ w: Weights, config c: CLIPTextConfig) throws {
        fc1 = try Linear(w["fc1"], in: c.hiddenSize, out: c.intermediateSize)
        fc2 = try Linear(w["fc2"], in: c.intermediateSize, out: c.hiddenSize)
        activation = c.hiddenAct == .quickGelu ? .quickGelu : .gelu
    }

    /// h += fc2(act(fc1(x))).
    func callAsFunction(_ x: Tensor, residualInto h: Tensor, pool: ThreadPool) {
        let m = fc1(x, pool: pool)
        Kernels.activate(activation, m.data, count: m.count, pool: pool)
        fc2.apply(m, residual: h, into: h, pool: pool)
    }
}
