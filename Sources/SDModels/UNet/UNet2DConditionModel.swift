// Matches diffusers.models.unets.unet_2d_condition.UNet2DConditionModel (SD 1.x/2.x subset).
import SDFormat
import SDKernels

/// Immutable after init, so one instance may serve several threads.
public final class UNet2DConditionModel: @unchecked Sendable {
    /// The configuration the model was built from.
    public let config: UNet2DConditionConfig
    /// Keeps the mapped weights alive: every WeightMatrix below points into it.
    public let weights: WeightSource

    let convIn: Conv2d                          // conv_in: [c0, in, 3, 3]
    let timeProj: Timesteps                     // time_proj (parameterless)
    let timeEmbedding: TimestepEmbedding        // time_embedding
    let addTimeProj: Timesteps?                 // add_time_proj (text_time only, parameterless)
    let addEmbedding: TimestepEmbedding?        // add_embedding (text_time only)
    let downBlocks: [UNetDownBlock]             // down_blocks.{i}
    let midBlock: UNetMidBlock2DCrossAttn?      // mid_block
    let upBlocks: [UNetUpBlock]                 // up_blocks.{i}
    let convNormOut: GroupNorm                  // conv_norm_out: [c0]; conv_act (SiLU) fused into it
    let convOut: Conv2d                         // conv_out: [out, c0, 3, 3]
    let memory: MemoryOptions
    let scope: ResidencyScope                   // all of the model's weight pages

    /// Binds and shape-checks every tensor under `prefix` ("" for a diffusers
    /// unet/diffusion_pytorch_model.safetensors, "unet." in a model file).
    public init(config c: UNet2DConditionConfig, weights: WeightSource, prefix: String = "",
                memory: MemoryOptions = MemoryOptions()) throws {
        config = c
        self.weights = weights
        self.memory = memory
        let w = Weights(source: weights, prefix: prefix, memory: memory)
        scope = w.scope
        let n = c.levels
        let channels = c.blockOutChannels
        let eps = Float(c.normEps)
        func settings(_ level: Int) -> UNetBlockSettings {
            UNetBlockSettings(timeEmbeddingDim: c.timeEmbeddingDim, groups: c.normNumGroups, eps: eps,
                              heads: c.attentionHeads[level], transformerLayers: c.transformerLayersPerBlock[level],
                              crossAttentionDim: c.crossAttentionDim, useLinearProjection: c.useLinearProjection,
                              resnetOutputScale: Float(c.resnetOutScaleFactor))
        }

        convIn = try Conv2d(w["conv_in"], in: c.inChannels, out: channels[0], kernelSize: 3, padding: 1)
        timeProj = Timesteps(channels: channels[0], flipSinToCos: c.flipSinToCos, downscaleFreqShift: Float(c.freqShift))
        timeEmbedding = try TimestepEmbedding(w["time_embedding"], in: channels[0], timeEmbeddingDim: c.timeEmbeddingDim,
                                              condProjDim: c.timeCondProjDim)
        addTimeProj = c.textTimeEmbedding.map {
            Timesteps(channels: $0.additionTimeEmbedDim, flipSinToCos: c.flipSinToCos, downscaleFreqShift: Float(c.freqShift))
        }
        addEmbedding = try c.textTimeEmbedding.map {
            try TimestepEmbedding(w["add_embedding"], in: $0.inputDim, timeEmbeddingDim: c.timeEmbeddingDim)
        }

        // The channel counts of the skip connections, pushed on the way down.
        var skipChannels = [channels[0]]
        downBlocks = try (0..<n).map { i in
            let isFinal = i == n - 1
            skipChannels += Array(repeating: channels[i], count: c.layersPerBlock[i] + (isFinal ? 0 : 1))
            return try UNetDownBlock(w["down_blocks", i], crossAttention: c.downBlockTypes[i] == .crossAttnDownBlock2D,
                                     layers: c.layersPerBlock[i], in: i == 0 ? channels[0] : channels[i - 1],
                                     out: channels[i], addDownsample: !isFinal,
                                     downsamplePadding: c.downsamplePadding, settings: settings(i))
        }
        midBlock = c.midBlockType == nil ? nil
            : try UNetMidBlock2DCrossAttn(w["mid_block"], channels: channels[n - 1],
                                          outputScaleFactor: Float(c.midBlockScaleFactor), settings: settings(n - 1))
        // Up block i works at level n-1-i and pops layers+1 skips, last pushed first.
        upBlocks = try (0..<n).map { i in
            let level = n - 1 - i
            let count = c.layersPerBlock[level] + 1
            let consumed = Array(skipChannels.suffix(count).reversed())
            skipChannels.removeLast(count)
            return try UNetUpBlock(w["up_blocks", i], crossAttention: c.upBlockTypes[i] == .crossAttnUpBlock2D,
                                   prevOutputChannels: i == 0 ? channels[n - 1] : channels[level + 1],
                                   out: channels[level], skipChannels: consumed, addUpsample: i < n - 1,
                                   settings: settings(level))
        }
        convNormOut = try GroupNorm(w["conv_norm_out"], channels: channels[0], groups: c.normNumGroups, eps: eps)
        convOut = try Conv2d(w["conv_out"], in: channels[0], out: c.outChannels, kernelSize: 3, padding: 1)
    }

