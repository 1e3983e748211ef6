import CKernels

/// Winograd F(4×4, 3×3) for 3×3, stride 1, padding 1, f32 products only: each 4×4 output
/// tile costs 36 multiplies per (input, output) channel pair instead of 144 (direct) or 64
/// (four F(2×2, 3×3) tiles), i.e. 1.78× fewer than `Winograd`. Same structure as
/// `Winograd.partF32`: per block of tiles, V = Bᵀ d B for all input channels (d = the 6×6
/// patch at (4ty − 1, 4tx − 1)); per block of output channels, U = G g Gᵀ and 36 GEMMs
/// M[ξ] = U[ξ] · V[ξ] by Gemm.microKernel; then y = Aᵀ M A. Its transforms have larger
/// coefficients (up to 8 and 1/24), so it rounds more than F(2, 3): `MaxNMSE.winograd43`.
/// bf16 products keep F(2, 3), whose error stays below the bf16 rounding. Under the AVX-512
/// variants the three transforms run in C (`pd_winograd43_*_avx512`, 16 tiles or channels per
/// zmm), bitwise equal to the Swift code below, which every other variant runs.
///
/// Matrices (Lavin & Gray 2015, points 0, ±1, ±2):
///   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
///   G  = [1/4 0 0; −1/6 −1/6 −1/6; −1/6 1/6 −1/6; 1/24 1/12 1/6; 1/24 −1/12 1/6; 0 0 1]
///   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
enum Winograd43 {
    typealias V = NativeF32

    /// Output channels per U/M block (as in F(2, 3): U is then 36·48·Cin floats).
    static let rowBlock = Winograd.rowBlock
    /// Bound on V's size in floats (36·Cin·tb): 4 MiB, half of F(2, 3)'s, which keeps the f32
    /// `stream` peak where it was; `ScratchPolicy.roomy` allows 16 MiB. U is transformed
    /// once per tile block: at 320 channels and 64×64 (256 tiles) the 4 MiB blocks hold 80
    /// tiles, so each part transforms its U four times (6 % of an SD-Turbo 512² run's CPU
    /// time in `perf`), the 16 MiB blocks once (2.7 %).
    static let maxTransformedInput = 1 << 20
    static let roomyTransformedInput = 1 << 22

    typealias Tiles = Winograd.Tiles

    /// The 4×4 tiles as the C transforms (winograd43_transforms.c) take them; nil where
    /// the sizes would not fit their 32-bit fields.
    static func cTiles(_ tiling: Tiles) -> pd_winograd_tiles? {
        let g = tiling.g
        guard tiling.size == 4, g.channels <= Int(Int32.max), g.width <= Int(Int32.max),
              g.height <= Int(Int32.max) else { return nil }
        return pd_winograd_tiles(channels: Int32(g.channels), width: Int32(g.width), height: Int32(g.height),
                                 tiles_x: Int32(tiling.tilesX), tiles_y: Int32(tiling.tilesY), plane_size: g.planeSize,
                                 channel_stride: g.channelStride)
    }

    /// Where F(4, 3) measured faster than F(2, 3) (`pocketsd bench --precision f32`, 2
    /// threads, GFLOP/s of the direct algorithm): 459 vs 396 at 320 ch 64×64, 408 vs 347 at
    /// 640 ch 32×32, 422 vs 367 at 512 ch 64×64; but 351 vs 363 at 128 ch 256×256, where
    /// the transforms (per channel, not per channel pair) weigh more. Enough 4×4 tiles to
    /// fill the GEMMs' column panels.
    static func pays(for g: Conv.Geometry, outChannels: Int) -> Bool {
        g.channels >= 256 && outChannels >= 64 && Tiles(g: g, size: 4).count >= 64
    }

