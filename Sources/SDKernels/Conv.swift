/// 2-D convolution as implicit GEMM: y[Cout, P] = W[Cout, Cin·k·k] · im2col(x)[Cin·k·k, P]
/// with P = B·Ho·Wo. The im2col matrix is never built: `Gemm.multiply` asks for one
/// [kc × nc] block at a time and `packIm2col` gathers it from x straight into micro-panel
/// order, so the extra memory is one GEMM B block per thread (≤ 1 MiB) whatever the image.
enum Conv {
    typealias V = NativeF32

    struct Geometry {
        let channels: Int, batch: Int, height: Int, width: Int
        let kernel: Int, stride: Int, padding: Int
        var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
        var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
        var planeSize: Int { height * width }
        /// Distance between channels in x: [Cin, B, H, W].
        var channelStride: Int { batch * height * width }
    }

    static func conv2d(_ weight: WeightMatrix, geometry g: Geometry,
                       input x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                       residual: UnsafePointer<Float>?, output y: UnsafeMutablePointer<Float>,
                       pool: ThreadPool, blocking: Gemm.Blocking? = nil,
                       algorithm: Kernels.ConvAlgorithm = .direct) {
        precondition(weight.cols == g.channels * g.kernel * g.kernel, "conv weight is not [Cout, Cin·k·k]")
        let f32 = pool.precision.elsewhere == .f32
        let int8 = pool.precision == .int8 && weight.type == .q8
        let algorithm = algorithm == .automatic && int8 && int8DirectPays(g, outChannels: weight.rows, winogradF32: f32)
            ? .direct : algorithm
        if Winograd.applies(to: g) && f32 && (algorithm == .winograd43
                                              || algorithm == .automatic && Winograd43.pays(for: g, outChannels: weight.rows)) {
            Winograd43.conv3x3(weight, geometry: g, input: x, bias: bias, residual: residual, output: y, pool: pool)
            return
        }
        if Winograd.applies(to: g) && (algorithm == .winograd || algorithm == .winograd43
                                       || algorithm == .automatic && Winograd.pays(for: g, outChannels: weight.rows)) {
            Winograd.conv3x3(weight, geometry: g, input: x, bias: bias, residual: residual, output: y, pool: pool)
            return
        }
        let columns = g.batch * g.outHeight * g.outWidth
        if g.kernel == 1 && g.stride == 1 && g.padding == 0 {
            // x [Cin, B·H·W] is already the B matrix.
            Gemm.linear(weight, input: x, columns: columns, bias: bias, residual: residual, output: y,
                        pool: pool, blocking: blocking)
            return
        }
        // Gemm's blocking in bf16 too: wider column blocks would grow the f32 im2col block.
        let blocking = blocking ?? Gemm.blocking
        let bf16 = !int8 && pool.precision.elsewhere == .bf16
        let w = int8 ? I8Gemm.panelColumns : bf16 ? BF16Gemm.panelColumns : 2 * V.scalarCount, n = weight.rows
        Gemm.forEachPart(rows: n, columns: columns, tileColumns: w, pool: pool) { part, rows, cols in
            let gemmFloats = int8
                ? I8Gemm.scratchCount(depth: weight.cols, columns: cols.count, blocking: blocking, f32Panels: true)
                : bf16
                ? BF16Gemm.scratchCount(depth: weight.cols, columns: cols.count, blocking: blocking, f32Panels: true)
                : Gemm.scratchCount(depth: weight.cols, columns: cols.count, blocking: blocking)
            let scratch = pool.scratch(part: part, count: gemmFloats)
            // Per-column gather origins of one B block (batch plane, first input row / column).
            let blockColumns = min(cols.count, blocking.maxColumns)
            let origins = UnsafeMutablePointer<ColumnOrigin>.allocate(capacity: blockColumns)
            defer { origins.deallocate() }
            let im2col: BF16Gemm.BSource = .f32Panels({ k0, kc, p0, np, dst in
                packIm2col(g, x, row: k0, depth: kc, column: p0, count: np, into: dst, origins: origins)
            })
            if int8 {
                I8Gemm.multiply(weight, rows: rows, columns: cols, output: y, rowStride: columns, bias: bias,
                                residual: residual, scratch: scratch, blocking: blocking, source: im2col)
                return
            }
            if bf16 {
                BF16Gemm.multiply(weight, rows: rows, columns: cols, output: y, rowStride: columns, bias: bias,
                                  residual: residual, scratch: scratch, blocking: blocking, source: im2col)
                return
            }
            Gemm.multiply(weight, rows: rows, columns: cols, output: y, rowStride: columns,
                          bias: bias, residual: residual, scratch: scratch, blocking: blocking) { k0, kc, p0, np, dst in
                packIm2col(g, x, row: k0, depth: kc, column: p0, count: np, into: dst, origins: origins)
            }
        }
    }

