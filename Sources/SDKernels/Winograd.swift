import CKernels

/// Winograd F(2×2, 3×3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
/// Networks", 2015) for 3×3, stride 1, padding 1: each 2×2 output tile costs 16 multiplies
/// per (input, output) channel pair instead of 36, i.e. 2.25× fewer than direct conv.
///
///   y_tile = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A, d = the 4×4 input patch at (2ty − 1, 2tx − 1).
///
/// Over all channels and tiles the ⊙ becomes 16 independent GEMMs, one per position ξ of the
/// 4×4 transformed tile: M[ξ][Cout, T] = U[ξ][Cout, Cin] · V[ξ][Cin, T], run by the GEMM
/// micro-kernel (Gemm.microKernel, `partF32`) on panels of 2V tiles, or with
/// `Kernels.Precision.bf16` by BF16Gemm.block (`partBF16`) on bf16 pairs.
///
/// Memory, f32: nothing is cached between calls. Per part, for one block of ≤ `tileBlock`
/// tiles: V for all channels (16·Cin·tb floats, already in micro-panel order), and for one
/// block of ≤ `rowBlock` output channels: U (16·mc·Cin, transformed from the stored
/// f32/f16/q8 weights on the fly) and M (16·mc·tb). The weight transform (≈10 cycles per
/// channel pair) is redone per tile block, which costs ≈ 10 / tb of the GEMM (≈ tb cycles per
/// pair). bf16: V is written as bf16 pairs (half the bytes); U is transformed 12 rows at a
/// time into bf16 rows, and once per call into the pool's shared scratch when the
/// tiles are split across parts (every part needs all of U) and it fits
/// (`maxSharedTransformedWeights`): next to the bf16 GEMM, redoing the transform per tile
/// block took ≈ 14 % of the CPU time of a 512² UNet step and VAE decode (perf).
enum Winograd {
    typealias V = NativeF32

    /// Output channels per U/M block: a multiple of the f32 micro-kernel's 6 rows and of the
    /// bf16 kernel's 12-row tiles. 48 keeps U at 16·48·Cin floats (7.5 MiB per thread for the UNet's
    /// 2560-channel input; bf16: 3.9 MiB): with 96, SD 1.5's 512² `stream` run peaked at
    /// 129 MiB instead of 117 MiB in f32, at the same speed within noise.
    static let rowBlock = 48
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

    /// The output tiles of `size` × `size` pixels (2 here, 4 in Winograd43), row by row.
    struct Tiles {
        let g: Conv.Geometry
        var size = 2
        var tilesY: Int { (g.height + size - 1) / size }
        var tilesX: Int { (g.width + size - 1) / size }
        var count: Int { g.batch * tilesY * tilesX }
        /// (batch plane offset in x/y, tile row, tile column) of tile t.
        @inline(__always) func locate(_ t: Int) -> (plane: Int, ty: Int, tx: Int) {
            let perImage = tilesY * tilesX
            let b = t / perImage, rest = t - b * perImage
            let ty = rest / tilesX
            return (b * g.planeSize, ty, rest - ty * tilesX)
        }
        /// F(2, 3) tiles as the C transforms take them; nil where their 32-bit gather
        /// offsets would not reach (a channel of 2³¹ floats or more).
        var cTiles: pd_winograd_tiles? {
            guard size == 2, g.channelStride < Int(Int32.max), g.channels <= Int(Int32.max) else { return nil }
            return pd_winograd_tiles(channels: Int32(g.channels), width: Int32(g.width), height: Int32(g.height),
                                     tiles_x: Int32(tilesX), tiles_y: Int32(tilesY), plane_size: g.planeSize,
                                     channel_stride: g.channelStride)
        }
    }

    /// Tiles per block when one tile's V takes `words` 4-byte words (16·Cin in f32, 16·⌈Cin/2⌉
    /// in bf16, 36·Cin in F(4, 3)): V ≤ `budget` words, at most `maxTileBlock` tiles, a
    /// multiple of the panel width.
    static func tileBlock(wordsPerTile words: Int, panelWidth w: Int, budget: Int = maxTransformedInput) -> Int {
        let fit = budget / max(words, 1) / w * w
        return max(w, min(maxTileBlock, fit))
    }

