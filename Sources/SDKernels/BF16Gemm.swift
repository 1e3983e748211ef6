import CKernels

extension Kernels {
    /// Operand precision of the matrix products in `linear` and `conv2d` (all but the
    /// products inside `attention`).
    public enum Precision: String, Sendable, CaseIterable {
        /// f32 operands: the exact mode, what the parity tests hold to diffusers.
        case f32
        /// bfloat16 operands with f32 accumulation (`BF16Gemm`): activations rounded to 8
        /// significant bits, about twice the multiply-adds per cycle where the CPU has
        /// bf16 dot products.
        case bf16
        /// int8 activations times the file's int8 weights, exact int32 sums (`I8Gemm`): the
        /// activations quantised per column and per block of 32 k as stable-diffusion.cpp's
        /// q8_0 does, twice bf16's multiply-adds per cycle where the CPU has int8 dot products
        /// (AVX512-VNNI, AVX-VNNI, arm64 `sdot`). Covers the linear layers and the convolutions
        /// that run as implicit GEMM, for weights stored as int8; the Winograd 3×3 convolutions
        /// and other weights run at `elsewhere`, and so does attention, except that where
        /// `elsewhere` is f32 its scores (Q·Kᵀ) are int8 products too (AttentionInt8.swift).
        case int8

        /// What attention's two products run in (non-causal attention; causal attention,
        /// CLIP's, always runs f32).
        public enum AttentionProducts: String, Sendable {
            case f32
            case bf16
            /// Q·Kᵀ on the int8 kernel, P·V f32 (AttentionInt8.swift).
            case int8Scores = "int8 Q·Kᵀ, f32 P·V"
        }

        /// Under this precision and the current kernel variant: bf16 where `elsewhere` is,
        /// int8 scores under int8 without native bf16, else f32. `Attention.attention`
        /// dispatches on it and the reports (`bench`, `generate --stats`/`--json`) name it.
        public var attention: AttentionProducts {
            if elsewhere == .bf16 { return .bf16 }
            return self == .int8 ? .int8Scores : .f32
        }

        /// The precision of the products `int8` does not cover: bf16 where the kernel variant
        /// has native bf16 products, else f32. Every other precision is its own.
        var elsewhere: Kernels.Precision {
            self == .int8 ? (Kernels.variant.hasNativeBF16 ? .bf16 : .f32) : self
        }
    }
}

/// GEMM with bfloat16 operands and f32 accumulation: the `Kernels.Precision.bf16` path of
/// `linear`, `conv2d` and the Winograd products.
///
/// Both operands are rounded to bfloat16 (8 significant bits, round to nearest even), pairs
/// of k are multiplied and summed in f32: y = Σ_k bf16(a[k]) · bf16(b[k]). int8 weights are
/// exact in bfloat16 and keep their per-row scale in f32, so with int8 files only the
/// activations are rounded (relative error ≤ 2⁻⁹ per element). On x86_64 with AVX-512 BF16
/// the C kernel (Sources/CKernels, vdpbf16ps) does twice the multiply-adds per cycle of the
/// f32 FMA kernel, and with AMX the tile kernel (CKernels/bf16_amx.c, `KernelVariant.amx`)
/// takes the same operands; `portableBlock` is their Swift twin: the same packed layouts and result,
/// the reference in the tests, and the fallback elsewhere (slower than f32 there, so
/// `--precision auto`, `PrecisionChoice` in SDPipeline, only picks bf16 where the native
/// kernel runs).
///
/// Packed layouts (one UInt32 = a bf16 pair, k even in the low half, k odd in the high):
///   A: rows of pairs, `lda` apart, readable up to a whole number of `tileRows` (zero rows)
///   B: column panels of `panelColumns`, each [pairs][panelColumns] (zero columns past the end)
/// The loop order is Gemm's (jc → pc → ic, then panels × tiles inside the block call).
public enum BF16Gemm {
    typealias V = NativeF32
    static let tileRows = Int(PD_BF16_TILE_ROWS)
    static let panelColumns = Int(PD_BF16_PANEL_COLUMNS)

