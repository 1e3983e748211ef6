/// Winograd F(2×2, 3×3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
/// Networks", 2015) for 3×3, stride 1, padding 1: each 2×2 output tile costs 16 multiplies
/// per (input, output) channel pair instead of 36, i.e. 2.25× fewer than direct conv.
///
///   y_tile = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A, d = the 4×4 input patch at (2ty − 1, 2tx − 1).
///
/// Over all channels and tiles the ⊙ becomes 16 independent GEMMs, one per position ξ of the
/// 4×4 transformed tile: M[ξ][Cout, T] = U[ξ][Cout, Cin] · V[ξ][Cin, T], run by the GEMM
/// micro-kernel (Gemm.microKernel) on panels of 2V tiles.
///
/// Memory: nothing is cached between calls. Per part, for one block of ≤ `tileBlock` tiles:
/// V for all channels (16·Cin·tb floats, already in micro-panel order), and for one block of
/// ≤ `rowBlock` output channels: U (16·mc·Cin, transformed from the stored f32/f16/q8
/// weights on the fly) and M (16·mc·tb). The weight transform (≈10 cycles per channel pair)
/// is redone per tile block, which costs ≈ 10 / tb of the GEMM (≈ tb cycles per pair).
enum Winograd {
    typealias V = NativeF32

    /// Output channels per U/M block (a multiple of the micro-kernel's 6 rows).
    static let rowBlock = 96
    /// Upper bound on tiles per block (a multiple of 2V), and on V's size in floats.
    static let maxTileBlock = 256
    static let maxTransformedInput = 2 << 20

    static func applies(to g: Conv.Geometry) -> Bool {
        g.kernel == 3 && g.stride == 1 && g.padding == 1
    }

    /// Where Winograd measured faster than the direct conv (1 thread, f16, CPU time; see
    /// KernelBenchmark.standardReport): 1.4× at 1280 ch 16×16 (64 tiles), 1.8× at 640 ch
    /// 32×32, 2× at 320 ch 64×64; 0.97× at 1280 ch 8×8 (16 tiles), where the per-call
    /// weight transform (≈ 10 cycles per channel pair against ≈ 1 per pair and tile in the
    /// GEMM) no longer pays. Few channels leave the GEMMs too shallow.
    static func pays(for g: Conv.Geometry, outChannels: Int) -> Bool {
        g.channels >= 64 && outChannels >= 64 && Tiles(g: g).count >= 64
    }

    struct Tiles {
        let g: Conv.Geometry
        var tilesY: Int { (g.height + 1) / 2 }
        var tilesX: Int { (g.width + 1) / 2 }
        var count: Int { g.batch * tilesY * tilesX }
        /// (batch plane offset in x/y, tile row, tile column) of tile t.
        @inline(__always) func locate(_ t: Int) -> (plane: Int, ty: Int, tx: Int) {
            let perImage = tilesY * tilesX
            let b = t / perImage, rest = t - b * perImage
            let ty = rest / tilesX
            return (b * g.planeSize, ty, rest - ty * tilesX)
        }
    }

    /// Tiles per block for `channels` input channels: V (16·Cin·tb floats) ≤ 8 MiB.
    static func tileBlock(channels: Int) -> Int {
        let w = 2 * V.scalarCount
        let fit = maxTransformedInput / (16 * max(channels, 1)) / w * w
        return max(w, min(maxTileBlock, fit))
    }

