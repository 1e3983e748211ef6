import CKernels

/// `Attention.attention` with bf16 products (`Kernels.Precision.bf16`, non-causal): the same
/// flash loop over key blocks with queries as lanes, its two products run by BF16Gemm.block:
///   Sᵀ[j, i] = Σ_e K[j, e] · Q[e, i]   A = K, a row per key (pairs along e)
///   O[e, i] += Σ_j V[e, j] · P[j, i]   A = V, a row per e (pairs along keys)
/// K and V are packed once per (batch, head) and part; each query tile's Q, and each block's
/// probabilities P, as B panels of 32 queries (P is packed while it is exponentiated).
/// Softmax statistics, scores and O stay f32.
extension Attention {
    static let bf16TileQueries = 2 * BF16Gemm.panelColumns

    static func attentionBF16(query q: UnsafePointer<Float>, key k: UnsafePointer<Float>,
                              value v: UnsafePointer<Float>, heads: Int, headDim d: Int,
                              batch: Int, queryTokens tq: Int, keyTokens tk: Int,
                              output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let bw = BF16Gemm.panelColumns, br = BF16Gemm.tileRows
        let panels = bf16TileQueries / bw
        let tiles = (tq + bf16TileQueries - 1) / bf16TileQueries
        let items = batch * heads * tiles
        let parts = min(pool.threads, items)
        let dPairs = (d + 1) / 2, keyPairs = (tk + 1) / 2
        let keyTiles = (tk + br - 1) / br, dTiles = (d + br - 1) / br
        // Scratch (4-byte words): packed K and V, Q panels, P panels; then f32 scores, O,
        // running max and sum.
        let kCount = keyTiles * br * dPairs, vCount = dTiles * br * keyPairs
        let qCount = panels * dPairs * bw, pCount = (blockKeys / 2) * bw
        let sCount = blockKeys * bw, oCount = panels * d * bw, statCount = panels * bw
        let words = kCount + vCount + qCount + pCount + sCount + oCount + 2 * statCount
        pool.run(parts: parts) { part in
            let raw = UnsafeMutableRawPointer(pool.scratch(part: part, count: words))
            let packedK = raw.bindMemory(to: UInt32.self, capacity: kCount + vCount + qCount + pCount)
            let packedV = packedK + kCount, packedQ = packedV + vCount, packedP = packedQ + qCount
            let floats = UnsafeMutableRawPointer(packedP + pCount)
                .bindMemory(to: Float.self, capacity: sCount + oCount + 2 * statCount)
            let s = BF16Scratch(k: UnsafePointer(packedK), v: UnsafePointer(packedV), q: packedQ, p: packedP,
                                scores: floats, out: floats + sCount, runningMax: floats + sCount + oCount,
                                runningSum: floats + sCount + oCount + statCount)
            var packedHead = -1
            for item in items * part / parts ..< items * (part + 1) / parts {
                let head = item / tiles, tile = item - head * tiles  // head = b·heads + h
                let b = head / heads, h = head - b * heads
                let kHead = k + h * d * batch * tk + b * tk, vHead = v + h * d * batch * tk + b * tk
                if head != packedHead {
                    // K: rows = keys, pairs along e. V: rows = e, pairs along keys.
                    packKeys(kHead, rowStride: batch * tk, headDim: d, keys: tk, into: packedK)
                    packValues(vHead, rowStride: batch * tk, headDim: d, keys: tk, into: packedV)
                    packedHead = head
                }
                let i0 = tile * bf16TileQueries
                queryTileBF16(q: q + h * d * batch * tq + b * tq, y: y + h * d * batch * tq + b * tq,
                              qStride: batch * tq, headDim: d, firstQuery: i0,
                              queries: min(bf16TileQueries, tq - i0), keys: tk, scratch: s)
            }
        }
    }

    struct BF16Scratch {
        let k, v: UnsafePointer<UInt32>
        let q, p: UnsafeMutablePointer<UInt32>
        let scores, out, runningMax, runningSum: UnsafeMutablePointer<Float>
    }