    static func conv3x3(_ weight: WeightMatrix, geometry g: Conv.Geometry,
                        input x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                        residual: UnsafePointer<Float>?, output y: UnsafeMutablePointer<Float>,
                        pool: ThreadPool) {
        precondition(g.kernel == 3 && g.stride == 1 && g.padding == 1, "Winograd F(4,3) is for 3×3, stride 1, padding 1")
        precondition(weight.cols == g.channels * 9, "conv weight is not [Cout, Cin·9]")
        let v = V.scalarCount, w = 2 * v
        let tiling = Tiles(g: g, size: 4)
        let n = weight.rows, cin = g.channels, tileCount = tiling.count
        if n == 0 || tileCount == 0 { return }
        PathCounters.record(.winograd43Convolution)
        let parts = Gemm.partCount(rows: n, columns: tileCount, tileColumns: w, threads: pool.threads)
        let kcMax = Gemm.blocking.depth(for: cin)
        pool.run(parts: parts) { part in
            let (rows, tiles) = Gemm.partition(rows: n, columns: tileCount, tileColumns: w, threads: pool.threads,
                                               part: part, parts: parts)
            if rows.isEmpty || tiles.isEmpty { return }
            let budget = pool.scratchPolicy == .roomy ? roomyTransformedInput : maxTransformedInput
            let fit = Winograd.tileBlock(wordsPerTile: 36 * cin, panelWidth: w, budget: budget)
            let tbMax = min(fit, (tiles.count + w - 1) / w * w)
            let mcMax = min(rowBlock, rows.count)
            let cinPadded = (cin + v - 1) / v * v
            let vCount = 36 * cin * tbMax, uCount = 36 * mcMax * cin, mCount = 36 * mcMax * tbMax
            let scratch = pool.scratch(part: part, count: vCount + uCount + mCount + 9 * cinPadded
                                       + Gemm.tileRows * w + 40 * v)
            let vp = scratch, u = vp + vCount, m = u + uCount, rowBuffer = m + mCount
            let edge = rowBuffer + 9 * cinPadded, patch = edge + Gemm.tileRows * w
            var t0 = tiles.lowerBound
            while t0 < tiles.upperBound {
                let tb = min(tbMax, tiles.upperBound - t0)
                let panels = (tb + w - 1) / w, ldm = panels * w
                transformInput(tiling, x, firstTile: t0, count: tb, panels: panels, into: vp, patch: patch)
                var oc0 = rows.lowerBound
                while oc0 < rows.upperBound {
                    let mc = min(mcMax, rows.upperBound - oc0)
                    transformWeights(weight, firstRow: oc0, count: mc, into: u, rowBuffer: rowBuffer)
                    Winograd.products(36, u: u, v: vp, m: m, rows: mc, channels: cin, panels: panels,
                                      depthBlock: kcMax, edge: edge)
                    transformOutput(tiling, m, rowStride: ldm, firstRow: oc0, rows: mc, firstTile: t0, count: tb,
                                    bias: bias, residual: residual, output: y, patch: patch)
                    oc0 += mc
                }
                t0 += tb
            }
        }
    }

    // MARK: the 1-D transforms

    /// Bᵀ applied to six values (one column or row of the patch).
    @inline(__always)
    static func bt(_ d0: V, _ d1: V, _ d2: V, _ d3: V, _ d4: V, _ d5: V) -> (V, V, V, V, V, V) {
        let four = V(repeating: 4), five = V(repeating: 5), two = V(repeating: 2)
        let a = d4 - d2, b = d3 - d1
        let p = d4 - four * d2, q = d3 - four * d1
        return (four * d0 - five * d2 + d4, p + q, p - q, a + two * b, a - two * b, four * d1 - five * d3 + d5)
    }

    /// Aᵀ applied to six values.
    @inline(__always)
    static func at(_ m0: V, _ m1: V, _ m2: V, _ m3: V, _ m4: V, _ m5: V) -> (V, V, V, V) {
        let s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4
        let two = V(repeating: 2), four = V(repeating: 4), eight = V(repeating: 8)
        return (m0 + s12 + s34, d12 + two * d34, s12 + four * s34, d12 + eight * d34 + m5)
    }

    /// G applied to three values.
    @inline(__always)
    static func gt(_ g0: V, _ g1: V, _ g2: V) -> (V, V, V, V, V, V) {
        let quarter = V(repeating: 0.25), sixth = V(repeating: 1.0 / 6)
        let a = (g0 + g2) * sixth, b = g1 * sixth
        let c = g0 * V(repeating: 1.0 / 24) + g2 * sixth, d = g1 * V(repeating: 1.0 / 12)
        return (g0 * quarter, V() - a - b, b - a, c + d, c - d, g2)
    }

    // MARK: input transform

