import CKernels

/// GEMM with int8 operands and exact int32 sums: the `Kernels.Precision.int8` path of
/// `linear` and implicit-GEMM `conv2d` for weights stored as int8.
///
/// The weights are the file's own (WeightMatrix.q8: int8 per row with one f32 scale), used
/// as they are. The activations (B) are quantised while they are packed, per column and per
/// block of 32 k, stable-diffusion.cpp's q8_0 rule for activations: scale = max|x| / 127,
/// q = x · 127 / max|x| rounded to nearest even. A block's products are summed exactly in
/// int32, the sum times the block's activation scale is added into an f32 sum per output,
/// and the epilogue multiplies that by the weight row's scale. So beside the file's weight
/// rounding, each activation carries an error of at most half a step of its block
/// (max|x| / 254), where bf16 carries 2⁻⁹ of its own magnitude.
///
/// `block` runs one of four kernels of one contract (CKernels.h, `pd_i8_gemm_block_portable`),
/// all bitwise equal: `vpdpbusd` on zmm (AVX512-VNNI) or ymm (AVX-VNNI), whose u8 × s8 form is
/// why A holds each weight + 128 and each block record carries a correction; arm64's `sdot`;
/// and the portable C reference elsewhere.
///
/// Packed layouts (CKernels.h has the byte-level contract):
///   A: rows of `blocks · 32` bytes (weight + 128, 128 past the depth), rows up to a whole
///      number of `tileRows` (128s)
///   B: column panels of `panelColumns`, each `blocks` records of quads, scales, corrections
/// The loop order is BF16Gemm's (jc → pc → ic, then panels × tiles inside the block call).
public enum I8Gemm {
    typealias V = NativeF32
    static let blockDepth = Int(PD_I8_BLOCK_DEPTH)
    static let tileRows = Int(PD_I8_TILE_ROWS)
    static let panelColumns = Int(PD_I8_PANEL_COLUMNS)
    static let recordBytes = Int(PD_I8_PANEL_BLOCK_BYTES)
    /// Where a record's scales and corrections start: after its 8 quads × 32 columns of bytes.
    static let scalesOffset = blockDepth * panelColumns
    static let correctionsOffset = scalesOffset + 4 * panelColumns

    /// Which kernel `block` runs: `Kernels.variant` sets it (`KernelVariant.i8Implementation`);
    /// tests set `.portable` to compare.
    enum Implementation {
        /// `pd_i8_gemm_block_portable`, plain C.
        case portable
        /// `pd_i8_gemm_block_avx512vnni` (zmm).
        case avx512VNNI
        /// `pd_i8_gemm_block_avxvnni` (ymm).
        case avxVNNI
        /// `pd_i8_gemm_block_sdot` (arm64 dot-product extension).
        case sdot

        /// The C function (every one has the contract's signature).
        var kernel: @convention(c) (Int32, Int32, Int32, Int32, UnsafePointer<UInt8>?, Int, UnsafePointer<UInt8>?, Int,
                                    UnsafeMutablePointer<Float>?, Int, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                    UnsafePointer<Float>?) -> Void {
            switch self {
            case .portable: return pd_i8_gemm_block_portable
            case .avx512VNNI: return pd_i8_gemm_block_avx512vnni
            case .avxVNNI: return pd_i8_gemm_block_avxvnni
            case .sdot: return pd_i8_gemm_block_sdot
            }
        }

        /// Its name in reports (`pocketsd bench`, `generate --stats`, `--json`'s `int8_kernel`).
        var name: String {
            switch self {
            case .portable: return "portable"
            case .avx512VNNI: return "avx512-vnni"
            case .avxVNNI: return "avx-vnni"
            case .sdot: return "sdot"
            }
        }
    }
    nonisolated(unsafe) static var implementation: Implementation = Kernels.variant.i8Implementation

    /// C[r, p] = Σ_blocks (int32 block sum) · xscale · scale[r] + bias[r] + addend[r, p] (CKernels.h);
    /// the last block's k end after `lastQuads` quads (the rest of it counts for nothing).
    @inline(__always)
    static func block(rows: Int, columns: Int, blocks: Int, lastQuads: Int = blockDepth / 4,
                      a: UnsafePointer<UInt8>, lda: Int, b: UnsafeRawPointer, panelStride: Int,
                      c: UnsafeMutablePointer<Float>, rowStride ldc: Int,
                      scale: UnsafePointer<Float>?, bias: UnsafePointer<Float>?, addend: UnsafePointer<Float>?) {
        implementation.kernel(Int32(rows), Int32(columns), Int32(blocks), Int32(lastQuads), a, lda,
                              b.assumingMemoryBound(to: UInt8.self), panelStride, c, ldc, scale, bias, addend)
    }