    static func conv3x3(_ weight: WeightMatrix, geometry g: Conv.Geometry,
                        input x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                        residual: UnsafePointer<Float>?, output y: UnsafeMutablePointer<Float>,
                        pool: ThreadPool) {
        precondition(g.kernel == 3 && g.stride == 1 && g.padding == 1, "Winograd F(2,3) is for 3×3, stride 1, padding 1")
        precondition(weight.cols == g.channels * 9, "conv weight is not [Cout, Cin·9]")
        let tiling = Tiles(g: g)
        let n = weight.rows, tileCount = tiling.count
        if n == 0 || tileCount == 0 { return }
        let bf16 = pool.precision.elsewhere == .bf16
        let w = bf16 ? BF16Gemm.panelColumns : 2 * V.scalarCount
        let parts = Gemm.partCount(rows: n, columns: tileCount, tileColumns: w, threads: pool.threads)
        // bf16 with the tiles split across parts: every part needs every U row, so U is
        // transformed once per call into a shared buffer when it fits (instead of once per
        // tile block and part).
        var sharedU: UnsafeMutablePointer<UInt32>?
        let sharedXiStride = (g.channels + 1) / 2 * ((n + BF16Gemm.tileRows - 1) / BF16Gemm.tileRows * BF16Gemm.tileRows)
        if bf16 && Gemm.splitsColumns(rows: n, columns: tileCount, tileColumns: w, threads: pool.threads)
            && 16 * sharedXiStride <= maxSharedTransformedWeights {
            sharedU = transformWeightsShared(weight, pool: pool, xiStride: sharedXiStride)
        }
        pool.run(parts: parts) { part in
            let (rows, tiles) = Gemm.partition(rows: n, columns: tileCount, tileColumns: w, threads: pool.threads,
                                               part: part, parts: parts)
            if rows.isEmpty || tiles.isEmpty { return }
            let out = Output(tiling: tiling, bias: bias, residual: residual, y: y)
            if bf16 {
                let shared = sharedU.map { (u: UnsafePointer($0), xiStride: sharedXiStride) }
                partBF16(weight, out, x, rows: rows, tiles: tiles, sharedU: shared, scratch: pool, part: part)
            } else {
                partF32(weight, out, x, rows: rows, tiles: tiles, scratch: pool, part: part)
            }
        }
    }

    /// Where a part's output tiles go.
    struct Output {
        let tiling: Tiles
        let bias: UnsafePointer<Float>?
        let residual: UnsafePointer<Float>?
        let y: UnsafeMutablePointer<Float>
    }

    /// One part in f32: for each block of tiles V, then for each block of output channels
    /// U, the 16 GEMMs by Gemm.microKernel and the output transform.
    static func partF32(_ weight: WeightMatrix, _ out: Output, _ x: UnsafePointer<Float>,
                        rows: Range<Int>, tiles: Range<Int>, scratch pool: ThreadPool, part: Int) {
        let v = V.scalarCount, w = 2 * v
        let cin = out.tiling.g.channels
        let kcMax = Gemm.blocking.depth(for: cin)
        let tbMax = min(tileBlock(wordsPerTile: 16 * cin, panelWidth: w), (tiles.count + w - 1) / w * w)
        let mcMax = min(rowBlock, rows.count)
        let cinPadded = (cin + v - 1) / v * v
        let vCount = 16 * cin * tbMax, uCount = 16 * mcMax * cin, mCount = 16 * mcMax * tbMax
        let scratch = pool.scratch(part: part, count: vCount + uCount + mCount + 9 * cinPadded + Gemm.tileRows * w)
        let vp = scratch, u = vp + vCount, m = u + uCount, rowBuffer = m + mCount, edge = rowBuffer + 9 * cinPadded
        var t0 = tiles.lowerBound
        while t0 < tiles.upperBound {
            let tb = min(tbMax, tiles.upperBound - t0)
            let panels = (tb + w - 1) / w, ldm = panels * w
            var sink = F32Panels(vp: vp, channels: cin, xiStride: panels * cin * w)
            transformInput(out.tiling, x, firstTile: t0, count: tb, panels: panels, into: &sink)
            var oc0 = rows.lowerBound
            while oc0 < rows.upperBound {
                let mc = min(mcMax, rows.upperBound - oc0)
                transformWeights(weight, firstRow: oc0, count: mc, into: u, rowBuffer: rowBuffer)
                products(16, u: u, v: vp, m: m, rows: mc, channels: cin, panels: panels, depthBlock: kcMax, edge: edge)
                transformOutput(out.tiling, m, rowStride: ldm, firstRow: oc0, rows: mc, firstTile: t0, count: tb,
                                bias: out.bias, residual: out.residual, output: out.y)
                oc0 += mc
            }
            t0 += tb
        }
    }

