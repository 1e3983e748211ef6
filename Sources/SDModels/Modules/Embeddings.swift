// Matches diffusers.models.embeddings.Timesteps (get_timestep_embedding) and
// TimestepEmbedding (linear_1 → SiLU → linear_2).
import Glibc
import SDKernels

struct Timesteps {
    let channels: Int
    let flipSinToCos: Bool
    let downscaleFreqShift: Float

    /// The sinusoidal embedding [channels] of one timestep, in Float like torch:
    /// freq_i = exp(−ln(10000) · i / (half − shift)), emb = [sin(t·freq), cos(t·freq)]
    /// (cos first when flipped), zero-padded when `channels` is odd.
    func callAsFunction(_ timestep: Float) -> [Float] {
        let half = channels / 2
        var emb = [Float](repeating: 0, count: channels)
        let logMaxPeriod = Float(-9.210340371976184)  // −ln(10000)
        for i in 0..<half {
            let freq = expf(Float(i) * logMaxPeriod / (Float(half) - downscaleFreqShift))
            let arg = timestep * freq
            let (s, c) = (sinf(arg), cosf(arg))
            emb[i] = flipSinToCos ? c : s
            emb[half + i] = flipSinToCos ? s : c
        }
        return emb
    }
}

struct TimestepEmbedding {
    let linear1: Linear  // linear_1: [temb, timestepChannels]
    // act: SiLU (parameterless)
    let linear2: Linear  // linear_2: [temb, temb]
    let condProj: Linear?  // cond_proj: [timestepChannels, time_cond_proj_dim], no bias (LCM UNets)

    init(_ w: Weights, in inChannels: Int, timeEmbeddingDim: Int, condProjDim: Int? = nil) throws {
        linear1 = try Linear(w["linear_1"], in: inChannels, out: timeEmbeddingDim)
        linear2 = try Linear(w["linear_2"], in: timeEmbeddingDim, out: timeEmbeddingDim)
        condProj = try condProjDim.map { try Linear(w["cond_proj"], in: $0, out: inChannels, bias: false) }
    }

    /// [in] → emb: [temb, 1, 1, 1]. `condition` ([time_cond_proj_dim], LCM's guidance
    /// embedding) is projected and added to the sinusoid first, as diffusers does.
    func callAsFunction(_ sinusoid: [Float], condition: [Float]? = nil, pool: ThreadPool) -> Tensor {
        let x = Tensor(channels: sinusoid.count, batch: 1, height: 1, width: 1)
        x.data.update(from: sinusoid, count: sinusoid.count)
        if let condProj, let condition {
            let c = Tensor(channels: condition.count, batch: 1, height: 1, width: 1)
            c.data.update(from: condition, count: condition.count)
            let projected = condProj(c, pool: pool)
            for i in 0..<sinusoid.count { x.data[i] += projected.data[i] }
        }
        return self(x, pool: pool)
    }

    /// [in, B, 1, 1] → [temb, B, 1, 1] (SDXL's add_embedding, one column per sample).
    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        let h = linear1(x, pool: pool)
        Kernels.activate(.silu, h.data, count: h.count, pool: pool)
        return linear2(h, pool: pool)
    }
}

/// diffusers' `get_guidance_scale_embedding(w, embedding_dim)` (LCM pipelines), for one w:
/// with f_i = exp(−ln(10000) · i / (half − 1)), [sin(1000 w f_i)…, cos(1000 w f_i)…],
/// zero-padded when `dimension` is odd. Computed in Float like torch's float32.
public func guidanceScaleEmbedding(_ w: Float, dimension: Int) -> [Float] {
    let half = dimension / 2
    var emb = [Float](repeating: 0, count: dimension)
    guard half > 0 else { return emb }
    let step = logf(10000) / Float(max(half - 1, 1))
    let scaled = w * 1000
    for i in 0..<half {
        let arg = scaled * expf(Float(i) * -step)
        emb[i] = sinf(arg)
        emb[half + i] = cosf(arg)
    }
    return emb
}