    /// Where, in int8 mode, the direct conv beats Winograd: it multiplies the file's int8
    /// weights with the int8 kernel and transforms nothing, while Winograd's products run
    /// bf16 (native bf16) or f32 and re-transform the weights on every call. Measured on
    /// every 3×3 conv shape of SD 1.5's UNet and VAE (docs/KERNELS.md, "int8 convolutions"):
    /// against f32 Winograd the direct conv wins wherever both channel counts are ≥ 320
    /// (the UNet's convs in 0.53× of the time under `avx512`, 0.54× under `avx2`), and with
    /// the 8-lane int8 kernels down to 128 channels too (the VAE decoder's 128- and
    /// 256-channel levels: its decode in 0.94× of the time under `avx2`, level under
    /// `avx512`); against bf16 Winograd only with wide inputs on few tiles, where Winograd's
    /// per-block weight transforms repeat (the UNet's convs in 0.87× of the time).
    static func int8DirectPays(_ g: Geometry, outChannels: Int, winogradF32: Bool) -> Bool {
        guard Winograd.applies(to: g) else { return false }
        if winogradF32 {
            let least = I8Gemm.implementation == .avx512VNNI ? 320 : 128
            return g.channels >= least && outChannels >= least
        }
        return g.channels >= 960 && Winograd.Tiles(g: g).count < 2048
    }

    struct ColumnOrigin {
        var planeOffset: Int  // b·H·W
        var y0: Int           // oy·stride − padding
        var x0: Int           // ox·stride − padding
    }

    /// Lanes `lane ..< lane + count` of a B micro-panel that read one source row: output
    /// columns x0, x0 + s, … of output row y0 in one batch plane, ≤ V lanes.
    struct Run {
        var lane: Int, count: Int, y0: Int, x0: Int
        /// planeOffset + y0·W + x0: where lane 0 reads for (ic, ky, kx) = (0, 0, 0).
        var offset: Int
    }