    static func conv3x3(_ weight: WeightMatrix, geometry g: Conv.Geometry,
                        input x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                        residual: UnsafePointer<Float>?, output y: UnsafeMutablePointer<Float>,
                        pool: ThreadPool) {
        precondition(g.kernel == 3 && g.stride == 1 && g.padding == 1, "Winograd F(2,3) is for 3×3, stride 1, padding 1")
        precondition(weight.cols == g.channels * 9, "conv weight is not [Cout, Cin·9]")
        let w = 2 * V.scalarCount, v = V.scalarCount
        let tiling = Tiles(g: g)
        let n = weight.rows, cin = g.channels, tileCount = tiling.count
        if n == 0 || tileCount == 0 { return }
        let parts = Gemm.partCount(rows: n, columns: tileCount, tileColumns: w, threads: pool.threads)
        let kcMax = Gemm.blocking.depth(for: cin)
        pool.run(parts: parts) { part in
            let (rows, tiles) = Gemm.partition(rows: n, columns: tileCount, tileColumns: w, threads: pool.threads,
                                               part: part, parts: parts)
            if rows.isEmpty || tiles.isEmpty { return }
            let tbMax = min(tileBlock(channels: cin), (tiles.count + w - 1) / w * w)
            let mcMax = min(rowBlock, rows.count)
            let cinPadded = (cin + v - 1) / v * v
            let vCount = 16 * cin * tbMax, uCount = 16 * mcMax * cin, mCount = 16 * mcMax * tbMax
            let scratch = pool.scratch(part: part, count: vCount + uCount + mCount + 9 * cinPadded + Gemm.tileRows * w)
            let vp = scratch, u = vp + vCount, m = u + uCount, rowBuffer = m + mCount, edge = rowBuffer + 9 * cinPadded
            var t0 = tiles.lowerBound
            while t0 < tiles.upperBound {
                let tb = min(tbMax, tiles.upperBound - t0)
                let panels = (tb + w - 1) / w, ldm = panels * w
                transformInput(tiling, x, firstTile: t0, count: tb, panels: panels, into: vp)
                var oc0 = rows.lowerBound
                while oc0 < rows.upperBound {
                    let mc = min(mcMax, rows.upperBound - oc0)
                    transformWeights(weight, firstRow: oc0, count: mc, into: u, rowBuffer: rowBuffer)
                    for xi in 0..<16 {
                        let a = UnsafePointer(u + xi * mc * cin)
                        let bXi = vp + xi * panels * cin * w
                        let c = m + xi * mc * ldm
                        var pc = 0
                        while pc < cin {
                            let kc = min(kcMax, cin - pc)
                            for panel in 0..<panels {
                                let b = UnsafePointer(bXi + (panel * cin + pc) * w)
                                var ir = 0
                                while ir < mc {
                                    let cc = c + ir * ldm + panel * w
                                    let epilogue = Gemm.Epilogue(addend: pc == 0 ? nil : UnsafePointer(cc), bias: nil)
                                    Gemm.microKernel(depth: kc, a: a + ir * cin + pc, rowStride: cin,
                                                     rows: min(Gemm.tileRows, mc - ir), b: b, c: cc, rowStride: ldm,
                                                     columns: w, epilogue: epilogue, edge: edge)
                                    ir += Gemm.tileRows
                                }
                            }
                            pc += kc
                        }
                    }
                    transformOutput(tiling, m, rowStride: ldm, firstRow: oc0, rows: mc, firstTile: t0, count: tb,
                                    bias: bias, residual: residual, output: y)
                    oc0 += mc
                }
                t0 += tb
            }
        }
    }

    // MARK: input transform V = Bᵀ d B

    /// Bᵀ d B for the 16 values of a 4×4 patch d[r][c] (row-major), in ξ = 4i + j order:
    /// Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1].
    @inline(__always)
    static func inputTile(_ d: inout (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V)) {
        // Rows: t_i = (Bᵀ d)_i, per column.
        let t00 = d.0 - d.8, t01 = d.1 - d.9, t02 = d.2 - d.10, t03 = d.3 - d.11
        let t10 = d.4 + d.8, t11 = d.5 + d.9, t12 = d.6 + d.10, t13 = d.7 + d.11
        let t20 = d.8 - d.4, t21 = d.9 - d.5, t22 = d.10 - d.6, t23 = d.11 - d.7
        let t30 = d.4 - d.12, t31 = d.5 - d.13, t32 = d.6 - d.14, t33 = d.7 - d.15
        // Columns: (t B)_{ij}.
        d = (t00 - t02, t01 + t02, t02 - t01, t01 - t03,
             t10 - t12, t11 + t12, t12 - t11, t11 - t13,
             t20 - t22, t21 + t22, t22 - t21, t21 - t23,
             t30 - t32, t31 + t32, t32 - t31, t31 - t33)
    }