    /// The `positions` f32 GEMMs M[ξ][mc, tiles] = U[ξ][mc, Cin] · V[ξ][Cin, tiles] of
    /// `partF32` (and Winograd43): u[ξ][r][ic], v in Gemm micro-panels [ξ][panel][ic][2V],
    /// m[ξ][r][panels · 2V].
    @inline(__always)
    static func products(_ positions: Int, u: UnsafeMutablePointer<Float>, v vp: UnsafeMutablePointer<Float>,
                         m: UnsafeMutablePointer<Float>, rows mc: Int, channels cin: Int, panels: Int,
                         depthBlock kcMax: Int, edge: UnsafeMutablePointer<Float>) {
        let w = 2 * V.scalarCount, ldm = panels * w
        for xi in 0..<positions {
            let a = UnsafePointer(u + xi * mc * cin)
            let bXi = vp + xi * panels * cin * w
            let c = m + xi * mc * ldm
            var pc = 0
            while pc < cin {
                let kc = min(kcMax, cin - pc)
                Gemm.block(depth: kc, a: a + pc, rowStride: cin, rows: mc, b: UnsafePointer(bXi + pc * w),
                           panelStride: cin * w, columns: ldm, c: c, rowStride: ldm,
                           epilogue: Gemm.Epilogue(addend: pc == 0 ? nil : UnsafePointer(c), bias: nil), edge: edge)
                pc += kc
            }
        }
    }

    /// One part in bf16: the same loops, with V transformed straight into BF16Gemm panels
    /// and U either shared (`sharedU`, BF16Gemm A rows of all output channels) or
    /// transformed per block.
    static func partBF16(_ weight: WeightMatrix, _ out: Output, _ x: UnsafePointer<Float>,
                         rows: Range<Int>, tiles: Range<Int>,
                         sharedU: (u: UnsafePointer<UInt32>, xiStride: Int)?, scratch pool: ThreadPool, part: Int) {
        let bw = BF16Gemm.panelColumns, br = BF16Gemm.tileRows
        let cin = out.tiling.g.channels, pairs = (cin + 1) / 2
        let pairBlock = BF16Gemm.depth(for: cin, blocking: Gemm.blocking) / 2
        let tbMax = min(tileBlock(wordsPerTile: 16 * pairs, panelWidth: bw), (tiles.count + bw - 1) / bw * bw)
        // With a shared U, blocks start on multiples of 12 rows: rows is then 0 ..< N and
        // rowBlock a multiple of 12.
        let mcMax = min(rowBlock, rows.count)
        let vbCount = 16 * pairs * tbMax, mCount = 16 * mcMax * tbMax
        let ubCount = sharedU == nil ? 16 * pairs * ((mcMax + br - 1) / br * br) : 0
        let uCount = sharedU == nil ? weightTransformScratch(channels: cin) : 0
        let scratch = pool.scratch(part: part, count: vbCount + ubCount + mCount + uCount)
        let vb = UnsafeMutableRawPointer(scratch).bindMemory(to: UInt32.self, capacity: vbCount + ubCount)
        let ub = vb + vbCount
        let m = UnsafeMutableRawPointer(ub + ubCount).bindMemory(to: Float.self, capacity: mCount + uCount)
        let u = m + mCount
        var t0 = tiles.lowerBound
        while t0 < tiles.upperBound {
            let tb = min(tbMax, tiles.upperBound - t0)
            let panels = (tb + bw - 1) / bw, ldm = panels * bw, vbStride = pairs * panels * bw
            var sink = BF16Panels(vb: vb, channels: cin, xiStride: vbStride)
            transformInput(out.tiling, x, firstTile: t0, count: tb, panels: panels, into: &sink)
            var oc0 = rows.lowerBound
            while oc0 < rows.upperBound {
                let mc = min(mcMax, rows.upperBound - oc0)
                let a: UnsafePointer<UInt32>, xiStride: Int
                if let sharedU {
                    (a, xiStride) = (sharedU.u + oc0 * pairs, sharedU.xiStride)
                } else {
                    xiStride = pairs * ((mc + br - 1) / br) * br
                    transformWeightsBF16(weight, rows: oc0..<(oc0 + mc), into: ub, xiStride: xiStride, scratch: u)
                    a = UnsafePointer(ub)
                }
                for xi in 0..<16 {
                    let c = m + xi * mc * ldm
                    var pc = 0
                    while pc < pairs {
                        let depth = min(pairBlock, pairs - pc)
                        BF16Gemm.block(rows: mc, columns: tb, pairs: depth, a: a + xi * xiStride + pc,
                                       lda: pairs, b: vb + xi * vbStride + pc * bw, panelStride: pairs * bw,
                                       c: c, rowStride: ldm, scale: nil, bias: nil, addend: pc == 0 ? nil : UnsafePointer(c))
                        pc += depth
                    }
                }
                transformOutput(out.tiling, m, rowStride: ldm, firstRow: oc0, rows: mc, firstTile: t0, count: tb,
                                bias: out.bias, residual: out.residual, output: out.y)
                oc0 += mc
            }
            t0 += tb
        }
    }