    /// V for tiles firstTile ..< firstTile+count into vp[ξ][panel][ic][2V] (lane = tile within
    /// its panel; lanes past `count` zero). The 6×6 patches go through `patch` (36 of its 40
    /// vectors): by stride-4 vector loads for v tiles of one tile row, else lane by lane.
    static func transformInput(_ tiling: Tiles, _ x: UnsafePointer<Float>, firstTile t0: Int, count tb: Int,
                               panels: Int, into vp: UnsafeMutablePointer<Float>, patch: UnsafeMutablePointer<Float>) {
        let v = V.scalarCount, w = 2 * v
        if Kernels.variant.usesAVX512Transforms, w % 16 == 0, panels * w <= Int(PD_WINOGRAD43_MAX_LANES),
           var c = cTiles(tiling) {
            pd_winograd43_input_avx512(&c, x, t0, Int32(tb), Int32(panels), Int32(w), vp, panels * tiling.g.channels * w)
            return
        }
        let g = tiling.g, cin = g.channels, width = g.width, height = g.height, cs = g.channelStride
        let xiStride = panels * cin * w, total = cin * cs
        let laneIndex = V.laneIndex
        var j0 = 0
        while j0 < panels * w {
            let dst0 = vp + (j0 / w) * cin * w + (j0 % w)
            let valid = max(0, min(v, tb - j0))
            let first = valid > 0 ? tiling.locate(t0 + j0) : (plane: 0, ty: 0, tx: 0)
            // Vector path: v tiles of one tile row; lane l reads columns c0 + c + 4l, masked
            // outside the image (lo ≤ l < hi for column c).
            let vectorRow = valid == v && first.tx + v <= tiling.tilesX
            let r0 = 4 * first.ty - 1, c0 = 4 * first.tx - 1
            for ic in 0..<cin {
                let base = ic * cs + first.plane + r0 * width + c0
                if vectorRow && base >= 0 && base + 5 * width + 5 + 4 * v <= total {
                    for r in 0..<6 {
                        let rowInside = r0 + r >= 0 && r0 + r < height
                        for c in 0..<6 {
                            var d = V()
                            if rowInside {
                                let lo = Float(-c0 - c) / 4, hi = Float(width - c0 - c) / 4
                                d = V.loadEvery4(x + base + r * width + c).keeping(index: laneIndex, from: lo, below: hi)
                            }
                            d.store(patch + (r * 6 + c) * v)
                        }
                    }
                } else {
                    gatherPatch(tiling, x, channel: ic, firstTile: t0 + j0, lanes: valid, into: patch)
                }
                @inline(__always) func d(_ r: Int, _ c: Int) -> V { V.load(patch + (r * 6 + c) * v) }

                // Bᵀ down each column, then along each row; store ξ = 6i + j.
                var t = (V(), V(), V(), V(), V(), V())
                for c in 0..<6 {
                    t = bt(d(0, c), d(1, c), d(2, c), d(3, c), d(4, c), d(5, c))
                    t.0.store(patch + (0 * 6 + c) * v); t.1.store(patch + (1 * 6 + c) * v)
                    t.2.store(patch + (2 * 6 + c) * v); t.3.store(patch + (3 * 6 + c) * v)
                    t.4.store(patch + (4 * 6 + c) * v); t.5.store(patch + (5 * 6 + c) * v)
                }
                let dst = dst0 + ic * w
                for i in 0..<6 {
                    let r = bt(d(i, 0), d(i, 1), d(i, 2), d(i, 3), d(i, 4), d(i, 5))
                    r.0.store(dst + (6 * i) * xiStride); r.1.store(dst + (6 * i + 1) * xiStride)
                    r.2.store(dst + (6 * i + 2) * xiStride); r.3.store(dst + (6 * i + 3) * xiStride)
                    r.4.store(dst + (6 * i + 4) * xiStride); r.5.store(dst + (6 * i + 5) * xiStride)
                }
            }
            j0 += v
        }
    }

    /// The 6×6 patches of `lanes` tiles from `firstTile` on, channel `ic`, lane by lane into
    /// patch[36][v] (zero outside the image and past `lanes`).
    static func gatherPatch(_ tiling: Tiles, _ x: UnsafePointer<Float>, channel ic: Int, firstTile t: Int,
                            lanes: Int, into patch: UnsafeMutablePointer<Float>) {
        let v = V.scalarCount, g = tiling.g, width = g.width, height = g.height
        for k in 0..<(36 * v) { patch[k] = 0 }
        for l in 0..<lanes {
            let (plane, ty, tx) = tiling.locate(t + l)
            let base = ic * g.channelStride + plane
            for r in 0..<6 {
                let iy = 4 * ty - 1 + r
                if iy < 0 || iy >= height { continue }
                let row = x + base + iy * width
                for c in 0..<6 {
                    let ix = 4 * tx - 1 + c
                    if ix >= 0 && ix < width { patch[(r * 6 + c) * v + l] = row[ix] }
                }
            }
        }
    }

    // MARK: weight transform

