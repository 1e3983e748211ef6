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

    init(_ w: Weights, in inChannels: Int, timeEmbeddingDim: Int) throws {
        linear1 = try Linear(w["linear_1"], in: inChannels, out: timeEmbeddingDim)
        linear2 = try Linear(w["linear_2"], in: timeEmbeddingDim, out: timeEmbeddingDim)
    }

    /// [in] → emb: [temb, 1, 1, 1].
    func callAsFunction(_ sinusoid: [Float], pool: ThreadPool) -> Tensor {
        let x = Tensor(channels: sinusoid.count, batch: 1, height: 1, width: 1)
        x.data.update(from: sinusoid, count: sinusoid.count)
        return self(x, pool: pool)
    }

    /// [in, B, 1, 1] → [temb, B, 1, 1] (SDXL's add_embedding, one column per sample).
    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        let h = linear1(x, pool: pool)
        Kernels.activate(.silu, h.data, count: h.count, pool: pool)
        return linear2(h, pool: pool)
    }
}