    /// V for tiles firstTile ..< firstTile+count, all input channels, into
    /// vp[ξ][panel][ic][2V] (lane = tile within its panel; lanes past `count` zero).
    static func transformInput(_ tiling: Tiles, _ x: UnsafePointer<Float>, firstTile t0: Int, count tb: Int,
                               panels: Int, into vp: UnsafeMutablePointer<Float>) {
        let v = V.scalarCount, w = 2 * v
        let g = tiling.g, cin = g.channels, width = g.width, height = g.height
        let cs = g.channelStride, total = cin * cs
        let xiStride = panels * cin * w
        let laneIndex = V.laneIndex
        var j0 = 0
        while j0 < panels * w {
            // One group: v consecutive tiles = one vector's lanes of panel j0 / w.
            let dst0 = vp + (j0 / w) * cin * w + (j0 % w)
            let valid = min(v, tb - j0)
            let first = valid > 0 ? tiling.locate(t0 + j0) : (plane: 0, ty: 0, tx: 0)
            if valid == v && first.tx + v <= tiling.tilesX {
                // Vector path: lane l is tile tx + l, reading columns c0 + c + 2l (stride 2).
                let r0 = 2 * first.ty - 1, c0 = 2 * first.tx - 1
                let rowOK = (r0 >= 0, r0 + 1 < height, r0 + 2 < height, r0 + 3 < height)
                let interior = c0 >= 0 && c0 + 3 + w <= width
                // Lanes kept per column c: 0 ≤ c0 + c + 2l < W.
                let lo = (Float(-c0) / 2, Float(-c0 - 1) / 2, Float(-c0 - 2) / 2, Float(-c0 - 3) / 2)
                let hi = (Float(width - c0) / 2, Float(width - c0 - 1) / 2, Float(width - c0 - 2) / 2,
                          Float(width - c0 - 3) / 2)
                for ic in 0..<cin {
                    let base = ic * cs + first.plane + r0 * width + c0
                    @inline(__always) func row(_ r: Int, _ ok: Bool) -> (V, V, V, V) {
                        if !ok { return (V(), V(), V(), V()) }
                        let o = base + r * width
                        if interior {
                            return (V.loadEven(x + o), V.loadEven(x + o + 1), V.loadEven(x + o + 2), V.loadEven(x + o + 3))
                        }
                        if o >= 0 && o + 3 + w <= total {
                            return (V.loadEven(x + o).keeping(index: laneIndex, from: lo.0, below: hi.0),
                                    V.loadEven(x + o + 1).keeping(index: laneIndex, from: lo.1, below: hi.1),
                                    V.loadEven(x + o + 2).keeping(index: laneIndex, from: lo.2, below: hi.2),
                                    V.loadEven(x + o + 3).keeping(index: laneIndex, from: lo.3, below: hi.3))
                        }
                        // The vector load would leave x: gather the lanes one by one.
                        var q = (V(), V(), V(), V())
                        for l in 0..<v {
                            let col = c0 + 2 * l
                            if col >= 0 && col < width { q.0[l] = x[o + 2 * l] }
                            if col + 1 >= 0 && col + 1 < width { q.1[l] = x[o + 2 * l + 1] }
                            if col + 2 >= 0 && col + 2 < width { q.2[l] = x[o + 2 * l + 2] }
                            if col + 3 >= 0 && col + 3 < width { q.3[l] = x[o + 2 * l + 3] }
                        }
                        return q
                    }
                    let a = row(0, rowOK.0), b = row(1, rowOK.1), c = row(2, rowOK.2), e = row(3, rowOK.3)
                    var d = (a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3, c.0, c.1, c.2, c.3, e.0, e.1, e.2, e.3)
                    inputTile(&d)
                    store16(d, dst0 + ic * w, stride: xiStride)
                }
            } else {
                // General path: lanes one by one (tiles across rows/images, tail group).
                for ic in 0..<cin {
                    var d = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
                    for l in 0..<max(valid, 0) {
                        let (plane, ty, tx) = tiling.locate(t0 + j0 + l)
                        let base = ic * cs + plane
                        var patch = SIMD16<Float>()
                        for r in 0..<4 {
                            let iy = 2 * ty - 1 + r
                            if iy < 0 || iy >= height { continue }
                            for c in 0..<4 {
                                let ix = 2 * tx - 1 + c
                                if ix >= 0 && ix < width { patch[4 * r + c] = x[base + iy * width + ix] }
                            }
                        }
                        d.0[l] = patch[0]; d.1[l] = patch[1]; d.2[l] = patch[2]; d.3[l] = patch[3]
                        d.4[l] = patch[4]; d.5[l] = patch[5]; d.6[l] = patch[6]; d.7[l] = patch[7]
                        d.8[l] = patch[8]; d.9[l] = patch[9]; d.10[l] = patch[10]; d.11[l] = patch[11]
                        d.12[l] = patch[12]; d.13[l] = patch[13]; d.14[l] = patch[14]; d.15[l] = patch[15]
                    }
                    inputTile(&d)
                    store16(d, dst0 + ic * w, stride: xiStride)
                }
            }
            j0 += v
        }
    }

