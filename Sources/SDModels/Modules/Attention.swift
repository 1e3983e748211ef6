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
    let memory: MemoryOptions
    let scope: ResidencyScope  // this layer's weight pages

    /// The UNet form: `keyDim` is cross_attention_dim for attn2, queryDim for attn1.
    init(_ w: Weights, queryDim: Int, keyDim: Int, heads: Int) throws {
        groupNorm = nil
        toQ = try Linear(w["to_q"], in: queryDim, out: queryDim, bias: false)
        toK = try Linear(w["to_k"], in: keyDim, out: queryDim, bias: false)
        toV = try Linear(w["to_v"], in: keyDim, out: queryDim, bias: false)
        toOut = try Linear(w["to_out.0"], in: queryDim, out: queryDim)
        self.heads = heads
        memory = w.memory
        scope = w.scope
    }

    /// The VAE mid-block form: single head over all pixels, group norm first.
    init(vae w: Weights, channels: Int, groups: Int, eps: Float) throws {
        groupNorm = try GroupNorm(w["group_norm"], channels: channels, groups: groups, eps: eps)
        toQ = try Linear(w["to_q"], in: channels, out: channels)
        toK = try Linear(w["to_k"], in: channels, out: channels)
        toV = try Linear(w["to_v"], in: channels, out: channels)
        toOut = try Linear(w["to_out.0"], in: channels, out: channels)
        heads = 1
        memory = w.memory
        scope = w.scope
    }

    /// to_out(softmax(q·kᵀ/√d)·v) + residual, written to `output` (which may be `residual`).
    /// x: [queryDim, B, Tq] (already normalised), context: [keyDim, B, Tk] or nil for
    /// self-attention. One batch element at a time, its queries in column chunks, so only
    /// that element's keys and values ([inner, Tk] each) and one chunk's q and o are alive;
    /// the kernel itself never holds the [Tq × Tk] scores.
    func attend(_ x: Tensor, context: Tensor?, residual: Tensor, output: Tensor, pool: ThreadPool) {
        scope.using { attendInChunks(x, context: context, residual: residual, output: output, pool: pool) }
    }

    private func attendInChunks(_ x: Tensor, context: Tensor?, residual: Tensor, output: Tensor, pool: ThreadPool) {
        let source = context ?? x
        precondition(source.batch == x.batch && residual.count == output.count && output.channels == toOut.outFeatures)
        let tq = x.pixels, tk = source.pixels, inner = toQ.outFeatures
        // The chunk's intermediates are q and o (x, the residual and the output are read and
        // written in place).
        let chunk = memory.chunkColumns(rows: 2 * inner, total: tq)
        if chunk < tq { PathCounters.record(.chunkedAttention) }
        let q = Tensor(channels: inner, batch: 1, height: chunk, width: 1)
        let o = Tensor(channels: inner, batch: 1, height: chunk, width: 1)
        // Column chunks of x, the residual and the output are read and written in place
        // (row strides of the whole tensors).
        let rowStride = x.columns
        for b in 0..<x.batch {
            let kv = source.batchElement(b)
            let k = toK(kv, pool: pool), v = toV(kv, pool: pool)
            for start in stride(from: 0, to: tq, by: chunk) {
                let n = min(chunk, tq - start), first = b * tq + start
                toQ.apply(x.pointer + first, columns: n, residual: nil, into: q.data, pool: pool, inputStride: rowStride)
                Kernels.attention(query: q.pointer, key: k.pointer, value: v.pointer, heads: heads,
                                  headDim: inner / heads, batch: 1, queryTokens: n, keyTokens: tk,
                                  causal: false, output: o.data, pool: pool)
                toOut.apply(o.pointer, columns: n, residual: residual.pointer + first, into: output.data + first,
                            pool: pool, outputStride: rowStride)
            }
        }
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