    /// Most 4-byte words of bf16 U shared across parts (16 MiB: U of up to 724 × 724
    /// channels, all SD 1.x convs but the 1280-channel ones, whose few tiles need few
    /// tile blocks anyway). The cost, SD 1.5 at 512² with `stream` (measured before the
    /// activation arena): 113.6 MiB peak, against 107.3 MiB with a 4 MiB bound.
    static let maxSharedTransformedWeights = 4 << 20

    /// Floats `transformWeightsBF16` needs: f32 U of 12 rows (plus the one float
    /// packRow reads past it) and one transposed weight row.
    static func weightTransformScratch(channels cin: Int) -> Int {
        16 * BF16Gemm.tileRows * cin + 1 + 9 * ((cin + V.scalarCount - 1) / V.scalarCount * V.scalarCount)
    }

    /// U of output channels `rows` as BF16Gemm A rows (⌈Cin/2⌉ pairs each) at a[ξ · xiStride],
    /// transformed 12 rows at a time in f32 through `scratch` (`weightTransformScratch`
    /// floats); rows past the end, up to a whole 12, zero.
    static func transformWeightsBF16(_ weight: WeightMatrix, rows: Range<Int>, into a: UnsafeMutablePointer<UInt32>,
                                     xiStride: Int, scratch: UnsafeMutablePointer<Float>) {
        if Kernels.variant.usesAVX512Transforms {
            pd_winograd23_weights_bf16_avx512(Int32(weight.type.rawValue), weight.data, weight.scales, Int32(weight.cols),
                                              rows.lowerBound, Int32(rows.count), a, xiStride)
            return
        }
        let cin = weight.cols / 9, br = BF16Gemm.tileRows, pairs = (cin + 1) / 2
        let u = scratch, rowBuffer = scratch + 16 * br * cin + 1
        var r0 = rows.lowerBound
        while r0 < rows.upperBound {
            let count = min(br, rows.upperBound - r0)
            transformWeights(weight, firstRow: r0, count: count, into: u, rowBuffer: rowBuffer)
            packTransformedWeights(u, rows: count, channels: cin, into: a + (r0 - rows.lowerBound) * pairs,
                                   xiStride: xiStride)
            r0 += br
        }
    }