    // MARK: packing

    /// Bytes of one packed A row for `kc` values: whole blocks.
    @inline(__always)
    static func rowBytes(depth kc: Int) -> Int { (kc + blockDepth - 1) / blockDepth * blockDepth }

    /// Rows n0 ..< n0+mc, columns k0 ..< k0+kc of an int8 weight as A rows (each int8 value
    /// + 128, which is its sign bit flipped), 128 past kc and in the rows up to a whole tile.
    static func packWeights(_ w: WeightMatrix, row n0: Int, count mc: Int, column k0: Int, depth kc: Int,
                            into dst: UnsafeMutablePointer<UInt8>) {
        precondition(w.type == .q8, "int8 products need int8 weights")
        // Four bytes per lane: Swift's SIMD of UInt8 goes through memory byte by byte here.
        typealias Bytes = NativeU32
        let width = rowBytes(depth: kc), flip = Bytes(repeating: 0x8080_8080), step = 4 * Bytes.scalarCount
        for r in 0..<((mc + tileRows - 1) / tileRows * tileRows) {
            let row = dst + r * width
            var i = 0
            if r < mc {
                w.prefetch(aheadOf: n0 + r, column: k0, count: kc)
                let src = w.data + (n0 + r) * w.cols + k0
                while i + step <= kc {
                    let v = src.loadUnaligned(fromByteOffset: i, as: Bytes.self) ^ flip
                    UnsafeMutableRawPointer(row + i).storeBytes(of: v, as: Bytes.self)
                    i += step
                }
                while i < kc { row[i] = src.load(fromByteOffset: i, as: UInt8.self) ^ 0x80; i += 1 }
            }
            (row + i).initialize(repeating: 0x80, count: width - i)
        }
    }

    /// Whether `packRows` and `packPanels` run the 16-wide C quantiser
    /// (`pd_i8_quantize_record_avx512`, bitwise equal to `quantize`): under the AVX-512
    /// variants, in builds whose f32 panels are 16 wide (8-wide Swift vectors).
    static var quantizesInC: Bool { Kernels.variant.usesAVX512VectorMath && 2 * V.scalarCount == 16 }

    /// Quantises one block of `depth` (≤ 32) k by `V.scalarCount` columns into the columns
    /// `column ..< column + V.scalarCount` of a B record; `load(i)` gives row i of the block
    /// (zero in columns past the matrix). Rows past `depth` are zero.
    @inline(__always)
    static func quantize(depth: Int, column: Int, into record: UnsafeMutableRawPointer, load: (Int) -> V) {
        var m = V()
        for i in 0..<depth { m = V.vmax(m, load(i).magnitude) }
        // m = 0 (or tiny): 127 / m is infinite; capped, every q is then 0 (x ≤ m).
        let inverse = V.vmin(V(repeating: 127) / m, V(repeating: .greatestFiniteMagnitude))
        (m / V(repeating: 127)).store((record + scalesOffset).assumingMemoryBound(to: Float.self) + column)
        // Round to nearest even by adding 1.5 · 2²³ (|x · inverse| ≤ 127 sits far inside the
        // range where the sum's low bits are the integer); no trapping conversion, so a NaN or
        // infinite activation becomes a clamped value instead of a crash.
        let magic = V(repeating: 12_582_912)
        let low = NativeI32(repeating: -127), high = NativeI32(repeating: 127)
        var sum = NativeI32()
        @inline(__always) func q(_ i: Int) -> NativeI32 {
            if i >= depth { return NativeI32() }
            let bits = (load(i) * inverse + magic).bits &- magic.bits
            return bits.clamped(lowerBound: low, upperBound: high)
        }
        for quad in 0..<(blockDepth / 4) {
            let q0 = q(4 * quad), q1 = q(4 * quad + 1), q2 = q(4 * quad + 2), q3 = q(4 * quad + 3)
            sum &+= q0 &+ q1 &+ q2 &+ q3
            let byte = NativeI32(repeating: 0xFF)
            let packed = (q0 & byte) | ((q1 & byte) &<< 8) | ((q2 & byte) &<< 16) | (q3 &<< 24)
            UnsafeMutableRawPointer(record + (quad * panelColumns + column) * 4)
                .storeBytes(of: packed, as: NativeI32.self)
        }
        UnsafeMutableRawPointer(record + correctionsOffset + column * 4)
            .storeBytes(of: sum &* 128, as: NativeI32.self)
    }