    @inline(__always)
    static func store16(_ d: (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V),
                        _ p: UnsafeMutablePointer<Float>, stride s: Int) {
        d.0.store(p); d.1.store(p + s); d.2.store(p + 2 * s); d.3.store(p + 3 * s)
        d.4.store(p + 4 * s); d.5.store(p + 5 * s); d.6.store(p + 6 * s); d.7.store(p + 7 * s)
        d.8.store(p + 8 * s); d.9.store(p + 9 * s); d.10.store(p + 10 * s); d.11.store(p + 11 * s)
        d.12.store(p + 12 * s); d.13.store(p + 13 * s); d.14.store(p + 14 * s); d.15.store(p + 15 * s)
    }

    // MARK: weight transform U = G g Gᵀ

    /// U for output channels firstRow ..< firstRow+count into u[ξ][r][ic] (row stride Cin).
    /// Each weight row [Cin][3][3] is first transposed (and converted) into
    /// rowBuffer[9][Cin padded to V], so that the transform runs on vectors over ic.
    static func transformWeights(_ weight: WeightMatrix, firstRow n0: Int, count mc: Int,
                                 into u: UnsafeMutablePointer<Float>, rowBuffer t: UnsafeMutablePointer<Float>) {
        let v = V.scalarCount
        let cin = weight.cols / 9
        let cinPadded = (cin + v - 1) / v * v
        let xiStride = mc * cin
        let half = V(repeating: 0.5)
        for r in 0..<mc {
            let n = n0 + r
            switch weight.type {
            case .f32:
                let src = weight.data.assumingMemoryBound(to: Float.self) + n * weight.cols
                for ic in 0..<cin { for e in 0..<9 { t[e * cinPadded + ic] = src[ic * 9 + e] } }
            case .f16:
                let src = (weight.data + n * weight.cols * 2).assumingMemoryBound(to: Float16.self)
                for ic in 0..<cin { for e in 0..<9 { t[e * cinPadded + ic] = Float(src[ic * 9 + e]) } }
            case .q8:
                let src = (weight.data + n * weight.cols).assumingMemoryBound(to: Int8.self)
                let scale = weight.scales![n]
                for ic in 0..<cin { for e in 0..<9 { t[e * cinPadded + ic] = Float(src[ic * 9 + e]) * scale } }
            }
            for e in 0..<9 { for ic in cin..<cinPadded { t[e * cinPadded + ic] = 0 } }
            var ic = 0
            while ic < cin {
                let p = t + ic
                @inline(__always) func g(_ e: Int) -> V { V.load(p + e * cinPadded) }
                // G g (4×3): rows g0k, (g0k + g1k + g2k)/2, (g0k − g1k + g2k)/2, g2k per column k;
                // then each row r ↦ (r0, (r0 + r1 + r2)/2, (r0 − r1 + r2)/2, r2) for Gᵀ.
                @inline(__always) func gt(_ x0: V, _ x1: V, _ x2: V) -> (V, V, V, V) {
                    let s = (x0 + x2) * half, h1 = x1 * half
                    return (x0, s + h1, s - h1, x2)
                }
                let g00 = g(0), g01 = g(1), g02 = g(2), g10 = g(3), g11 = g(4), g12 = g(5)
                let g20 = g(6), g21 = g(7), g22 = g(8)
                let s0 = (g00 + g20) * half, s1 = (g01 + g21) * half, s2 = (g02 + g22) * half
                let h0 = g10 * half, h1 = g11 * half, h2 = g12 * half
                let q0 = gt(g00, g01, g02), q3 = gt(g20, g21, g22)
                let q1 = gt(s0 + h0, s1 + h1, s2 + h2), q2 = gt(s0 - h0, s1 - h1, s2 - h2)
                let values = (q0.0, q0.1, q0.2, q0.3, q1.0, q1.1, q1.2, q1.3,
                              q2.0, q2.1, q2.2, q2.3, q3.0, q3.1, q3.2, q3.3)
                let dst = u + r * cin + ic
                if ic + v <= cin {
                    store16(values, dst, stride: xiStride)
                } else {
                    // Tail: the padded lanes must not spill into the next row.
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 16 * v) { tmp in
                        store16(values, tmp.baseAddress!, stride: v)
                        for xi in 0..<16 { for l in 0..<(cin - ic) { dst[xi * xiStride + l] = tmp[xi * v + l] } }
                    }
                }
                ic += v
            }
        }
    }

    // MARK: output transform y = Aᵀ m A

    /// Aᵀ = [1 1 1 0; 0 1 −1 −1]: the 2×2 outputs (y00, y01, y10, y11) of 16 values m[4i + j].
    @inline(__always)
    static func outputTile(_ m: (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V)) -> (V, V, V, V) {
        // Aᵀ m: two rows of four.
        let s00 = m.0 + m.4 + m.8, s01 = m.1 + m.5 + m.9, s02 = m.2 + m.6 + m.10, s03 = m.3 + m.7 + m.11
        let s10 = m.4 - m.8 - m.12, s11 = m.5 - m.9 - m.13, s12 = m.6 - m.10 - m.14, s13 = m.7 - m.11 - m.15
        return (s00 + s01 + s02, s01 - s02 - s03, s10 + s11 + s12, s11 - s12 - s13)
    }

    /// y[oc, b, 2ty + i, 2tx + j] (+ bias, + residual) from m[ξ][r][tile] (row stride ldm),
    /// skipping the outputs of edge tiles that fall outside an odd-sized image.
    static func transformOutput(_ tiling: Tiles, _ m: UnsafeMutablePointer<Float>, rowStride ldm: Int,
                                firstRow n0: Int, rows mc: Int, firstTile t0: Int, count tb: Int,
                                bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                                output y: UnsafeMutablePointer<Float>) {
        let v = V.scalarCount
        let g = tiling.g, width = g.width, height = g.height, cs = g.channelStride
        let xiStride = mc * ldm
        for r in 0..<mc {
            let oc = n0 + r
            let biasValue = bias?[oc] ?? 0
            var j0 = 0
            while j0 < tb {
                let src = m + r * ldm + j0
                @inline(__always) func ld(_ xi: Int) -> V { V.load(src + xi * xiStride) }
                var o = outputTile((ld(0), ld(1), ld(2), ld(3), ld(4), ld(5), ld(6), ld(7),
                                    ld(8), ld(9), ld(10), ld(11), ld(12), ld(13), ld(14), ld(15)))
                let b = V(repeating: biasValue)
                o = (o.0 + b, o.1 + b, o.2 + b, o.3 + b)
                let valid = min(v, tb - j0)
                let first = tiling.locate(t0 + j0)
                if valid == v && first.tx + v <= tiling.tilesX && 2 * (first.tx + v) <= width
                    && 2 * first.ty + 2 <= height {
                    // Vector path: interleave the lanes of (y00, y01) and (y10, y11) into rows.
                    let p = oc * cs + first.plane + 2 * first.ty * width + 2 * first.tx
                    var (r00, r01) = interleave(o.0, o.1), (r10, r11) = interleave(o.2, o.3)
                    if let residual {
                        r00 += V.load(residual + p); r01 += V.load(residual + p + v)
                        r10 += V.load(residual + p + width); r11 += V.load(residual + p + width + v)
                    }
                    r00.store(y + p); r01.store(y + p + v)
                    r10.store(y + p + width); r11.store(y + p + width + v)
                } else {
                    for l in 0..<valid {
                        let (plane, ty, tx) = tiling.locate(t0 + j0 + l)
                        let values = (o.0[l], o.1[l], o.2[l], o.3[l])
                        for i in 0..<2 where 2 * ty + i < height {
                            for j in 0..<2 where 2 * tx + j < width {
                                let p = oc * cs + plane + (2 * ty + i) * width + 2 * tx + j
                                var value = i == 0 ? (j == 0 ? values.0 : values.1) : (j == 0 ? values.2 : values.3)
                                if let residual { value += residual[p] }
                                y[p] = value
                            }
                        }
                    }
                }
                j0 += v
            }
        }
    }

    /// (a0 b0 a1 b1 …) as two vectors: the low and high halves of the interleaving.
    @inline(__always)
    static func interleave(_ a: V, _ b: V) -> (V, V) {
        let h = V.scalarCount / 2
        var lo = V(), hi = V()
        for i in 0..<h {
            lo[2 * i] = a[i]; lo[2 * i + 1] = b[i]
            hi[2 * i] = a[h + i]; hi[2 * i + 1] = b[h + i]
        }
        return (lo, hi)
    }
}
