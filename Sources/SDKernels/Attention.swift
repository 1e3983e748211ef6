import CKernels

/// Flash-style attention: softmax(q·kᵀ/√d)·v per (batch, head) without materialising the
/// [Tq × Tk] scores. Queries are the vector lanes throughout, which matches the
/// channel-major layout (q, y: [heads·d, B·Tq], rows contiguous along tokens):
///   Sᵀ[j, i] = Σ_e Kᵀ[j, e] · Q[e, i]     GEMM micro-kernel, rows = keys, depth = d
///   online softmax down the key rows       running max m[i] and sum l[i] are vectors
///   O[e, i] += Σ_j V[e, j] · P[j, i]       GEMM micro-kernel, rows = d, depth = keys,
///                                          V read in place (rows contiguous along keys),
///                                          one call for all the tile's panels
/// Work items are (batch, head, query tile); each thread transposes K for its current
/// (batch, head) once into its scratch, [Tk × d], so the first product reads rows. Under
/// `--precision int8` without native bf16 the first product runs on the int8 kernel instead
/// (AttentionInt8.swift); with native bf16 both run in bf16 (AttentionBF16.swift).
enum Attention {
    typealias V = NativeF32

    /// Query micro-panels (of 2V queries) per work item: K/V blocks are reused from L1
    /// across them.
    static let panelsPerTile = 4
    /// Keys per block: multiple of the tile rows (6); Sᵀ block is blockKeys × 2V floats.
    static let blockKeys = 96
    /// Stands for −∞ in masked scores: exp2 of it minus any real score is clamped to 2⁻¹²⁶
    /// (≈1e-38), negligible next to the real key's weight ≥ 1.
    static let masked: Float = -1e30

    /// log2(e)/√d: the factor that puts the scores in log2 units (the softmax uses exp2),
    /// applied to Q (f32 and bf16 paths) or to the keys' row scales (int8 scores).
    @inline(__always)
    static func logitScale(headDim d: Int) -> Float { 1.442_695_04 / Float(d).squareRoot() }

    static func attention(query q: UnsafePointer<Float>, key k: UnsafePointer<Float>,
                          value v: UnsafePointer<Float>, heads: Int, headDim d: Int,
                          batch: Int, queryTokens tq: Int, keyTokens tk: Int, causal: Bool,
                          output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if tq == 0 || heads == 0 || batch == 0 || d == 0 { return }
        precondition(tk > 0, "attention needs at least one key")
        // Causal attention (CLIP's) always runs the f32 path.
        let products = causal ? .f32 : pool.precision.attention
        if products == .bf16 {
            attentionBF16(query: q, key: k, value: v, heads: heads, headDim: d, batch: batch, queryTokens: tq,
                          keyTokens: tk, output: y, pool: pool)
            return
        }
        // int8 mode without native bf16: the scores' product in int8 (AttentionInt8.swift).
        let int8 = products == .int8Scores
        let w = 2 * V.scalarCount
        let tileQueries = panelsPerTile * w
        let tiles = (tq + tileQueries - 1) / tileQueries
        let items = batch * heads * tiles
        let parts = min(pool.threads, items)
        // Scratch: Kᵀ [tk × d] (f32 scores; the keys' means under int8), packed Q
        // [panels][d][w] (f32 scores), Sᵀ/P [panels][blockKeys][w], O [d][panels · w], running
        // max and sum [panels][w] each, edge tile [6 × w]; under int8 then the Int8Keys regions.
        let kt = 0, qp = kt + (int8 ? (d + 15) / 16 * 16 : tk * d), sp = qp + (int8 ? 0 : panelsPerTile * d * w)
        let op = sp + panelsPerTile * blockKeys * w, mp = op + panelsPerTile * d * w
        let lp = mp + panelsPerTile * w, ep = lp + panelsPerTile * w
        let i8 = (ep + Gemm.tileRows * w + 15) / 16 * 16
        let scratchFloats = i8 + (int8 ? Int8Keys.bytes(keys: tk, headDim: d, tileQueries: tileQueries) / 4 : 0)
        let scoreScale = logitScale(headDim: d)
        pool.run(parts: parts) { part in
            let scratch = pool.scratch(part: part, count: scratchFloats)
            let int8Keys = int8 ? Int8Keys(base: UnsafeMutableRawPointer(scratch + i8), keys: tk, headDim: d,
                                           tileQueries: tileQueries) : nil
            let layout = Scratch(keysT: scratch + kt, queries: scratch + qp, scores: scratch + sp, out: scratch + op,
                                 runningMax: scratch + mp, runningSum: scratch + lp, edge: scratch + ep,
                                 int8: int8Keys)
            var packedHead = -1
            for item in items * part / parts ..< items * (part + 1) / parts {
                let head = item / tiles, tile = item - head * tiles  // head = b·heads + h
                let b = head / heads, h = head - b * heads
                if head != packedHead {
                    let kHead = k + h * d * batch * tk + b * tk
                    if let int8Keys {
                        packKeysInt8(kHead, rowStride: batch * tk, headDim: d, keys: tk, scoreScale: scoreScale,
                                     mean: layout.keysT, into: int8Keys)
                    } else {
                        transposeKeys(kHead, rowStride: batch * tk, headDim: d, keys: tk, into: layout.keysT)
                    }
                    packedHead = head
                }
                queryTile(q: q + h * d * batch * tq + b * tq, v: v + h * d * batch * tk + b * tk,
                          y: y + h * d * batch * tq + b * tq, qStride: batch * tq, vStride: batch * tk,
                          headDim: d, firstQuery: tile * tileQueries,
                          queries: min(tileQueries, tq - tile * tileQueries), keys: tk, causal: causal,
                          scratch: layout)
            }
        }
    }