    /// U for output channels firstRow ..< firstRow+count into u[ξ][r][ic] (row stride Cin),
    /// vectorised over input channels as in `Winograd.transformWeights`.
    static func transformWeights(_ weight: WeightMatrix, firstRow n0: Int, count mc: Int,
                                 into u: UnsafeMutablePointer<Float>, rowBuffer t: UnsafeMutablePointer<Float>) {
        if Kernels.variant.usesAVX512Transforms {
            pd_winograd43_weights_avx512(Int32(weight.type.rawValue), weight.data, weight.scales, Int32(weight.cols),
                                         n0, Int32(mc), u)
            return
        }
        let v = V.scalarCount
        let cin = weight.cols / 9
        let cinPadded = (cin + v - 1) / v * v
        let xiStride = mc * cin
        for r in 0..<mc {
            Winograd.transposedRow(weight, row: n0 + r, into: t)
            var ic = 0
            while ic < cin {
                let p = t + ic
                @inline(__always) func g(_ e: Int) -> V { V.load(p + e * cinPadded) }
                // G down each kernel column (q[i][k]), then along each row: u[i][j].
                let c0 = gt(g(0), g(3), g(6)), c1 = gt(g(1), g(4), g(7)), c2 = gt(g(2), g(5), g(8))
                let dst = u + r * cin + ic
                let lanes = min(v, cin - ic)
                @inline(__always) func store(_ value: V, _ xi: Int) {
                    let out = dst + xi * xiStride
                    if lanes == v {
                        value.store(out)
                    } else {
                        for l in 0..<lanes { out[l] = value[l] }
                    }
                }
                @inline(__always) func emit(_ i: Int, _ q0: V, _ q1: V, _ q2: V) {
                    let e = gt(q0, q1, q2)
                    store(e.0, 6 * i); store(e.1, 6 * i + 1); store(e.2, 6 * i + 2)
                    store(e.3, 6 * i + 3); store(e.4, 6 * i + 4); store(e.5, 6 * i + 5)
                }
                emit(0, c0.0, c1.0, c2.0); emit(1, c0.1, c1.1, c2.1); emit(2, c0.2, c1.2, c2.2)
                emit(3, c0.3, c1.3, c2.3); emit(4, c0.4, c1.4, c2.4); emit(5, c0.5, c1.5, c2.5)
                ic += v
            }
        }
    }

    // MARK: output transform

    /// y[oc, b, 4ty + i, 4tx + j] (+ bias, + residual) from m[ξ][r][tile], skipping outputs
    /// outside the image.
    static func transformOutput(_ tiling: Tiles, _ m: UnsafeMutablePointer<Float>, rowStride ldm: Int,
                                firstRow n0: Int, rows mc: Int, firstTile t0: Int, count tb: Int,
                                bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                                output y: UnsafeMutablePointer<Float>, patch: UnsafeMutablePointer<Float>) {
        let v = V.scalarCount
        if Kernels.variant.usesAVX512Transforms, ldm % 16 == 0, tb <= Int(PD_WINOGRAD43_MAX_LANES),
           var c = cTiles(tiling) {
            pd_winograd43_output_avx512(&c, m, ldm, n0, Int32(mc), t0, Int32(tb), bias, residual, y)
            return
        }
        let g = tiling.g, width = g.width, height = g.height, cs = g.channelStride
        let xiStride = mc * ldm
        for r in 0..<mc {
            let oc = n0 + r
            let b = V(repeating: bias?[oc] ?? 0)
            var j0 = 0
            while j0 < tb {
                let src = m + r * ldm + j0
                @inline(__always) func ld(_ i: Int, _ j: Int) -> V { V.load(src + (6 * i + j) * xiStride) }
                // Aᵀ down each column into s[i][j] (patch), then along each row: y[i][j].
                for j in 0..<6 {
                    let s = at(ld(0, j), ld(1, j), ld(2, j), ld(3, j), ld(4, j), ld(5, j))
                    s.0.store(patch + (0 * 6 + j) * v); s.1.store(patch + (1 * 6 + j) * v)
                    s.2.store(patch + (2 * 6 + j) * v); s.3.store(patch + (3 * 6 + j) * v)
                }
                @inline(__always) func s(_ i: Int, _ j: Int) -> V { V.load(patch + (i * 6 + j) * v) }
                for i in 0..<4 {
                    let o = at(s(i, 0), s(i, 1), s(i, 2), s(i, 3), s(i, 4), s(i, 5))
                    (o.0 + b).store(patch + (24 + i * 4) * v); (o.1 + b).store(patch + (24 + i * 4 + 1) * v)
                    (o.2 + b).store(patch + (24 + i * 4 + 2) * v); (o.3 + b).store(patch + (24 + i * 4 + 3) * v)
                }
                for l in 0..<min(v, tb - j0) {
                    let (plane, ty, tx) = tiling.locate(t0 + j0 + l)
                    for i in 0..<4 where 4 * ty + i < height {
                        let rowStart = oc * cs + plane + (4 * ty + i) * width + 4 * tx
                        for j in 0..<4 where 4 * tx + j < width {
                            var value = patch[(24 + i * 4 + j) * v + l]
                            if let residual { value += residual[rowStart + j] }
                            y[rowStart + j] = value
                        }
                    }
                }
                j0 += v
            }
        }
    }
}