    /// Whether the native kernel runs on this machine.
    public static let nativeAvailable = pd_bf16_native_available() != 0

    /// Which kernel `block` runs: `Kernels.variant` sets it; tests set `.portable` to check the
    /// twin, and `.amxEmulated` to run the AMX kernel's body on a model of the tiles.
    enum Implementation {
        /// `pd_bf16_gemm_block` (AVX-512 BF16).
        case native
        /// `portableBlock`, the Swift twin.
        case portable
        /// `pd_bf16_gemm_block_amx` (AMX tiles).
        case amx
        /// `pd_bf16_gemm_block_amx_emulated`: the AMX body on scalar C (any CPU; slow).
        case amxEmulated
    }
    nonisolated(unsafe) static var implementation: Implementation = Kernels.variant.bf16Implementation

    /// Whether q8 weight rows are converted by `pd_bf16_pack_q8_row` (AVX-512 BF16).
    static var packsQ8Natively: Bool { implementation == .native || implementation == .amx }

    // MARK: rounding

    /// bf16 bits (in the low 16 bits) of each lane, rounded to nearest even.
    @inline(__always)
    static func round(_ x: V) -> NativeU32 {
        let u = unsafeBitCast(x, to: NativeU32.self)
        return (u &+ NativeU32(repeating: 0x7FFF) &+ ((u &>> 16) & 1)) &>> 16
    }

    /// One bf16 pair per lane: `low` in bits 0–15, `high` in bits 16–31.
    @inline(__always)
    static func pair(_ low: V, _ high: V) -> NativeU32 {
        round(low) | (round(high) &<< 16)
    }

