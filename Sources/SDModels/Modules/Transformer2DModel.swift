// Matches diffusers.models.transformers.transformer_2d.Transformer2DModel (continuous input)
// and attention.BasicTransformerBlock / FeedForward / GEGLU, as SD 1.x/2.x use them.
import SDKernels

struct Transformer2DModel {
    let norm: GroupNorm                             // norm: [C], eps 1e-6
    let projIn: Linear                              // proj_in: [C, C] or 1×1 conv [C, C, 1, 1]
    let transformerBlocks: [BasicTransformerBlock]  // transformer_blocks.{i}
    let projOut: Linear                             // proj_out: [C, C] or [C, C, 1, 1]
    let scope: ResidencyScope                       // this model's weight pages

    init(_ w: Weights, channels: Int, heads: Int, layers: Int, crossAttentionDim: Int,
         groups: Int, useLinearProjection: Bool) throws {
        norm = try GroupNorm(w["norm"], channels: channels, groups: groups, eps: 1e-6)
        // The channel-major layout makes a 1×1 convolution and a per-token linear layer the
        // same product, so both forms load into a Linear.
        if useLinearProjection {
            projIn = try Linear(w["proj_in"], in: channels, out: channels)
            projOut = try Linear(w["proj_out"], in: channels, out: channels)
        } else {
            projIn = try Linear(conv1x1: w["proj_in"], in: channels, out: channels)
            projOut = try Linear(conv1x1: w["proj_out"], in: channels, out: channels)
        }
        transformerBlocks = try (0..<layers).map {
            try BasicTransformerBlock(w["transformer_blocks", $0], dim: channels, heads: heads,
                                      crossAttentionDim: crossAttentionDim)
        }
        scope = w.scope
    }

    /// x: [C, B, H, W] (the H·W pixels are the tokens), context: [Cctx, B, T] → [C, B, H, W].
    func callAsFunction(_ x: Tensor, context: Tensor, pool: ThreadPool) -> Tensor {
        scope.using {
            var h = norm(x, pool: pool)
            h = projIn(h, pool: pool)
            for block in transformerBlocks { block(h, context: context, pool: pool) }
            return projOut(h, residual: x, pool: pool)
        }
    }
}

struct BasicTransformerBlock {
    let norm1: LayerNorm  // norm1: [C]
    let attn1: Attention  // attn1: self-attention
    let norm2: LayerNorm  // norm2: [C]
    let attn2: Attention  // attn2: cross-attention over the text context
    let norm3: LayerNorm  // norm3: [C]
    let ff: FeedForward   // ff

    init(_ w: Weights, dim: Int, heads: Int, crossAttentionDim: Int) throws {
        norm1 = try LayerNorm(w["norm1"], channels: dim, eps: 1e-5)
        attn1 = try Attention(w["attn1"], queryDim: dim, keyDim: dim, heads: heads)
        norm2 = try LayerNorm(w["norm2"], channels: dim, eps: 1e-5)
        attn2 = try Attention(w["attn2"], queryDim: dim, keyDim: crossAttentionDim, heads: heads)
        norm3 = try LayerNorm(w["norm3"], channels: dim, eps: 1e-5)
        ff = try FeedForward(w["ff"], dim: dim, mult: 4)
    }

    /// Updates h: [C, B, T] in place (each sub-layer adds its output to h).
    func callAsFunction(_ h: Tensor, context: Tensor, pool: ThreadPool) {
        attn1.attend(norm1(h, pool: pool), context: nil, residual: h, output: h, pool: pool)
        attn2.attend(norm2(h, pool: pool), context: context, residual: h, output: h, pool: pool)
        ff(norm3(h, pool: pool), residualInto: h, pool: pool)
    }
}

/// FeedForward with GEGLU: net.0 = GEGLU (its `proj`), net.1 = Dropout, net.2 = Linear.
struct FeedForward {
    let proj: Linear  // net.0.proj: [2·inner, dim] (value rows, then gate rows)
    let out: Linear   // net.2: [dim, inner]
    let memory: MemoryOptions
    let scope: ResidencyScope

    init(_ w: Weights, dim: Int, mult: Int) throws {
        let inner = dim * mult
        proj = try Linear(w["net.0.proj"], in: dim, out: 2 * inner)
        out = try Linear(w["net.2"], in: inner, out: dim)
        memory = w.memory
        scope = w.scope
    }

    /// h += net.2(geglu(net.0.proj(x))). x, h: [dim, cols].
    /// The [2·inner, cols] projection would be the UNet's largest intermediate (2560 × 8192
    /// floats, 80 MiB, for SD 1.5 at 512² with guidance), so the columns (tokens) go
    /// through in chunks with one fixed scratch, the chunk's projection (GEGLU writes into
    /// the value half in place); x and h are read and written in place.
    func callAsFunction(_ x: Tensor, residualInto h: Tensor, pool: ThreadPool) {
        scope.using { run(x, residualInto: h, pool: pool) }
    }

    private func run(_ x: Tensor, residualInto h: Tensor, pool: ThreadPool) {
        let cols = x.columns, inner = out.inFeatures
        let chunk = memory.chunkColumns(rows: 2 * inner, total: cols)  // the projection alone
        let projected = Tensor(channels: 2 * inner, batch: 1, height: chunk, width: 1)
        for start in stride(from: 0, to: cols, by: chunk) {
            let n = min(chunk, cols - start)
            proj.apply(x.pointer + start, columns: n, residual: nil, into: projected.data, pool: pool, inputStride: cols)
            Kernels.geglu(projected.pointer, features: inner, columns: n, output: projected.data, pool: pool)
            out.apply(projected.pointer, columns: n, residual: h.pointer + start, into: h.data + start, pool: pool,
                      outputStride: cols)
        }
    }
}
