import CKernels

/// Blocked GEMM C[N, P] (+)= A[N, K] · B[K, P] with vectors along P: the engine under
/// `linear`, `conv2d` (implicit GEMM) and the two products inside `attention`.
///
/// Register tile: `tileRows` = 6 rows of A × 2 vectors of B columns.
///   x86_64 AVX2 (NativeF32 = SIMD8, 16 ymm): 12 accumulators + 2 B vectors + 1 broadcast
///   = 15 registers; 12 FMAs per k step cover the 4-cycle FMA latency on 2 FMA pipes.
///   arm64 (SIMD8 = 2 q registers, 32 q): 24 accumulators + 4 B + 1 broadcast = 29.
///   AVX-512 (SIMD16, 32 zmm): same 15 of 32 registers.
/// Cache blocking (BLIS order jc → pc → ic → jr → ir): a packed B block [kc × nc] in
/// L2/L3, one B micro-panel [kc × 2V] (24 KiB at kc = 384) stays in L1 while the
/// micro-kernel walks the rows of an A block [mc × kc] that stays in L2.
/// A is read in place with a row stride (f32 weights straight from the mapped file);
/// f16/q8 weights are converted block by block into an f32 buffer of the same shape,
/// once per (ic, pc, jc) block, which makes them run at f32 speed.
enum Gemm {
    typealias V = NativeF32

    static let tileRows = 6

    /// Chosen by a sweep over kc ∈ {128…512}, mc ∈ {96, 192, 384}, nc ∈ {256…2048} on the SD
    /// shapes (1 thread, EPYC Zen 4 with 32 KiB L1d / 1 MiB L2): within ~5 % of each
    /// shape's best; nc = 512 rather than 1024 mattered most for the wide convolutions.
    struct Blocking {
        var maxDepth = 384       // kc: one B micro-panel (kc × 2V floats, 24 KiB) stays in L1
        var maxRows = 96         // mc: A block (mc × kc floats, 144 KiB) stays in L2
        var maxColumns = 512     // nc: packed B block (kc × nc floats, 768 KiB), reused by every A block

        /// Splits `k` into equal blocks no deeper than `maxDepth`.
        func depth(for k: Int) -> Int {
            let blocks = (k + maxDepth - 1) / maxDepth
            return (k + blocks - 1) / max(blocks, 1)
        }
    }
    static let blocking = Blocking()

    /// Floats of scratch one part needs: packed B block, converted A block, edge tile.
    static func scratchCount(depth k: Int, columns: Int, blocking b: Blocking) -> Int {
        let w = 2 * V.scalarCount
        let kc = b.depth(for: k)
        let nc = min(columns, b.maxColumns)
        return kc * ((nc + w - 1) / w) * w + b.maxRows * kc + tileRows * w
    }

    /// Where the A rows come from: in place (f32) or converted into `buffer`.
    @inline(__always)
    static func rowsOfA(_ w: WeightMatrix, row n0: Int, count mc: Int,
                        column k0: Int, depth kc: Int,
                        buffer: UnsafeMutablePointer<Float>) -> (UnsafePointer<Float>, Int) {
        let k = w.cols
        switch w.type {
        case .f32:
            return (w.data.assumingMemoryBound(to: Float.self) + n0 * k + k0, k)
        case .f16:
            let build = Kernels.variant.vectorMath
            for r in 0..<mc {
                w.prefetch(aheadOf: n0 + r, column: k0, count: kc)
                let src = w.data + ((n0 + r) * k + k0) * 2
                let dst = buffer + r * kc
                switch build {
                case .avx512:
                    pd_half_to_float_avx512(src.assumingMemoryBound(to: UInt16.self), dst, kc)
                    continue
                case .avx2:
                    pd_half_to_float_avx2(src.assumingMemoryBound(to: UInt16.self), dst, kc)
                    continue
                case .swift: break
                }
                var i = 0
                while i + V.scalarCount <= kc {
                    V.loadHalf(src + i * 2).store(dst + i)
                    i += V.scalarCount
                }
                while i < kc {
                    dst[i] = Float(src.load(fromByteOffset: i * 2, as: Float16.self))
                    i += 1
                }
            }
            return (UnsafePointer(buffer), kc)
        case .q8:
            for r in 0..<mc {
                w.prefetch(aheadOf: n0 + r, column: k0, count: kc)
                let src = w.data + (n0 + r) * k + k0
                let dst = buffer + r * kc
                let scale = w.scales![n0 + r]
                let s = V(repeating: scale)
                var i = 0
                while i + V.scalarCount <= kc {
                    (V.loadInt8(src + i) * s).store(dst + i)
                    i += V.scalarCount
                }
                while i < kc {
                    dst[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) * scale
                    i += 1
                }
            }
            return (UnsafePointer(buffer), kc)
        }
    }