    /// B[k0 ..< k0+kc, p0 ..< p0+np] of a row-major [K, ldb] f32 matrix, quantised into
    /// column panels of ⌈kc / 32⌉ records, `panelStride(depth: kc)` bytes apart.
    static func packRows(_ x: UnsafePointer<Float>, rowStride ldb: Int, row k0: Int, depth kc: Int,
                         column p0: Int, count np: Int, into dst: UnsafeMutableRawPointer) {
        let v = V.scalarCount, stride = panelStride(depth: kc), wide = quantizesInC
        for block in 0..<(kc + blockDepth - 1) / blockDepth {
            let depth = min(blockDepth, kc - block * blockDepth)
            let top = x + (k0 + block * blockDepth) * ldb + p0
            for panel in 0..<(np + panelColumns - 1) / panelColumns {
                let record = dst + panel * stride + block * recordBytes
                if wide {
                    let first = top + panel * panelColumns
                    pd_i8_quantize_record_avx512(first, first + 16, ldb, Int32(depth),
                                                 Int32(min(panelColumns, np - panel * panelColumns)),
                                                 record.assumingMemoryBound(to: UInt8.self))
                    continue
                }
                for j in Swift.stride(from: 0, to: panelColumns, by: v) {
                    let column = panel * panelColumns + j
                    if column + v <= np {
                        quantize(depth: depth, column: j, into: record) { i in V.load(top + i * ldb + column) }
                    } else {
                        let lanes = max(0, np - column)
                        quantize(depth: depth, column: j, into: record) { i in
                            var row = V()
                            for l in 0..<lanes { row[l] = top[i * ldb + column + l] }
                            return row
                        }
                    }
                }
            }
        }
    }

    /// Gemm's f32 micro-panels ([⌈np / 2V⌉][kc][2V], zero past np) quantised into B panels.
    static func packPanels(_ src: UnsafePointer<Float>, depth kc: Int, count np: Int,
                           into dst: UnsafeMutableRawPointer) {
        let v = V.scalarCount, fw = 2 * v, stride = panelStride(depth: kc), wide = quantizesInC
        let paddedColumns = (np + fw - 1) / fw * fw
        for block in 0..<(kc + blockDepth - 1) / blockDepth {
            let depth = min(blockDepth, kc - block * blockDepth)
            for panel in 0..<(np + panelColumns - 1) / panelColumns {
                let record = dst + panel * stride + block * recordBytes
                if wide {
                    // The record's two halves are two f32 panels (fw = 16 here); past the
                    // last one, zeros.
                    let low = src + 2 * panel * kc * fw + block * blockDepth * fw
                    pd_i8_quantize_record_avx512(low, low + kc * fw, fw, Int32(depth),
                                                 Int32(min(panelColumns, paddedColumns - panel * panelColumns)),
                                                 record.assumingMemoryBound(to: UInt8.self))
                    continue
                }
                for j in Swift.stride(from: 0, to: panelColumns, by: v) {
                    let column = panel * panelColumns + j
                    if column >= (np + fw - 1) / fw * fw {
                        quantize(depth: depth, column: j, into: record) { _ in V() }
                        continue
                    }
                    // Column groups of v never straddle an f32 panel (2V is a multiple of v).
                    let s = src + (column / fw) * kc * fw + column % fw + block * blockDepth * fw
                    quantize(depth: depth, column: j, into: record) { i in V.load(s + i * fw) }
                }
            }
        }
    }

    /// Bytes between B panels for a depth of `kc`.
    @inline(__always)
    static func panelStride(depth kc: Int) -> Int { (kc + blockDepth - 1) / blockDepth * recordBytes }

    // MARK: driver

    /// BF16Gemm's blocking: kc 384 (12 blocks of 32), mc 96 (8 tiles), nc 2048.
    static let blocking = BF16Gemm.blocking

