// What SDXL takes from its two text encoders (diffusers' StableDiffusionXLPipeline.encode_prompt):
// transformers' hidden_states[-2] of each, and the projected pooled output of the second,
// transformers.CLIPTextModelWithProjection (text_embeds).
import SDFormat
import SDKernels

/// transformers.CLIPTextModelWithProjection: a CLIPTextModel plus `text_projection`
/// (no bias) applied to the pooled (end-of-text) token. Immutable after init.
public final class CLIPTextModelWithProjection: @unchecked Sendable {
    /// The underlying CLIP text transformer.
    public let textModel: CLIPTextModel
    let textProjection: Linear  // text_projection: [projection_dim, C], no bias

    /// Binds the text model's keys as CLIPTextModel does, and `text_projection.weight` at
    /// the top level (transformers keeps it outside "text_model.").
    public init(config c: CLIPTextConfig, weights: WeightSource, prefix: String = "",
                memory: MemoryOptions = MemoryOptions()) throws {
        textModel = try CLIPTextModel(config: c, weights: weights, prefix: prefix, memory: memory)
        let w = Weights(source: weights, prefix: prefix, memory: memory)
        textProjection = try Linear(w["text_projection"], in: c.hiddenSize, out: c.projectionDim, bias: false)
    }

    /// hidden_states[-2] as [B, T, C] rows, and text_embeds [B, projection_dim].
    public func encode(ids: [Int32], batch: Int, pool: ThreadPool) throws -> (penultimate: [Float], pooled: [Float]) {
        let model = textModel, c = model.config
        defer { model.scope.finished() }
        let h = try model.embed(ids: ids, batch: batch)
        let (penultimate, pooledRows) = model.runToPenultimate(h, pool: pool, alsoPool: true, ids: ids)
        let pooled = textProjection(pooledRows!, pool: pool)  // [P, B, 1]
        var out = [Float](repeating: 0, count: batch * c.projectionDim)
        for b in 0..<batch {
            for p in 0..<c.projectionDim { out[b * c.projectionDim + p] = pooled.data[p * batch + b] }
        }
        return (penultimate, out)
    }
}

extension CLIPTextModel {
    /// hidden_states[-2] as [B, T, C] rows: the output of every layer but the last, without
    /// the final layer norm (SDXL's first encoder).
    public func encodePenultimate(ids: [Int32], batch: Int, pool: ThreadPool) throws -> [Float] {
        defer { scope.finished() }
        let h = try embed(ids: ids, batch: batch)
        return runToPenultimate(h, pool: pool, alsoPool: false, ids: ids).penultimate
    }

    /// Runs h through the layers; returns hidden_states[-2] rows and, with `alsoPool`, the
    /// final-layer-normed last hidden state at each sequence's pooling position: [C, B, 1].
    func runToPenultimate(_ h: Tensor, pool: ThreadPool, alsoPool: Bool, ids: [Int32]) -> (penultimate: [Float], pooled: Tensor?) {
        let c = config
        for layer in layers.dropLast() { layer(h, pool: pool) }
        let penultimate = h.toTokenRows()
        guard alsoPool, let last = layers.last else { return (penultimate, nil) }
        last(h, pool: pool)
        let normed = finalLayerNorm(h, pool: pool)
        let batch = h.batch, tokens = h.height, cols = normed.columns
        let pooled = Tensor(channels: c.hiddenSize, batch: batch, tokens: 1)
        for b in 0..<batch {
            let position = Self.poolingPosition(ids[(b * tokens)..<((b + 1) * tokens)], eosTokenID: c.eosTokenID)
            for ch in 0..<c.hiddenSize { pooled.data[ch * batch + b] = normed.data[ch * cols + b * tokens + position] }
        }
        return (penultimate, pooled)
    }

    /// transformers' pooling index: the first `eos_token_id` (position 0 when absent), or
    /// the largest id's first position for configs that still say eos_token_id = 2.
    static func poolingPosition(_ ids: ArraySlice<Int32>, eosTokenID: Int) -> Int {
        if eosTokenID == 2 {
            var best = ids.startIndex
            for i in ids.indices where ids[i] > ids[best] { best = i }
            return best - ids.startIndex
        }
        return (ids.firstIndex(of: Int32(truncatingIfNeeded: eosTokenID)) ?? ids.startIndex) - ids.startIndex
    }
}