    /// Packs B[k0 ..< k0+kc, p0 ..< p0+np] of a row-major [K, ldb] matrix into micro-panels
    /// [⌈np / 2V⌉][kc][2V], the last one zero-padded.
    @inline(__always)
    static func packRows(_ x: UnsafePointer<Float>, rowStride ldb: Int,
                         row k0: Int, depth kc: Int, column p0: Int, count np: Int,
                         into dst: UnsafeMutablePointer<Float>) {
        let v = V.scalarCount, w = 2 * v
        let fullPanels = np / w, tail = np - fullPanels * w
        for k in 0..<kc {
            let src = x + (k0 + k) * ldb + p0
            var d = dst + k * w
            for panel in 0..<fullPanels {
                let s = src + panel * w
                V.load(s).store(d)
                V.load(s + v).store(d + v)
                d += kc * w
            }
            if tail > 0 {
                let s = src + fullPanels * w
                for j in 0..<tail { d[j] = s[j] }
                for j in tail..<w { d[j] = 0 }
            }
        }
    }

    /// What the micro-kernel adds to its accumulators before storing a C tile.
    struct Epilogue {
        /// Added element-wise, same row stride as C; may be C itself (accumulate).
        var addend: UnsafePointer<Float>?
        /// Added per row.
        var bias: UnsafePointer<Float>?
    }

    /// C[rows × columns] = acc + epilogue, acc = Σ_k A[r, k] · B[k, 0 ..< 2V].
    /// Rows past `rows` read the last valid row of A again (no padding needed, results
    /// dropped); columns past `columns` come from B's zero padding and are dropped.
    @inline(__always)
    static func microKernel(depth kc: Int,
                            a: UnsafePointer<Float>, rowStride lda: Int, rows: Int,
                            b: UnsafePointer<Float>,
                            c: UnsafeMutablePointer<Float>, rowStride ldc: Int, columns: Int,
                            epilogue: Epilogue, edge: UnsafeMutablePointer<Float>) {
        let v = V.scalarCount, w = 2 * v
        let last = rows - 1
        let a0 = a
        let a1 = a + min(1, last) * lda
        let a2 = a + min(2, last) * lda
        let a3 = a + min(3, last) * lda
        let a4 = a + min(4, last) * lda
        let a5 = a + min(5, last) * lda
        var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
        var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
        var bp = b
        for k in 0..<kc {
            // The stdlib load, not V.load: it also inlines in per-file (non-WMO) builds.
            let b0 = UnsafeRawPointer(bp).loadUnaligned(as: V.self)
            let b1 = UnsafeRawPointer(bp + v).loadUnaligned(as: V.self)
            var s = V(repeating: a0[k])
            c00 = c00.addingProduct(b0, s); c01 = c01.addingProduct(b1, s)
            s = V(repeating: a1[k])
            c10 = c10.addingProduct(b0, s); c11 = c11.addingProduct(b1, s)
            s = V(repeating: a2[k])
            c20 = c20.addingProduct(b0, s); c21 = c21.addingProduct(b1, s)
            s = V(repeating: a3[k])
            c30 = c30.addingProduct(b0, s); c31 = c31.addingProduct(b1, s)
            s = V(repeating: a4[k])
            c40 = c40.addingProduct(b0, s); c41 = c41.addingProduct(b1, s)
            s = V(repeating: a5[k])
            c50 = c50.addingProduct(b0, s); c51 = c51.addingProduct(b1, s)
            bp += w
        }
        if columns == w {
            // Full-width tile: vector stores of the valid rows (row 0 always exists).
            storeRow(c00, c01, row: 0, c: c, ldc: ldc, epilogue)
            if rows > 1 { storeRow(c10, c11, row: 1, c: c, ldc: ldc, epilogue) }
            if rows > 2 { storeRow(c20, c21, row: 2, c: c, ldc: ldc, epilogue) }
            if rows > 3 { storeRow(c30, c31, row: 3, c: c, ldc: ldc, epilogue) }
            if rows > 4 { storeRow(c40, c41, row: 4, c: c, ldc: ldc, epilogue) }
            if rows > 5 { storeRow(c50, c51, row: 5, c: c, ldc: ldc, epilogue) }
        } else {
            c00.store(edge); c01.store(edge + v)
            c10.store(edge + w); c11.store(edge + w + v)
            c20.store(edge + 2 * w); c21.store(edge + 2 * w + v)
            c30.store(edge + 3 * w); c31.store(edge + 3 * w + v)
            c40.store(edge + 4 * w); c41.store(edge + 4 * w + v)
            c50.store(edge + 5 * w); c51.store(edge + 5 * w + v)
            for r in 0..<rows {
                let bias = epilogue.bias?[r] ?? 0
                for j in 0..<columns {
                    var value = edge[r * w + j] + bias
                    if let addend = epilogue.addend { value += addend[r * ldc + j] }
                    c[r * ldc + j] = value
                }
            }
        }
    }