    /// B[k, p] = x[ic, b, oy·s + ky − pad, ox·s + kx − pad] (0 outside) for k = (ic·k + ky)·k + kx,
    /// p = (b·Ho + oy)·Wo + ox, rows k0 ..< k0+kc and columns p0 ..< p0+np, into micro-panels.
    ///
    /// Each panel's lanes are cut into runs that lie in one output row (`Run`), so a B row of
    /// a run is one source row read at ix, ix + s, … (s ≤ 2): one vector load for a run of V
    /// lanes, masked at the image's left and right borders. Panels within one output row
    /// take the two-vector path below; rows narrower than a panel (the UNet's 8 × 8 level,
    /// small images) are cut into runs, which made their direct convs 1.2–1.4× faster
    /// (docs/KERNELS.md, "The direct conv's gather on narrow images").
    @inline(__always)
    static func packIm2col(_ g: Geometry, _ x: UnsafePointer<Float>,
                           row k0: Int, depth kc: Int, column p0: Int, count np: Int,
                           into dst: UnsafeMutablePointer<Float>,
                           origins: UnsafeMutablePointer<ColumnOrigin>) {
        let v = V.scalarCount, w = 2 * v
        let ho = g.outHeight, wo = g.outWidth, ks = g.kernel
        for j in 0..<np {
            let p = p0 + j
            let b = p / (ho * wo), rest = p - b * ho * wo
            let oy = rest / wo, ox = rest - oy * wo
            origins[j] = ColumnOrigin(planeOffset: b * g.planeSize, y0: oy * g.stride - g.padding,
                                      x0: ox * g.stride - g.padding)
        }
        let panels = (np + w - 1) / w
        let total = g.channels * g.channelStride
        let stride = g.stride, width = g.width, height = g.height
        let vectorRuns = stride <= 2
        let index0 = V.laneIndex, index1 = index0 + V(repeating: Float(v))
        // (ic, ky, kx) of row k0; the loops below advance them without divisions.
        let ic0 = k0 / (ks * ks), ky0 = (k0 / ks) % ks, kx0 = k0 % ks
        let runs = UnsafeMutablePointer<Run>.allocate(capacity: w)
        defer { runs.deallocate() }
        for panel in 0..<panels {
            var d = dst + panel * kc * w
            let first = panel * w, count = min(w, np - first)
            let o = origins[first]
            let last = origins[first + count - 1]
            // Vector path: a full panel inside one output row, stride 1 or 2, so each B row
            // is the source row iy read at ix, ix + s, …, ix + s·(w − 1).
            if stride <= 2 && count == w && last.y0 == o.y0 && last.x0 == o.x0 + stride * (w - 1) {
                // The kx for which no lane needs masking: the loads read columns
                // ix ..< ix + s·w (loadEven reads both lanes of each pair), all inside the row.
                let kxSafeLo = max(0, -o.x0), kxSafeHi = width - stride * w + 1 - o.x0  // kx ∈ [lo, hi)
                var ic = ic0, ky = ky0, kx = kx0
                var offset = ic * g.channelStride + o.planeOffset + (o.y0 + ky) * width + o.x0 + kx
                for _ in 0..<kc {
                    let iy = o.y0 + ky
                    if iy < 0 || iy >= g.height {
                        V().store(d)
                        V().store(d + v)
                    } else if kx >= kxSafeLo && kx < kxSafeHi {
                        let s = x + offset
                        (stride == 1 ? V.load(s) : V.loadEven(s)).store(d)
                        (stride == 1 ? V.load(s + v) : V.loadEven(s + 2 * v)).store(d + v)
                    } else if offset >= 0 && offset + stride * w <= total {
                        // Border: lane j reads column ix + s·j; keep −ix/s ≤ j < (W − ix)/s.
                        let ix = o.x0 + kx
                        let lo = Float(-ix) / Float(stride), hi = Float(width - ix) / Float(stride)
                        let s = x + offset
                        (stride == 1 ? V.load(s) : V.loadEven(s)).keeping(index: index0, from: lo, below: hi).store(d)
                        (stride == 1 ? V.load(s + v) : V.loadEven(s + 2 * v)).keeping(index: index1, from: lo, below: hi)
                            .store(d + v)
                    } else {
                        // The vector load would leave x (first or last row of the tensor).
                        let ix = o.x0 + kx
                        for j in 0..<w {
                            let c = ix + stride * j
                            d[j] = c >= 0 && c < width ? x[offset + stride * j] : 0
                        }
                    }
                    d += w
                    offset += 1
                    kx += 1
                    if kx == ks {
                        kx = 0
                        offset += width - ks
                        ky += 1
                        if ky == ks {
                            ky = 0
                            offset += g.channelStride - ks * width
                            ic += 1
                        }
                    }
                }
                continue
            }
            // Panels across output rows, and the zero-padded tail panel: by runs.
            var runCount = 0, j = 0
            while j < count {
                let o = origins[first + j]
                var n = 1
                while n < v && j + n < count {
                    let c = origins[first + j + n]
                    guard c.planeOffset == o.planeOffset && c.y0 == o.y0 && c.x0 == o.x0 + stride * n else { break }
                    n += 1
                }
                runs[runCount] = Run(lane: j, count: n, y0: o.y0, x0: o.x0,
                                     offset: o.planeOffset + o.y0 * width + o.x0)
                runCount += 1
                j += n
            }
            var ky = ky0, kx = kx0
            var base = ic0 * g.channelStride + ky * width + kx
            for _ in 0..<kc {
                for r in 0..<runCount {
                    let run = runs[r], out = d + run.lane
                    let iy = run.y0 + ky, ix = run.x0 + kx, offset = base + run.offset
                    if iy < 0 || iy >= height {
                        for l in 0..<run.count { out[l] = 0 }
                    } else if vectorRuns && run.count == v && ix >= 0 && ix + stride * v <= width {
                        (stride == 1 ? V.load(x + offset) : V.loadEven(x + offset)).store(out)
                    } else if vectorRuns && run.count == v && offset >= 0 && offset + stride * v <= total {
                        // Border: lane l reads column ix + s·l; keep −ix/s ≤ l < (W − ix)/s.
                        let lo = Float(-ix) / Float(stride), hi = Float(width - ix) / Float(stride)
                        (stride == 1 ? V.load(x + offset) : V.loadEven(x + offset))
                            .keeping(index: index0, from: lo, below: hi).store(out)
                    } else {
                        // Short runs, and loads that would leave x (its first or last row).
                        for l in 0..<run.count {
                            let c = ix + stride * l
                            out[l] = c >= 0 && c < width ? x[offset + stride * l] : 0
                        }
                    }
                }
                for l in count..<w { d[l] = 0 }
                d += w
                base += 1
                kx += 1
                if kx == ks {
                    kx = 0
                    base += width - ks
                    ky += 1
                    if ky == ks {
                        ky = 0
                        base += g.channelStride - ks * width
                    }
                }
            }
        }
    }
}