    /// The UNet's output for one timestep (the noise for epsilon-prediction models).
    /// sample: NCHW [B, in, h, w]; context: encoder_hidden_states [B, T, Cctx] row-major;
    /// returns NCHW [B, out, h, w]. Any h, w ≥ 1. Runs `memory.maxBatch` samples at a time.
    /// `timestepCondition` ([time_cond_proj_dim], the same for every sample) is LCM's
    /// guidance embedding (`guidanceScaleEmbedding`), given exactly when the model has cond_proj.
    /// `added`: SDXL's text_embeds and time_ids, required when the config has text_time.
    public func predictNoise(sample: [Float], batch: Int, height h: Int, width w: Int, timestep: Float,
                             context: [Float], contextTokens: Int, timestepCondition: [Float]? = nil,
                             added: UNetAddedConditions? = nil,
                             pool: ThreadPool) -> [Float] {
        precondition(batch >= 1 && h >= 1 && w >= 1 && contextTokens >= 1)
        precondition(sample.count == batch * config.inChannels * h * w, "sample must be [B, in_channels, h, w]")
        precondition(context.count == batch * contextTokens * config.crossAttentionDim,
                     "context must be [B, T, cross_attention_dim]")
        precondition(timestepCondition == nil || timestepCondition!.count == config.timeCondProjDim,
                     "timestepCondition must have time_cond_proj_dim values")
        if let t = config.textTimeEmbedding {
            precondition(added?.textEmbeds.count == batch * t.pooledDim, "text_embeds must be [B, pooled]")
            precondition(added?.timeIDs.count == batch * TextTimeEmbeddingConfig.timeIDCount, "time_ids must be [B, 6]")
        }
        defer { scope.finished() }
        let slice = min(batch, memory.maxBatch)
        if slice == batch {
            return forward(sample: sample[...], batch: batch, height: h, width: w, timestep: timestep,
                           context: context[...], contextTokens: contextTokens, condition: timestepCondition,
                           added: added, pool: pool)
        }
        PathCounters.record(.splitUNetBatch)
        let samplePlane = config.inChannels * h * w, contextRows = contextTokens * config.crossAttentionDim
        var output: [Float] = []
        output.reserveCapacity(batch * config.outChannels * h * w)
        for start in stride(from: 0, to: batch, by: slice) {
            let n = min(slice, batch - start)
            let addedSlice = added?.samples(start..<(start + n))
            output += forward(sample: sample[(start * samplePlane)..<((start + n) * samplePlane)], batch: n,
                              height: h, width: w, timestep: timestep,
                              context: context[(start * contextRows)..<((start + n) * contextRows)],
                              contextTokens: contextTokens, condition: timestepCondition, added: addedSlice, pool: pool)
        }
        return output
    }

    private func forward(sample: ArraySlice<Float>, batch: Int, height h: Int, width w: Int, timestep: Float,
                         context: ArraySlice<Float>, contextTokens: Int, condition: [Float]?,
                         added: UNetAddedConditions?, pool: ThreadPool) -> [Float] {
        var x = sample.withUnsafeBufferPointer {
            Tensor.fromBatchMajor($0.baseAddress!, batch: batch, channels: config.inChannels, height: h, width: w)
        }
        if config.centerInputSample {
            for i in 0..<x.count { x.data[i] = 2 * x.data[i] - 1 }
        }
        var emb = timeEmbedding(timeProj(timestep), condition: condition, pool: pool)
        if let addEmbedding, let addTimeProj, let added { emb = addTextTime(emb, added, batch, addEmbedding, addTimeProj, pool) }
        // Every ResnetBlock2D applies SiLU to emb before its projection: do it once.
        Kernels.activate(.silu, emb.data, count: emb.count, pool: pool)
        let cond = UNetConditioning(
            timeEmbedding: emb,
            context: context.withUnsafeBufferPointer {
                Tensor.fromTokenRows($0.baseAddress!, batch: batch, tokens: contextTokens, channels: config.crossAttentionDim)
            })

        x = convIn(x, pool: pool)
        var skips = [x]
        for block in downBlocks { x = block(x, cond, skips: &skips, pool: pool) }
        if let midBlock { x = midBlock(x, cond, pool: pool) }
        for block in upBlocks { x = block(x, cond, skips: &skips, pool: pool) }
        x = convNormOut(x, silu: true, pool: pool)
        x = convOut(x, pool: pool)
        return x.toBatchMajor()
    }
}