    /// Whether the C block products' panel layout (`PD_F32_PANEL_COLUMNS`) is this build's
    /// (2 × SIMD8; not in `SDKERNELS_AVX512` builds, which then run `portableBlock`).
    static let nativeBlockFits = 2 * V.scalarCount == Int(PD_F32_PANEL_COLUMNS)

    /// C[rows × columns] = A[rows, 0 ..< kc] · B + epilogue, B in micro-panels of 2V columns
    /// ([kc][2V] each, `panelStride` floats apart, zero past `columns`); the epilogue's
    /// pointers are for C's first element, with C's row stride. Runs `Kernels.variant`'s
    /// block product: the C AVX2 or AVX-512 kernel (CKernels/f32_gemm.c), else the portable
    /// twin.
    @inline(__always)
    static func block(depth kc: Int, a: UnsafePointer<Float>, rowStride lda: Int, rows: Int,
                      b: UnsafePointer<Float>, panelStride: Int, columns: Int,
                      c: UnsafeMutablePointer<Float>, rowStride ldc: Int, epilogue: Epilogue,
                      edge: UnsafeMutablePointer<Float>) {
        if rows <= 0 || columns <= 0 { return }
        if nativeBlockFits {
            switch Kernels.variant {
            case .avx2:
                pd_f32_gemm_block_avx2(Int32(rows), Int32(columns), Int32(kc), a, lda, b, panelStride, c, ldc,
                                       epilogue.bias, epilogue.addend)
                return
            case .avx512, .avx512BF16, .amx:
                pd_f32_gemm_block_avx512(Int32(rows), Int32(columns), Int32(kc), a, lda, b, panelStride, c, ldc,
                                         epilogue.bias, epilogue.addend)
                return
            case .portable:
                break
            }
        }
        portableBlock(depth: kc, a: a, rowStride: lda, rows: rows, b: b, panelStride: panelStride,
                      columns: columns, c: c, rowStride: ldc, epilogue: epilogue, edge: edge)
    }

    /// `block` on the Swift micro-kernel: panel by panel (one B panel stays in L1) over all
    /// row tiles. The reference twin of the C block products.
    @inline(__always)
    static func portableBlock(depth kc: Int, a: UnsafePointer<Float>, rowStride lda: Int, rows: Int,
                              b: UnsafePointer<Float>, panelStride: Int, columns: Int,
                              c: UnsafeMutablePointer<Float>, rowStride ldc: Int, epilogue: Epilogue,
                              edge: UnsafeMutablePointer<Float>) {
        let w = 2 * V.scalarCount
        var jr = 0
        while jr * w < columns {
            let columnsHere = min(w, columns - jr * w)
            var ir = 0
            while ir < rows {
                let offset = ir * ldc + jr * w
                let here = Epilogue(addend: epilogue.addend.map { $0 + offset }, bias: epilogue.bias.map { $0 + ir })
                microKernel(depth: kc, a: a + ir * lda, rowStride: lda, rows: min(tileRows, rows - ir),
                            b: b + jr * panelStride, c: c + offset, rowStride: ldc, columns: columnsHere,
                            epilogue: here, edge: edge)
                ir += tileRows
            }
            jr += 1
        }
    }