    /// Gemm.linear with int8 products (weight.type must be .q8).
    static func linear(_ weight: WeightMatrix, input x: UnsafePointer<Float>, columns p: Int,
                       bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                       output y: UnsafeMutablePointer<Float>, pool: ThreadPool, blocking: Gemm.Blocking,
                       inputStride ldb: Int, outputStride ldc: Int) {
        Gemm.forEachPart(rows: weight.rows, columns: p, tileColumns: panelColumns, pool: pool) { part, rows, columns in
            let scratch = pool.scratch(part: part, count: scratchCount(depth: weight.cols, columns: columns.count,
                                                                       blocking: blocking, f32Panels: false))
            multiply(weight, rows: rows, columns: columns, output: y, rowStride: ldc, bias: bias, residual: residual,
                     scratch: scratch, blocking: blocking, source: .rows(x, rowStride: ldb))
        }
    }

    /// Gemm.Blocking for int8: depth in whole blocks of 32, row blocks in whole tiles.
    static func depth(for k: Int, blocking: Gemm.Blocking) -> Int {
        rowBytes(depth: blocking.depth(for: k))
    }

    static func rowBlock(_ blocking: Gemm.Blocking) -> Int {
        max(tileRows, blocking.maxRows / tileRows * tileRows)
    }

    /// Floats (4-byte words) of scratch one part of `multiply` needs: packed B, packed A, and
    /// Gemm's f32 panels when B comes from them. Every region starts 64-byte aligned.
    static func scratchCount(depth k: Int, columns: Int, blocking: Gemm.Blocking, f32Panels: Bool) -> Int {
        let kc = depth(for: k, blocking: blocking)
        let nc = min(columns, blocking.maxColumns)
        let packedB = panelStride(depth: kc) * ((nc + panelColumns - 1) / panelColumns)
        let packedA = rowBlock(blocking) * kc
        let fw = 2 * V.scalarCount
        let f32B = f32Panels ? 4 * kc * ((nc + fw - 1) / fw * fw) : 0
        return (roundUp64(packedB) + roundUp64(packedA) + f32B) / 4
    }

    @inline(__always)
    static func roundUp64(_ bytes: Int) -> Int { (bytes + 63) / 64 * 64 }

    /// Gemm.multiply's contract with int8 products (weight.type must be .q8).
    static func multiply(_ weight: WeightMatrix, rows: Range<Int>, columns: Range<Int>,
                         output y: UnsafeMutablePointer<Float>, rowStride ldc: Int,
                         bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                         scratch: UnsafeMutablePointer<Float>, blocking: Gemm.Blocking, source: BF16Gemm.BSource) {
        let k = weight.cols
        if rows.isEmpty || columns.isEmpty { return }
        if k == 0 {
            Gemm.emptyProduct(rows: rows, columns: columns, output: y, rowStride: ldc, bias: bias, residual: residual)
            return
        }
        let kcMax = depth(for: k, blocking: blocking)
        let ncMax = min(columns.count, blocking.maxColumns), mcMax = rowBlock(blocking)
        let packedB = UnsafeMutableRawPointer(scratch)
        let packedA = (packedB + roundUp64(panelStride(depth: kcMax) * ((ncMax + panelColumns - 1) / panelColumns)))
            .bindMemory(to: UInt8.self, capacity: mcMax * kcMax)
        let f32B = UnsafeMutableRawPointer(packedA + roundUp64(mcMax * kcMax)).bindMemory(to: Float.self, capacity: 1)
        var jc = columns.lowerBound
        while jc < columns.upperBound {
            let nc = min(ncMax, columns.upperBound - jc)
            var pc = 0
            while pc < k {
                let kc = min(kcMax, k - pc)
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
                    packWeights(weight, row: ic, count: mc, column: pc, depth: kc, into: packedA)
                    let c = y + ic * ldc + jc
                    let addend: UnsafePointer<Float>? = pc == 0
                        ? residual.map { $0 + ic * ldc + jc } : UnsafePointer(c)
                    block(rows: mc, columns: nc, blocks: rowBytes(depth: kc) / blockDepth, a: packedA,
                          lda: rowBytes(depth: kc), b: packedB, panelStride: panelStride(depth: kc),
                          c: c, rowStride: ldc, scale: weight.scales.map { $0 + ic },
                          bias: pc == 0 ? bias.map { $0 + ic } : nil, addend: addend)
                    ic += mc
                }
                pc += kc
            }
            jc += nc
        }
    }
}
