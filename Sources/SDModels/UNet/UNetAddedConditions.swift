// diffusers' added_cond_kwargs for addition_embed_type "text_time" (SDXL) and how
// UNet2DConditionModel.get_aug_embed turns them into a per-sample time embedding.
import SDKernels

/// SDXL's added conditioning for a UNet batch: the pooled text embedding of each sample
/// (text_encoder_2's text_embeds) and its six time ids (original H, W; crop top, left;
/// target H, W).
public struct UNetAddedConditions: Sendable {
    /// Pooled text embeddings, [B, pooled].
    public var textEmbeds: [Float]  // [B, pooled]
    /// Time ids, [B, 6].
    public var timeIDs: [Float]     // [B, 6]

    /// Conditions from pooled embeddings [B, pooled] and time ids [B, 6].
    public init(textEmbeds: [Float], timeIDs: [Float]) {
        self.textEmbeds = textEmbeds
        self.timeIDs = timeIDs
    }

    /// Samples `range` of the batch.
    func samples(_ range: Range<Int>) -> UNetAddedConditions {
        let ids = TextTimeEmbeddingConfig.timeIDCount, batch = timeIDs.count / ids, pooled = textEmbeds.count / batch
        return UNetAddedConditions(
            textEmbeds: Array(textEmbeds[(range.lowerBound * pooled)..<(range.upperBound * pooled)]),
            timeIDs: Array(timeIDs[(range.lowerBound * ids)..<(range.upperBound * ids)]))
    }
}

extension UNet2DConditionModel {
    /// emb [temb, 1] + add_embedding(concat(text_embeds, add_time_proj(time_ids))) → [temb, B]:
    /// every sample gets its own time embedding.
    func addTextTime(_ emb: Tensor, _ added: UNetAddedConditions, _ batch: Int, _ addEmbedding: TimestepEmbedding,
                     _ addTimeProj: Timesteps, _ pool: ThreadPool) -> Tensor {
        let ids = TextTimeEmbeddingConfig.timeIDCount, pooled = added.textEmbeds.count / batch
        let timeDim = addTimeProj.channels
        let input = Tensor(channels: pooled + ids * timeDim, batch: batch, height: 1, width: 1)
        for b in 0..<batch {
            for p in 0..<pooled { input.data[p * batch + b] = added.textEmbeds[b * pooled + p] }
            for i in 0..<ids {
                let sinusoid = addTimeProj(added.timeIDs[b * ids + i])
                for (k, v) in sinusoid.enumerated() { input.data[(pooled + i * timeDim + k) * batch + b] = v }
            }
        }
        let aug = addEmbedding(input, pool: pool)  // [temb, B]
        for c in 0..<aug.channels {
            for b in 0..<batch { aug.data[c * batch + b] += emb.data[c] }
        }
        return aug
    }
}
