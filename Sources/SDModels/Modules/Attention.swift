// Matches diffusers.models.attention_processor.Attention with AttnProcessor2_0, in the two
// forms SD uses: the UNet's (no q/k/v bias, optional cross-attention) and the VAE mid
// block's (q/k/v bias, group_norm in front, residual connection, one head).
import SDKernels

struct Attention {
    let groupNorm: GroupNorm?  // group_norm: [C] (VAE only)
    let toQ: Linear            // to_q: [inner, queryDim]
    let toK: Linear            // to_k: [inner, keyDim]
    let toV: Linear            // to_v: [inner, keyDim]
    let toOut: Linear          // to_out.0: [queryDim, inner]; to_out.1 is Dropout
    let heads: Int

    /// The UNet form: `keyDim` is cross_attention_dim for attn2, queryDim for attn1.
    init(_ w: Weights, queryDim: Int, keyDim: Int, heads: Int) throws {
        groupNorm = nil
        toQ = try Linear(w["to_q"], in: queryDim, out: queryDim, bias: false)
        toK = try Linear(w["to_k"], in: keyDim, out: queryDim, bias: false)
        toV = try Linear(w["to_v"], in: keyDim, out: queryDim, bias: false)
        toOut = try Linear(w["to_out.0"], in: queryDim, out: queryDim)
        self.heads = heads
    }

    /// The VAE mid-block form: single head over all pixels, group norm first.
    init(vae w: Weights, channels: Int, groups: Int, eps: Float) throws {
        groupNorm = try GroupNorm(w["group_norm"], channels: channels, groups: groups, eps: eps)
        toQ = try Linear(w["to_q"], in: channels, out: channels)
        toK = try Linear(w["to_k"], in: channels, out: channels)
        toV = try Linear(w["to_v"], in: channels, out: channels)
        toOut = try Linear(w["to_out.0"], in: channels, out: channels)
        heads = 1
    }

    /// to_out(softmax(q·kᵀ/√d)·v) + residual, written to `output` (which may be `residual`).
    /// x: [queryDim, B, Tq] (already normalised), context: [keyDim, B, Tk] or nil for
    /// self-attention. Later: q/k/v and the attention can run in chunks of query tokens.
    func attend(_ x: Tensor, context: Tensor?, residual: Tensor, output: Tensor, pool: ThreadPool) {
        let kv = context ?? x
        precondition(kv.batch == x.batch)
        let q = toQ(x, pool: pool)
        let k = toK(kv, pool: pool)
        let v = toV(kv, pool: pool)
        let o = Tensor(channels: q.channels, like: x)
        Kernels.attention(query: q.pointer, key: k.pointer, value: v.pointer, heads: heads,
                          headDim: q.channels / heads, batch: x.batch, queryTokens: x.pixels,
                          keyTokens: kv.pixels, causal: false, output: o.data, pool: pool)
        toOut.apply(o, residual: residual, into: output, pool: pool)
    }

    /// The VAE form: x + to_out(attention(group_norm(x))) as a new tensor.
    /// (rescale_output_factor is 1 in every VAE config diffusers builds.)
    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        let h = groupNorm.map { $0(x, pool: pool) } ?? x
        let y = Tensor(channels: x.channels, like: x)
        attend(h, context: nil, residual: x, output: y, pool: pool)
        return y
    }
}