    struct Scratch {
        let keysT, queries, scores, out, runningMax, runningSum, edge: UnsafeMutablePointer<Float>
        /// Set when the scores' product runs in int8.
        let int8: Int8Keys?
    }

    /// kᵀ[j, e] = k[e·stride + j]: one head's keys as rows of d.
    static func transposeKeys(_ k: UnsafePointer<Float>, rowStride: Int, headDim d: Int, keys tk: Int,
                              into kt: UnsafeMutablePointer<Float>) {
        for e in 0..<d {
            let row = k + e * rowStride
            for j in 0..<tk { kt[j * d + e] = row[j] }
        }
    }

    /// One key block of the online softmax over a panel of 2V queries, the Swift twin of
    /// `pd_softmax_block16_avx2` / `_avx512`: scores [keys][2V] (log2 units) become
    /// 2^(score − max), where max0, max1 (the running maxima) are first raised to the block's
    /// maxima; sum0, sum1 get the column sums. With `causal`, lanes whose query index (q0, q1)
    /// is below the key (firstKey + row) are first set to `masked`.
    @inline(__always)
    static func softmaxBlock(_ scores: UnsafeMutablePointer<Float>, keys nk: Int, queryIndex q0: V, _ q1: V,
                             firstKey j0: Int, causal needsMask: Bool, max0: inout V, max1: inout V,
                             sum0: inout V, sum1: inout V) {
        let lanes = V.scalarCount, w = 2 * lanes
        for j in 0..<nk {
            var s0 = V.load(scores + j * w), s1 = V.load(scores + j * w + lanes)
            if needsMask {
                // Query i sees keys j ≤ i: mask lanes whose query index is below j.
                let key = Float(j0 + j)
                s0 = V.select(s0, lanesBelow: key, of: q0, value: masked)
                s1 = V.select(s1, lanesBelow: key, of: q1, value: masked)
                s0.store(scores + j * w)
                s1.store(scores + j * w + lanes)
            }
            max0 = V.vmax(max0, s0)
            max1 = V.vmax(max1, s1)
        }
        for j in 0..<nk {
            let p0 = VectorMath.exp2(V.load(scores + j * w) - max0)
            let p1 = VectorMath.exp2(V.load(scores + j * w + lanes) - max1)
            p0.store(scores + j * w)
            p1.store(scores + j * w + lanes)
            sum0 += p0
            sum1 += p1
        }
    }

