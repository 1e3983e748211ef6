/// 2-D convolution as implicit GEMM: y[Cout, P] = W[Cout, Cin·k·k] · im2col(x)[Cin·k·k, P]
/// with P = B·Ho·Wo. The im2col matrix is never built: `Gemm.multiply` asks for one
/// [kc × nc] block at a time and `packIm2col` gathers it from x straight into micro-panel
/// order, so the extra memory is one GEMM B block per thread (≤ 1 MiB) whatever the image.
enum Conv {
    struct Geometry {
        let channels: Int, batch: Int, height: Int, width: Int
        let kernel: Int, stride: Int, padding: Int
        var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
        var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
        var planeSize: Int { height * width }
        /// Distance between channels in x: [Cin, B, H, W].
        var channelStride: Int { batch * height * width }
    }

    static func conv2d<V: FloatVector>(_: V.Type, _ weight: WeightMatrix, geometry g: Geometry,
                                       input x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                       residual: UnsafePointer<Float>?, output y: UnsafeMutablePointer<Float>,
                                       pool: ThreadPool, blocking: Gemm.Blocking = Gemm.blocking) {
        precondition(weight.cols == g.channels * g.kernel * g.kernel, "conv weight is not [Cout, Cin·k·k]")
        let columns = g.batch * g.outHeight * g.outWidth
        if g.kernel == 1 && g.stride == 1 && g.padding == 0 {
            // x [Cin, B·H·W] is already the B matrix.
            Gemm.linear(V.self, weight, input: x, columns: columns, bias: bias, residual: residual, output: y,
                        pool: pool, blocking: blocking)
            return
        }
        let w = 2 * V.scalarCount, n = weight.rows
        let parts = Gemm.partCount(rows: n, columns: columns, tileColumns: w, threads: pool.threads)
        pool.run(parts: parts) { part in
            let (rows, cols) = Gemm.partition(rows: n, columns: columns, tileColumns: w, threads: pool.threads,
                                              part: part, parts: parts)
            if rows.isEmpty || cols.isEmpty { return }
            let gemmFloats = Gemm.scratchCount(V.self, depth: weight.cols, columns: cols.count, blocking: blocking)
            let scratch = pool.scratch(part: part, count: gemmFloats)
            // Per-column gather origins of one B block (batch plane, first input row / column).
            let blockColumns = min(cols.count, blocking.maxColumns)
            let origins = UnsafeMutablePointer<ColumnOrigin>.allocate(capacity: blockColumns)
            defer { origins.deallocate() }
            Gemm.multiply(V.self, weight, rows: rows, columns: cols, output: y, rowStride: columns,
                          bias: bias, residual: residual, scratch: scratch, blocking: blocking) { k0, kc, p0, np, dst in
                packIm2col(V.self, g, x, row: k0, depth: kc, column: p0, count: np, into: dst, origins: origins)
            }
        }
    }

    struct ColumnOrigin {
        var planeOffset: Int  // b·H·W
        var y0: Int           // oy·stride − padding
        var x0: Int           // ox·stride − padding
    }

    /// B[k, p] = x[ic, b, oy·s + ky − pad, ox·s + kx − pad] (0 outside) for k = (ic·k + ky)·k + kx,
    /// p = (b·Ho + oy)·Wo + ox, rows k0 ..< k0+kc and columns p0 ..< p0+np, into micro-panels.
    @inline(__always)
    static func packIm2col<V: FloatVector>(_: V.Type, _ g: Geometry, _ x: UnsafePointer<Float>,
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
        let stride = g.stride, rowSpan = stride * w  // input floats one vector pair reads
        let index0 = V.laneIndex, index1 = index0 + V(repeating: Float(v))
        // (ic, ky, kx) of row k0, advanced incrementally: no divisions in the loop.
        var ic = k0 / (ks * ks), ky = (k0 / ks) % ks, kx = k0 % ks
        for kk in 0..<kc {
            let channel = ic * g.channelStride
            for panel in 0..<panels {
                let d = dst + (panel * kc + kk) * w
                let first = panel * w, count = min(w, np - first)
                let o = origins[first]
                // Vector path: a full panel inside one output row with stride 1 or 2: one
                // source row, columns ix, ix + s, …; lanes outside the image are masked.
                if stride <= 2 && count == w && origins[first + w - 1].x0 == o.x0 + stride * (w - 1)
                    && origins[first + w - 1].y0 == o.y0 {
                    let iy = o.y0 + ky, ix = o.x0 + kx
                    if iy < 0 || iy >= g.height {
                        V().store(d)
                        V().store(d + v)
                        continue
                    }
                    let start = channel + o.planeOffset + iy * g.width + ix
                    if start >= 0 && start + rowSpan <= total {
                        let s = x + start
                        var a0 = stride == 1 ? V.load(s) : V.loadEven(s)
                        var a1 = stride == 1 ? V.load(s + v) : V.loadEven(s + 2 * v)
                        if ix < 0 || ix + stride * (w - 1) >= g.width {
                            // Lane j reads column ix + s·j: keep −ix/s ≤ j < (W − ix)/s.
                            let lo = Float(-ix) / Float(stride), hi = Float(g.width - ix) / Float(stride)
                            a0 = a0.keeping(index: index0, from: lo, below: hi)
                            a1 = a1.keeping(index: index1, from: lo, below: hi)
                        }
                        a0.store(d)
                        a1.store(d + v)
                        continue
                    }
                }
                for j in 0..<count {
                    let c = origins[first + j]
                    let iy = c.y0 + ky, ix = c.x0 + kx
                    let inside = iy >= 0 && iy < g.height && ix >= 0 && ix < g.width
                    d[j] = inside ? x[channel + c.planeOffset + iy * g.width + ix] : 0
                }
                for j in count..<w { d[j] = 0 }
            }
            kx += 1
            if kx == ks {
                kx = 0
                ky += 1
                if ky == ks {
                    ky = 0
                    ic += 1
                }
            }
        }
    }
}