    /// U for all output channels, transformed in parallel into the pool's shared scratch
    /// as BF16Gemm A rows: [ξ][N rounded up to 12][pairs] with ξ stride `xiStride`.
    static func transformWeightsShared(_ weight: WeightMatrix, pool: ThreadPool,
                                       xiStride: Int) -> UnsafeMutablePointer<UInt32> {
        let n = weight.rows, cin = weight.cols / 9, br = BF16Gemm.tileRows, pairs = (cin + 1) / 2
        let shared = UnsafeMutableRawPointer(pool.sharedScratch(count: 16 * xiStride))
            .bindMemory(to: UInt32.self, capacity: 16 * xiStride)
        let rowTiles = (n + br - 1) / br, parts = min(pool.threads, rowTiles)
        pool.run(parts: parts) { part in
            let first = rowTiles * part / parts * br, end = min(n, rowTiles * (part + 1) / parts * br)
            let scratch = pool.scratch(part: part, count: weightTransformScratch(channels: cin))
            transformWeightsBF16(weight, rows: first..<end, into: shared + first * pairs, xiStride: xiStride,
                                 scratch: scratch)
        }
        return shared
    }

    /// u[ξ][r][ic] (r < rows) into BF16Gemm A rows at a[ξ · xiStride + r · pairs], rows up
    /// to a whole 12 zero.
    static func packTransformedWeights(_ u: UnsafePointer<Float>, rows mc: Int, channels cin: Int,
                                       into a: UnsafeMutablePointer<UInt32>, xiStride: Int) {
        let br = BF16Gemm.tileRows, pairs = (cin + 1) / 2
        let padded = (mc + br - 1) / br * br
        for xi in 0..<16 {
            for r in 0..<padded {
                let dst = a + xi * xiStride + r * pairs
                if r < mc {
                    // u's next row (or what follows u) is addressable: packRow reads one past.
                    BF16Gemm.packRow(u + (xi * mc + r) * cin, count: cin, into: dst)
                } else {
                    dst.initialize(repeating: 0, count: pairs)
                }
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

    /// Where transformInput puts the 16 vectors of V for one input channel and v tiles.
    protocol InputSink {
        /// Panel width in tiles.
        static var panelWidth: Int { get }
        /// The panels as `pd_winograd23_input_avx512` takes them.
        var cPanels: (base: UnsafeMutableRawPointer, bf16: Bool, xiStride: Int) { get }
        /// Channel `ic` of tiles at lanes of the group starting at tile j0 (in order of ic).
        mutating func store(_ d: (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V), channel ic: Int, group j0: Int)
    }

    /// f32 micro-panels for Gemm.microKernel: vp[ξ][panel][ic][2V].
    struct F32Panels: InputSink {
        static var panelWidth: Int { 2 * V.scalarCount }
        let vp: UnsafeMutablePointer<Float>, channels: Int, xiStride: Int
        var cPanels: (base: UnsafeMutableRawPointer, bf16: Bool, xiStride: Int) { (UnsafeMutableRawPointer(vp), false, xiStride) }
        @inline(__always)
        mutating func store(_ d: (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V), channel ic: Int, group j0: Int) {
            let w = Self.panelWidth
            store16(d, vp + (j0 / w) * channels * w + (j0 % w) + ic * w, stride: xiStride)
        }
    }

    /// BF16Gemm column panels: vb[ξ][panel][ic / 2][32], channel pairs (ic even low, odd
    /// high; a last odd channel paired with 0).
    struct BF16Panels: InputSink {
        static var panelWidth: Int { BF16Gemm.panelColumns }
        let vb: UnsafeMutablePointer<UInt32>, channels: Int, xiStride: Int
        var even = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
        var cPanels: (base: UnsafeMutableRawPointer, bf16: Bool, xiStride: Int) { (UnsafeMutableRawPointer(vb), true, xiStride) }
        @inline(__always)
        mutating func store(_ d: (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V), channel ic: Int, group j0: Int) {
            if ic % 2 == 0 && ic + 1 < channels {
                even = d
                return
            }
            typealias Tile = (V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V)
            let zero: Tile = (V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V(), V())
            let lo: Tile = ic % 2 == 0 ? d : even
            let hi: Tile = ic % 2 == 0 ? zero : d
            let w = Self.panelWidth, pairs = (channels + 1) / 2
            let p = UnsafeMutableRawPointer(vb + (j0 / w) * pairs * w + (j0 % w) + (ic / 2) * w)
            let s = xiStride * 4
            @inline(__always) func put(_ i: Int, _ a: V, _ b: V) {
                p.storeBytes(of: BF16Gemm.pair(a, b), toByteOffset: i * s, as: NativeU32.self)
            }
            put(0, lo.0, hi.0); put(1, lo.1, hi.1); put(2, lo.2, hi.2); put(3, lo.3, hi.3)
            put(4, lo.4, hi.4); put(5, lo.5, hi.5); put(6, lo.6, hi.6); put(7, lo.7, hi.7)
            put(8, lo.8, hi.8); put(9, lo.9, hi.9); put(10, lo.10, hi.10); put(11, lo.11, hi.11)
            put(12, lo.12, hi.12); put(13, lo.13, hi.13); put(14, lo.14, hi.14); put(15, lo.15, hi.15)
        }
    }

    /// V for tiles firstTile ..< firstTile+count, all input channels, into `sink`'s
    /// panels (lane = tile within its panel; lanes past `count` zero).
    static func transformInput<Sink: InputSink>(_ tiling: Tiles, _ x: UnsafePointer<Float>, firstTile t0: Int,
                                                count tb: Int, panels: Int, into sink: inout Sink) {
        if Kernels.variant.usesAVX512Transforms, var c = tiling.cTiles,
           panels * Sink.panelWidth <= Int(PD_WINOGRAD_INPUT_MAX_LANES) {
            let target = sink.cPanels
            pd_winograd23_input_avx512(&c, x, t0, Int32(tb), Int32(panels), Int32(Sink.panelWidth), target.bf16 ? 1 : 0,
                                       target.base, target.xiStride)
            return
        }
        let v = V.scalarCount, w = Sink.panelWidth
        let g = tiling.g, cin = g.channels, width = g.width, height = g.height
        let cs = g.channelStride, total = cin * cs
        let laneIndex = V.laneIndex
        var j0 = 0
        while j0 < panels * w {
            // One group: v consecutive tiles = one vector's lanes of panel j0 / w.
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
                    sink.store(d, channel: ic, group: j0)
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
                    sink.store(d, channel: ic, group: j0)
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
    /// rowBuffer[9][Cin padded to V], so that the transform runs on vectors over ic. The
    /// AVX-512 variants run its C build (`pd_winograd23_weights_f32_avx512`, bitwise equal).
    static func transformWeights(_ weight: WeightMatrix, firstRow n0: Int, count mc: Int,
                                 into u: UnsafeMutablePointer<Float>, rowBuffer t: UnsafeMutablePointer<Float>) {
        if Kernels.variant.usesAVX512Transforms {
            pd_winograd23_weights_f32_avx512(Int32(weight.type.rawValue), weight.data, weight.scales, Int32(weight.cols),
                                             n0, Int32(mc), u, mc * (weight.cols / 9))
            return
        }
        let v = V.scalarCount
        let cin = weight.cols / 9
        let cinPadded = (cin + v - 1) / v * v
        let xiStride = mc * cin
        let half = V(repeating: 0.5)
        for r in 0..<mc {
            transposedRow(weight, row: n0 + r, into: t)
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

    /// Weight row n [Cin][3][3], converted to f32 and transposed into t[9][Cin padded to V]
    /// (zero padding), so that the transforms run on vectors over input channels.
    static func transposedRow(_ weight: WeightMatrix, row n: Int, into t: UnsafeMutablePointer<Float>) {
        let cin = weight.cols / 9
        let cinPadded = (cin + V.scalarCount - 1) / V.scalarCount * V.scalarCount
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
        if Kernels.variant.usesAVX512Transforms, var c = tiling.cTiles {
            pd_winograd23_output_avx512(&c, m, ldm, n0, Int32(mc), t0, Int32(tb), bias, residual, y)
            return
        }
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