    /// One work item: queries i0 ..< i0+nq of one (batch, head); q, v, y point at that
    /// head's row 0, token 0.
    @inline(__always)
    static func queryTile(q: UnsafePointer<Float>, v: UnsafePointer<Float>,
                          y: UnsafeMutablePointer<Float>, qStride: Int, vStride: Int, headDim d: Int,
                          firstQuery i0: Int, queries nq: Int, keys tk: Int, causal: Bool,
                          scratch s: Scratch) {
        let lanes = V.scalarCount, w = 2 * lanes
        let panels = (nq + w - 1) / w
        // Q pre-scaled so that the scores come out in log2 units.
        let scale = logitScale(headDim: d)
        if let int8 = s.int8 {
            // Q as int8 B panels (its scale is in the keys' row scales).
            I8Gemm.packRows(q, rowStride: qStride, row: 0, depth: d, column: i0, count: nq, into: int8.queries)
        }
        // Q panels [d][w], pre-scaled, zero past the last query.
        for panel in 0..<panels where s.int8 == nil {
            let first = panel * w, count = min(w, nq - first)
            let dst = s.queries + panel * d * w
            for e in 0..<d {
                let src = q + e * qStride + i0 + first
                if count == w {
                    (V.load(src) * V(repeating: scale)).store(dst + e * w)
                    (V.load(src + lanes) * V(repeating: scale)).store(dst + e * w + lanes)
                } else {
                    for j in 0..<w { dst[e * w + j] = j < count ? src[j] * scale : 0 }
                }
            }
        }
        for i in 0..<panels * w { s.runningMax[i] = masked; s.runningSum[i] = 0 }
        // O: [d][tileQueries], the panels side by side, so that one block product covers them
        // all (the AVX-512 kernel pairs panels in its 14 × 32 tile).
        let ldo = panelsPerTile * w
        for i in 0..<d * ldo { s.out[i] = 0 }
        // Query index of each lane, as Float, for the causal mask.
        let laneIndex = V.laneIndex

        let keyEnd = causal ? min(tk, i0 + nq) : tk
        let build = Kernels.variant.vectorMath
        var j0 = 0
        while j0 < keyEnd {
            let nk = min(blockKeys, keyEnd - j0)
            if let int8 = s.int8 {
                int8Scores(int8, firstKey: j0, keys: nk, headDim: d, panels: panels, scores: s.scores)
            }
            for panel in 0..<panels {
                let firstQuery = i0 + panel * w
                // Causal: a block wholly after the panel's last query contributes nothing.
                if causal && j0 > firstQuery + w - 1 { continue }
                let scores = s.scores + panel * blockKeys * w
                if s.int8 == nil {
                    let qPanel = UnsafePointer(s.queries + panel * d * w)
                    Gemm.block(depth: d, a: s.keysT + j0 * d, rowStride: d, rows: nk, b: qPanel, panelStride: d * w,
                               columns: w, c: scores, rowStride: w, epilogue: Gemm.Epilogue(), edge: s.edge)
                }
                let needsMask = causal && j0 + nk - 1 > firstQuery
                let q0 = laneIndex + V(repeating: Float(firstQuery)), q1 = q0 + V(repeating: Float(lanes))
                let mp = s.runningMax + panel * w, lp = s.runningSum + panel * w
                let oldMax0 = V.load(mp), oldMax1 = V.load(mp + lanes)
                var max0 = oldMax0, max1 = oldMax1
                var sum0 = V(), sum1 = V()
                if build != .swift {
                    // The same two loops in C (bitwise the same), so that a build without
                    // -target-cpu haswell does not run them on per-lane fmaf calls. It
                    // raises the running maxima at mp in place.
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * w) { t in
                        let index = t.baseAddress!, sum = index + w
                        q0.store(index)
                        q1.store(index + lanes)
                        if build == .avx512 {
                            pd_softmax_block16_avx512(scores, Int32(nk), index, Int32(j0), needsMask ? 1 : 0, masked, mp, sum)
                        } else {
                            pd_softmax_block16_avx2(scores, Int32(nk), index, Int32(j0), needsMask ? 1 : 0, masked, mp, sum)
                        }
                        sum0 = V.load(sum)
                        sum1 = V.load(sum + lanes)
                    }
                    max0 = V.load(mp)
                    max1 = V.load(mp + lanes)
                } else {
                    softmaxBlock(scores, keys: nk, queryIndex: q0, q1, firstKey: j0, causal: needsMask,
                                 max0: &max0, max1: &max1, sum0: &sum0, sum1: &sum1)
                }
                max0.store(mp)
                max1.store(mp + lanes)
                let out = s.out + panel * w
                if j0 == 0 {
                    // First block: O and l are still zero, nothing to rescale.
                    sum0.store(lp)
                    sum1.store(lp + lanes)
                } else {
                    let alpha0 = VectorMath.exp2(oldMax0 - max0), alpha1 = VectorMath.exp2(oldMax1 - max1)
                    (V.load(lp) * alpha0 + sum0).store(lp)
                    (V.load(lp + lanes) * alpha1 + sum1).store(lp + lanes)
                    for e in 0..<d {
                        (V.load(out + e * ldo) * alpha0).store(out + e * ldo)
                        (V.load(out + e * ldo + lanes) * alpha1).store(out + e * ldo + lanes)
                    }
                }
                if causal {  // (panels past the block were skipped above)
                    Gemm.block(depth: nk, a: v + j0, rowStride: vStride, rows: d, b: UnsafePointer(scores),
                               panelStride: nk * w, columns: w, c: out, rowStride: ldo,
                               epilogue: Gemm.Epilogue(addend: UnsafePointer(out)), edge: s.edge)
                }
            }
            if !causal {
                Gemm.block(depth: nk, a: v + j0, rowStride: vStride, rows: d, b: UnsafePointer(s.scores),
                           panelStride: blockKeys * w, columns: panels * w, c: s.out, rowStride: ldo,
                           epilogue: Gemm.Epilogue(addend: UnsafePointer(s.out)), edge: s.edge)
            }
            j0 += nk
        }
        for panel in 0..<panels {
            let first = panel * w, count = min(w, nq - first)
            let lp = s.runningSum + panel * w, out = s.out + panel * w
            let inv0 = V(repeating: 1) / V.load(lp), inv1 = V(repeating: 1) / V.load(lp + lanes)
            for e in 0..<d {
                let dst = y + e * qStride + i0 + first
                let o0 = V.load(out + e * ldo) * inv0, o1 = V.load(out + e * ldo + lanes) * inv1
                if count == w {
                    o0.store(dst)
                    o1.store(dst + lanes)
                } else {
                    for j in 0..<count { dst[j] = j < lanes ? o0[j] : o1[j - lanes] }
                }
            }
        }
    }
}