    @inline(__always)
    static func storeRow(_ x0: V, _ x1: V, row r: Int, c: UnsafeMutablePointer<Float>,
                         ldc: Int, _ epilogue: Epilogue) {
        var x0 = x0, x1 = x1
        let v = V.scalarCount
        if let bias = epilogue.bias {
            let s = V(repeating: bias[r])
            x0 += s
            x1 += s
        }
        if let addend = epilogue.addend {
            x0 += V.load(addend + r * ldc)
            x1 += V.load(addend + r * ldc + v)
        }
        x0.store(c + r * ldc)
        x1.store(c + r * ldc + v)
    }

    /// One part's share: y[rows, columns] = W · B (+ bias + residual), B supplied block by
    /// block by `packB(k0, kc, p0, np, dst)` in `packRows`' panel layout.
    /// y and residual are [N, ldc] row-major; residual may alias y.
    @inline(__always)
    static func multiply(_ weight: WeightMatrix, rows: Range<Int>, columns: Range<Int>,
                         output y: UnsafeMutablePointer<Float>, rowStride ldc: Int,
                         bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                         scratch: UnsafeMutablePointer<Float>, blocking: Blocking,
                         packB: (Int, Int, Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        let w = 2 * V.scalarCount
        let k = weight.cols
        if rows.isEmpty || columns.isEmpty { return }
        if k == 0 {
            emptyProduct(rows: rows, columns: columns, output: y, rowStride: ldc, bias: bias, residual: residual)
            return
        }
        let kcMax = blocking.depth(for: k)
        let ncMax = min(columns.count, blocking.maxColumns)
        let packed = scratch
        let converted = packed + kcMax * ((ncMax + w - 1) / w) * w
        let edge = converted + blocking.maxRows * kcMax
        var jc = columns.lowerBound
        while jc < columns.upperBound {
            let nc = min(ncMax, columns.upperBound - jc)
            var pc = 0
            while pc < k {
                let kc = min(kcMax, k - pc)
                packB(pc, kc, jc, nc, packed)
                var ic = rows.lowerBound
                while ic < rows.upperBound {
                    let mc = min(blocking.maxRows, rows.upperBound - ic)
                    let (a, lda) = rowsOfA(weight, row: ic, count: mc, column: pc, depth: kc, buffer: converted)
                    let c = y + ic * ldc + jc
                    let epilogue = pc == 0
                        ? Epilogue(addend: residual.map { $0 + ic * ldc + jc }, bias: bias.map { $0 + ic })
                        : Epilogue(addend: UnsafePointer(c), bias: nil)
                    block(depth: kc, a: a, rowStride: lda, rows: mc, b: packed, panelStride: kc * w,
                          columns: nc, c: c, rowStride: ldc, epilogue: epilogue, edge: edge)
                    ic += mc
                }
                pc += kc
            }
            jc += nc
        }
    }

    /// y = bias + residual: a product over K = 0.
    static func emptyProduct(rows: Range<Int>, columns: Range<Int>, output y: UnsafeMutablePointer<Float>,
                             rowStride ldc: Int, bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?) {
        for n in rows {
            for p in columns { y[n * ldc + p] = (bias?[n] ?? 0) + (residual?[n * ldc + p] ?? 0) }
        }
    }

    /// How to split an [N × P] output over `threads` parts: along P when it is the longer
    /// side (each part then packs only its own columns of B and re-reads all of A, which is
    /// the smaller matrix), else along N. Boundaries are multiples of the tile.
    static func partition(rows n: Int, columns p: Int, tileColumns w: Int, threads: Int, part: Int,
                          parts: Int) -> (Range<Int>, Range<Int>) {
        if splitsColumns(rows: n, columns: p, tileColumns: w, threads: threads) {
            let units = (p + w - 1) / w
            let lo = units * part / parts * w, hi = min(p, units * (part + 1) / parts * w)
            return (0..<n, lo..<max(lo, hi))
        }
        let units = (n + tileRows - 1) / tileRows
        let lo = units * part / parts * tileRows, hi = min(n, units * (part + 1) / parts * tileRows)
        return (lo..<max(lo, hi), 0..<p)
    }

    static func splitsColumns(rows n: Int, columns p: Int, tileColumns w: Int, threads: Int) -> Bool {
        p >= n && p >= threads * 4 * w
    }

    /// Runs `body(part, rows, columns)` for each non-empty part of an N × P product on
    /// `pool` (the split of `partition`): the threading of every blocked product driver.
    static func forEachPart(rows n: Int, columns p: Int, tileColumns w: Int, pool: ThreadPool,
                            _ body: (_ part: Int, _ rows: Range<Int>, _ columns: Range<Int>) -> Void) {
        let parts = partCount(rows: n, columns: p, tileColumns: w, threads: pool.threads)
        pool.run(parts: parts) { part in
            let (rows, columns) = partition(rows: n, columns: p, tileColumns: w, threads: pool.threads,
                                            part: part, parts: parts)
            if !rows.isEmpty && !columns.isEmpty { body(part, rows, columns) }
        }
    }

    static func partCount(rows n: Int, columns p: Int, tileColumns w: Int, threads: Int) -> Int {
        let units = splitsColumns(rows: n, columns: p, tileColumns: w, threads: threads)
            ? (p + w - 1) / w : (n + tileRows - 1) / tileRows
        return max(1, min(threads, units))
    }

    /// y[N, P] = W[N, K] · x[K, P] (+ bias) (+ residual), threaded; `blocking` nil: the
    /// precision's own (Gemm.blocking or BF16Gemm.blocking). Rows of x are `inputStride`
    /// apart, rows of y and of the residual `outputStride` (default: P each).
    static func linear(_ weight: WeightMatrix, input x: UnsafePointer<Float>, columns p: Int,
                       bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                       output y: UnsafeMutablePointer<Float>, pool: ThreadPool,
                       blocking: Blocking? = nil, inputStride: Int? = nil, outputStride: Int? = nil) {
        let ldb = inputStride ?? p, ldc = outputStride ?? p
        if pool.precision == .int8 && weight.type == .q8 {
            I8Gemm.linear(weight, input: x, columns: p, bias: bias, residual: residual, output: y, pool: pool,
                          blocking: blocking ?? I8Gemm.blocking, inputStride: ldb, outputStride: ldc)
            return
        }
        if pool.precision.elsewhere == .bf16 {
            BF16Gemm.linear(weight, input: x, columns: p, bias: bias, residual: residual, output: y, pool: pool,
                            blocking: blocking ?? BF16Gemm.blocking, inputStride: ldb, outputStride: ldc)
            return
        }
        let blocking = blocking ?? Gemm.blocking
        let w = 2 * V.scalarCount
        let n = weight.rows
        forEachPart(rows: n, columns: p, tileColumns: w, pool: pool) { part, rows, columns in
            let scratch = pool.scratch(part: part, count: scratchCount(depth: weight.cols,
                                                                       columns: columns.count, blocking: blocking))
            multiply(weight, rows: rows, columns: columns, output: y, rowStride: ldc,
                     bias: bias, residual: residual, scratch: scratch, blocking: blocking) { k0, kc, p0, np, dst in
                packRows(x, rowStride: ldb, row: k0, depth: kc, column: p0, count: np, into: dst)
            }
        }
    }
}

// The packers' prefetch (here, not in WeightMatrix.swift, which the fuzz targets build
// without the C module).
extension WeightMatrix {
    /// How many rows ahead of the one being converted the packers prefetch: their loads of
    /// the stored weights wait on memory. With 12, q8 → bf16 packing fell from 7.7 % to
    /// 2.4–3.2 % of a bf16 SD 1.5 UNet step's samples in `perf` (AMD EPYC Zen 5; 1 row ahead:
    /// no change).
    static let prefetchDistance = 12

    /// Prefetches columns k0 ..< k0 + kc of row n + `prefetchDistance`, if there is one.
    @inline(__always)
    func prefetch(aheadOf n: Int, column k0: Int, count kc: Int) {
        let ahead = n + Self.prefetchDistance
        guard ahead < rows else { return }
        let size = type == .f32 ? 4 : type == .f16 ? 2 : 1
        pd_prefetch(data + (ahead * cols + k0) * size, kc * size)
    }
}