    /// Kᵀ as BF16Gemm A rows: row j (a key) holds the ⌈d/2⌉ pairs (k[2i][j], k[2i+1][j]);
    /// rows up to a whole 12 zero. k: [d rows of `rowStride`], contiguous along keys.
    static func packKeys(_ k: UnsafePointer<Float>, rowStride: Int, headDim d: Int, keys tk: Int,
                         into a: UnsafeMutablePointer<UInt32>) {
        let br = BF16Gemm.tileRows, pairs = (d + 1) / 2
        for i in 0..<pairs {
            let lo = k + 2 * i * rowStride, hi = lo + rowStride, hasHigh = 2 * i + 1 < d
            for j in 0..<tk { a[j * pairs + i] = BF16Gemm.pair(lo[j], hasHigh ? hi[j] : 0) }
        }
        (a + tk * pairs).initialize(repeating: 0, count: ((tk + br - 1) / br * br - tk) * pairs)
    }

    /// V as BF16Gemm A rows: row e holds the ⌈tk/2⌉ pairs of keys (v[e][2i], v[e][2i+1]);
    /// rows up to a whole 12 zero.
    static func packValues(_ v: UnsafePointer<Float>, rowStride: Int, headDim d: Int, keys tk: Int,
                           into a: UnsafeMutablePointer<UInt32>) {
        let br = BF16Gemm.tileRows, pairs = (tk + 1) / 2
        for e in 0..<d {
            // packRow reads one float past the row, which is inside the tensor for every row
            // but the head's last (maybe the tensor's last): that one goes pair by pair.
            let row = v + e * rowStride, dst = a + e * pairs
            if e + 1 < d {
                BF16Gemm.packRow(row, count: tk, into: dst)
            } else {
                for i in 0..<pairs { dst[i] = BF16Gemm.pair(row[2 * i], 2 * i + 1 < tk ? row[2 * i + 1] : 0) }
            }
        }
        (a + d * pairs).initialize(repeating: 0, count: ((d + br - 1) / br * br - d) * pairs)
    }

    /// One work item: queries i0 ..< i0+nq of one (batch, head); q and y point at that
    /// head's row 0, token 0; K and V already packed in the scratch.
    static func queryTileBF16(q: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, qStride: Int,
                              headDim d: Int, firstQuery i0: Int, queries nq: Int, keys tk: Int,
                              scratch s: BF16Scratch) {
        let lanes = V.scalarCount, bw = BF16Gemm.panelColumns
        let panels = (nq + bw - 1) / bw, groups = bw / lanes
        let dPairs = (d + 1) / 2, keyPairs = (tk + 1) / 2
        // Q pre-scaled so that the scores come out in log2 units.
        let scale = logitScale(headDim: d)
        for panel in 0..<panels {
            let first = panel * bw, count = min(bw, nq - first)
            let dst = s.q + panel * dPairs * bw
            for i in 0..<dPairs {
                let lo = q + 2 * i * qStride + i0 + first, hi = lo + qStride
                let hasHigh = 2 * i + 1 < d
                for j in 0..<bw {
                    dst[i * bw + j] = j < count ? BF16Gemm.pair(lo[j] * scale, hasHigh ? hi[j] * scale : 0) : 0
                }
            }
        }
        for i in 0..<panels * bw { s.runningMax[i] = masked; s.runningSum[i] = 0 }
        for i in 0..<panels * d * bw { s.out[i] = 0 }

        // The softmax per block and panel in C 16 wide under the AVX-512 variants (bitwise
        // the same as softmaxPackBF16).
        let wide = Kernels.variant.usesAVX512VectorMath
        var j0 = 0
        while j0 < tk {
            let nk = min(blockKeys, tk - j0), pairs = (nk + 1) / 2
            for panel in 0..<panels {
                let scores = s.scores
                BF16Gemm.block(rows: nk, columns: bw, pairs: dPairs, a: s.k + j0 * dPairs,
                               lda: dPairs, b: s.q + panel * dPairs * bw, panelStride: dPairs * bw,
                               c: scores, rowStride: bw, scale: nil, bias: nil, addend: nil)
                let out = s.out + panel * d * bw
                let mp = s.runningMax + panel * bw, lp = s.runningSum + panel * bw
                if wide {
                    pd_softmax_pack_bf16_avx512(scores, Int32(nk), j0 == 0 ? 1 : 0, mp, lp, s.p, out, Int32(d))
                } else {
                    softmaxPackBF16(scores, keys: nk, firstBlock: j0 == 0, runningMax: mp, runningSum: lp, p: s.p,
                                    out: out, headDim: d)
                }
                BF16Gemm.block(rows: d, columns: bw, pairs: pairs, a: s.v + j0 / 2, lda: keyPairs,
                               b: s.p, panelStride: pairs * bw, c: out, rowStride: bw,
                               scale: nil, bias: nil, addend: UnsafePointer(out))
            }
            j0 += nk
        }
        for panel in 0..<panels {
            let first = panel * bw, count = min(bw, nq - first)
            let out = s.out + panel * d * bw
            for g in 0..<groups where g * lanes < count {
                let col = g * lanes
                let inv = V(repeating: 1) / V.load(s.runningSum + panel * bw + col)
                for e in 0..<d {
                    let o = V.load(out + e * bw + col) * inv
                    let dst = y + e * qStride + i0 + first + col
                    if col + lanes <= count {
                        o.store(dst)
                    } else {
                        for l in 0..<(count - col) { dst[l] = o[l] }
                    }
                }
            }
        }
    }