    @inline(__always)
    static func pair(_ low: Float, _ high: Float) -> UInt32 {
        @inline(__always) func r(_ x: Float) -> UInt32 {
            let u = x.bitPattern
            return (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16
        }
        return r(low) | (r(high) << 16)
    }

    // MARK: packing

    /// A[r, k0 ..< k0+kc] for rows n0 ..< n0+mc of the weight as rows of ⌈kc/2⌉ pairs
    /// (zero rows up to a whole tile); for q8 the int8 values themselves (exact in bf16),
    /// whose scales the block call applies.
    static func packWeights(_ w: WeightMatrix, row n0: Int, count mc: Int, column k0: Int, depth kc: Int,
                            into dst: UnsafeMutablePointer<UInt32>, rowBuffer: UnsafeMutablePointer<Float>) {
        let pairs = (kc + 1) / 2
        for r in 0..<((mc + tileRows - 1) / tileRows * tileRows) {
            let row = dst + r * pairs
            if r >= mc {
                row.initialize(repeating: 0, count: pairs)
                continue
            }
            let n = n0 + r
            w.prefetch(aheadOf: n, column: k0, count: kc)
            if w.type == .q8 && packsQ8Natively {
                pd_bf16_pack_q8_row((w.data + n * w.cols + k0).assumingMemoryBound(to: Int8.self), Int32(kc), row)
                continue
            }
            // The row as f32 (q8: unscaled).
            switch w.type {
            case .f32:
                let src = w.data.assumingMemoryBound(to: Float.self) + n * w.cols + k0
                rowBuffer.update(from: src, count: kc)
            case .f16:
                let src = w.data + (n * w.cols + k0) * 2
                var i = 0
                while i + V.scalarCount <= kc { V.loadHalf(src + i * 2).store(rowBuffer + i); i += V.scalarCount }
                while i < kc { rowBuffer[i] = Float(src.load(fromByteOffset: i * 2, as: Float16.self)); i += 1 }
            case .q8:
                let src = w.data + n * w.cols + k0
                var i = 0
                while i + V.scalarCount <= kc { V.loadInt8(src + i).store(rowBuffer + i); i += V.scalarCount }
                while i < kc { rowBuffer[i] = Float(src.load(fromByteOffset: i, as: Int8.self)); i += 1 }
            }
            packRow(rowBuffer, count: kc, into: row)
        }
    }

    /// dst[i] = pair(row[2i], row[2i + 1]) for the ⌈count / 2⌉ pairs of a row of `count`
    /// values, the last high half 0 when count is odd. Reads row[count] (unused), which
    /// must be addressable.
    @inline(__always)
    static func packRow(_ row: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<UInt32>) {
        let v = V.scalarCount
        var i = 0
        while 2 * (i + v) <= count {
            let p = pair(V.loadEven(row + 2 * i), V.loadEven(row + 2 * i + 1))
            UnsafeMutableRawPointer(dst + i).storeBytes(of: p, as: NativeU32.self)
            i += v
        }
        while 2 * i < count {
            dst[i] = pair(row[2 * i], 2 * i + 1 < count ? row[2 * i + 1] : 0)
            i += 1
        }
    }

    /// B[k0 ..< k0+kc, p0 ..< p0+np] of a row-major [K, ldb] matrix into column panels.
    static func packRows(_ x: UnsafePointer<Float>, rowStride ldb: Int,
                         row k0: Int, depth kc: Int, column p0: Int, count np: Int,
                         into dst: UnsafeMutablePointer<UInt32>) {
        let v = V.scalarCount, w = panelColumns
        let pairs = (kc + 1) / 2
        let fullPanels = np / w, tail = np - fullPanels * w
        let zero = V()
        for i in 0..<pairs {
            let lo = x + (k0 + 2 * i) * ldb + p0
            let hasHigh = k0 + 2 * i + 1 < k0 + kc
            let hi = lo + ldb
            var d = dst + i * w
            for panel in 0..<fullPanels {
                var j = panel * w
                while j < panel * w + w {
                    let p = pair(V.load(lo + j), hasHigh ? V.load(hi + j) : zero)
                    UnsafeMutableRawPointer(d + (j - panel * w)).storeBytes(of: p, as: NativeU32.self)
                    j += v
                }
                d += pairs * w
            }
            if tail > 0 {
                let j0 = fullPanels * w
                for j in 0..<w {
                    d[j] = j < tail ? pair(lo[j0 + j], hasHigh ? hi[j0 + j] : 0) : 0
                }
            }
        }
    }

    /// Gemm's f32 micro-panels ([⌈np / 2V⌉][kc][2V]) into bf16 column panels.
    static func packPanels(_ src: UnsafePointer<Float>, depth kc: Int, count np: Int,
                           into dst: UnsafeMutablePointer<UInt32>) {
        let v = V.scalarCount, fw = 2 * v, w = panelColumns
        let pairs = (kc + 1) / 2
        let panels = (np + w - 1) / w
        let zero = V()
        for panel in 0..<panels {
            let d0 = dst + panel * pairs * w
            var j = 0
            while j < w {
                let column = panel * w + j
                if column >= np {
                    for i in 0..<pairs { UnsafeMutableRawPointer(d0 + i * w + j).storeBytes(of: NativeU32(), as: NativeU32.self) }
                } else {
                    // Column groups of v never straddle an f32 panel (2V is a multiple of v).
                    let s = src + (column / fw) * kc * fw + column % fw
                    for i in 0..<pairs {
                        let lo = V.load(s + 2 * i * fw)
                        let hi = 2 * i + 1 < kc ? V.load(s + (2 * i + 1) * fw) : zero
                        UnsafeMutableRawPointer(d0 + i * w + j).storeBytes(of: pair(lo, hi), as: NativeU32.self)
                    }
                }
                j += v
            }
        }
    }

    // MARK: block product

    /// C[r, p] = Σ pairs · scale[r] + bias[r] + addend[r, p] (see CKernels.h).
    @inline(__always)
    static func block(rows: Int, columns: Int, pairs: Int,
                      a: UnsafePointer<UInt32>, lda: Int, b: UnsafePointer<UInt32>, panelStride: Int,
                      c: UnsafeMutablePointer<Float>, rowStride ldc: Int,
                      scale: UnsafePointer<Float>?, bias: UnsafePointer<Float>?, addend: UnsafePointer<Float>?) {
        switch implementation {
        case .native:
            pd_bf16_gemm_block(Int32(rows), Int32(columns), Int32(pairs), a, lda, b, panelStride,
                               c, ldc, scale, bias, addend)
        case .amx:
            pd_bf16_gemm_block_amx(Int32(rows), Int32(columns), Int32(pairs), a, lda, b, panelStride,
                                   c, ldc, scale, bias, addend)
        case .amxEmulated:
            pd_bf16_gemm_block_amx_emulated(Int32(rows), Int32(columns), Int32(pairs), a, lda, b, panelStride,
                                            c, ldc, scale, bias, addend)
        case .portable:
            portableBlock(rows: rows, columns: columns, pairs: pairs, a: a, lda: lda,
                          b: b, panelStride: panelStride, c: c, rowStride: ldc,
                          scale: scale, bias: bias, addend: addend)
        }
    }

    /// The twin of `pd_bf16_gemm_block`, on portable vectors.
    static func portableBlock(rows: Int, columns: Int, pairs: Int,
                              a: UnsafePointer<UInt32>, lda: Int, b: UnsafePointer<UInt32>, panelStride: Int,
                              c: UnsafeMutablePointer<Float>, rowStride ldc: Int,
                              scale: UnsafePointer<Float>?, bias: UnsafePointer<Float>?, addend: UnsafePointer<Float>?) {
        let v = V.scalarCount, w = panelColumns
        let highMask = NativeU32(repeating: 0xFFFF_0000)
        var acc = [V](repeating: V(), count: w / v)
        var p0 = 0
        while p0 < columns {
            let bp = b + (p0 / w) * panelStride
            let cols = min(w, columns - p0)
            for r in 0..<rows {
                let ap = a + r * lda
                for g in 0..<(w / v) { acc[g] = V() }
                for i in 0..<pairs {
                    let pa = ap[i]
                    let alo = V(repeating: Float(bitPattern: pa << 16))
                    let ahi = V(repeating: Float(bitPattern: pa & 0xFFFF_0000))
                    for g in 0..<(w / v) {
                        let pb = UnsafeRawPointer(bp + i * w + g * v).loadUnaligned(as: NativeU32.self)
                        let blo = unsafeBitCast(pb &<< 16, to: V.self), bhi = unsafeBitCast(pb & highMask, to: V.self)
                        acc[g] = acc[g].addingProduct(alo, blo).addingProduct(ahi, bhi)
                    }
                }
                let s = scale?[r] ?? 1, bb = bias?[r] ?? 0
                for j in 0..<cols {
                    var value = acc[j / v][j % v] * s + bb
                    if let addend { value += addend[r * ldc + p0 + j] }
                    c[r * ldc + p0 + j] = value
                }
            }
            p0 += w
        }
    }

    // MARK: driver

    /// Gemm's blocking with wider column blocks: the A block (weights, converted to bf16 per
    /// block) is then packed 4× less often; 1 thread on the SD shapes: 320×320 (P = 4096)
    /// 166 → 178 GFLOP/s, GEGLU 2560×320 167 → 175 (nc 512 → 2048; kc, mc swept too).
    static let blocking = Gemm.Blocking(maxDepth: 384, maxRows: 96, maxColumns: 2048)

    /// Gemm.linear with bf16 operands.
    static func linear(_ weight: WeightMatrix, input x: UnsafePointer<Float>, columns p: Int,
                       bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                       output y: UnsafeMutablePointer<Float>, pool: ThreadPool,
                       blocking: Gemm.Blocking, inputStride ldb: Int, outputStride ldc: Int) {
        Gemm.forEachPart(rows: weight.rows, columns: p, tileColumns: panelColumns, pool: pool) { part, rows, columns in
            let scratch = pool.scratch(part: part, count: scratchCount(depth: weight.cols, columns: columns.count,
                                                                       blocking: blocking, f32Panels: false))
            multiply(weight, rows: rows, columns: columns, output: y, rowStride: ldc, bias: bias, residual: residual,
                     scratch: scratch, blocking: blocking, source: .rows(x, rowStride: ldb))
        }
    }

    /// Gemm.Blocking for bf16: depth even (whole pairs), row blocks in whole tiles.
    static func depth(for k: Int, blocking: Gemm.Blocking) -> Int {
        (blocking.depth(for: k) + 1) / 2 * 2
    }

    static func rowBlock(_ blocking: Gemm.Blocking) -> Int {
        max(tileRows, blocking.maxRows / tileRows * tileRows)
    }

    /// Floats (4-byte words) of scratch one part of `multiply` needs.
    static func scratchCount(depth k: Int, columns: Int, blocking: Gemm.Blocking, f32Panels: Bool) -> Int {
        let kc = depth(for: k, blocking: blocking), pairs = kc / 2
        let nc = min(columns, blocking.maxColumns)
        let packedB = pairs * ((nc + panelColumns - 1) / panelColumns * panelColumns)
        let packedA = pairs * rowBlock(blocking)
        let fw = 2 * V.scalarCount
        let f32B = f32Panels ? kc * ((nc + fw - 1) / fw * fw) : 0
        return packedB + packedA + kc + 1 + f32B
    }

    /// Where B blocks come from: straight from a row-major matrix, or Gemm's f32 packer
    /// (implicit im2col) followed by a conversion.
    enum BSource {
        case rows(UnsafePointer<Float>, rowStride: Int)
        case f32Panels((Int, Int, Int, Int, UnsafeMutablePointer<Float>) -> Void)
    }

    /// Gemm.multiply's contract with bf16 operands.
    static func multiply(_ weight: WeightMatrix, rows: Range<Int>, columns: Range<Int>,
                         output y: UnsafeMutablePointer<Float>, rowStride ldc: Int,
                         bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                         scratch: UnsafeMutablePointer<Float>, blocking: Gemm.Blocking, source: BSource) {
        let k = weight.cols
        if rows.isEmpty || columns.isEmpty { return }
        if k == 0 {
            Gemm.emptyProduct(rows: rows, columns: columns, output: y, rowStride: ldc, bias: bias, residual: residual)
            return
        }
        let kcMax = depth(for: k, blocking: blocking), pairsMax = kcMax / 2
        let ncMax = min(columns.count, blocking.maxColumns), mcMax = rowBlock(blocking)
        let words = UnsafeMutableRawPointer(scratch)
        let packedB = words.bindMemory(to: UInt32.self, capacity: pairsMax * (ncMax + panelColumns))
        let packedA = packedB + pairsMax * ((ncMax + panelColumns - 1) / panelColumns * panelColumns)
        let rowBuffer = UnsafeMutableRawPointer(packedA + pairsMax * mcMax).bindMemory(to: Float.self, capacity: kcMax + 1)
        let f32B = rowBuffer + kcMax + 1
        let scales = weight.type == .q8 ? weight.scales : nil
        var jc = columns.lowerBound
        while jc < columns.upperBound {
            let nc = min(ncMax, columns.upperBound - jc)
            var pc = 0
            while pc < k {
                let kc = min(kcMax, k - pc), pairs = (kc + 1) / 2
                switch source {
                case let .rows(x, ldb):
                    packRows(x, rowStride: ldb, row: pc, depth: kc, column: jc, count: nc, into: packedB)
                case let .f32Panels(packB):
                    packB(pc, kc, jc, nc, f32B)
                    packPanels(f32B, depth: kc, count: nc, into: packedB)
                }
                var ic = rows.lowerBound
                while ic < rows.upperBound {
                    let mc = min(mcMax, rows.upperBound - ic)
                    packWeights(weight, row: ic, count: mc, column: pc, depth: kc, into: packedA, rowBuffer: rowBuffer)
                    let c = y + ic * ldc + jc
                    let addend: UnsafePointer<Float>? = pc == 0
                        ? residual.map { $0 + ic * ldc + jc } : UnsafePointer(c)
                    block(rows: mc, columns: nc, pairs: pairs, a: packedA, lda: pairs,
                          b: packedB, panelStride: pairs * panelColumns, c: c, rowStride: ldc,
                          scale: scales.map { $0 + ic }, bias: pc == 0 ? bias.map { $0 + ic } : nil, addend: addend)
                    ic += mc
                }
                pc += kc
            }
            jc += nc
        }
    }
}