    /// The softmax of one key block over one panel of `BF16Gemm.panelColumns` queries, the
    /// Swift twin of `pd_softmax_pack_bf16_avx512`: with scores [keys][panelColumns] (log2
    /// units), the running maxima (at runningMax) are raised to the block's, the
    /// probabilities 2^(score − max) (`exp2NonPositiveBF16`) summed per column and packed in
    /// key pairs into P (p: [⌈keys/2⌉][panelColumns], an odd last key paired with 0). In the
    /// first block the sums are stored at runningSum; in later ones the running sums and O
    /// (out: [headDim][panelColumns]) are first rescaled by exp2(old max − new max).
    @inline(__always)
    static func softmaxPackBF16(_ scores: UnsafePointer<Float>, keys nk: Int, firstBlock: Bool,
                                runningMax: UnsafeMutablePointer<Float>, runningSum: UnsafeMutablePointer<Float>,
                                p: UnsafeMutablePointer<UInt32>, out: UnsafeMutablePointer<Float>, headDim d: Int) {
        let lanes = V.scalarCount, bw = BF16Gemm.panelColumns
        for col in stride(from: 0, to: bw, by: lanes) {
            let mp = runningMax + col, lp = runningSum + col
            let oldMax = V.load(mp)
            var newMax = oldMax
            for j in 0..<nk { newMax = V.vmax(newMax, V.load(scores + j * bw + col)) }
            // Probabilities, summed, and packed in key pairs straight into P's panel.
            var sum = V()
            var j = 0
            while j < nk {
                let p0 = VectorMath.exp2NonPositiveBF16(V.load(scores + j * bw + col) - newMax)
                let p1 = j + 1 < nk ? VectorMath.exp2NonPositiveBF16(V.load(scores + (j + 1) * bw + col) - newMax)
                                    : V()
                sum += p0 + p1
                UnsafeMutableRawPointer(p + (j / 2) * bw + col).storeBytes(of: BF16Gemm.pair(p0, p1), as: NativeU32.self)
                j += 2
            }
            newMax.store(mp)
            if firstBlock {
                sum.store(lp)
            } else {
                let alpha = VectorMath.exp2(oldMax - newMax)
                (V.load(lp) * alpha + sum).store(lp)
                for e in 0..<d { (V.load(out + e * bw + col) * alpha).store(out + e * bw + col) }
            }
        }
    }
}
