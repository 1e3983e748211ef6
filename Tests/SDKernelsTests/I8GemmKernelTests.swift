import XCTest
import CKernels
@testable import SDKernels

/// The int8 block products of CKernels (contract in CKernels.h, `pd_i8_gemm_block_portable`):
///   1. each VNNI kernel the CPU has against the portable one, bit for bit, on awkward shapes,
///      with and without scale, bias and addend (also accumulating: addend == c), and nothing
///      written outside the rows × columns of c;
///   2. the portable one against a naive computation written here from the contract's
///      definition (its own packing of A and B, Σ (A − 128) · q per block, the fma chain), so a
///      wrong reference cannot hide behind agreeing kernels.
final class I8GemmKernelTests: XCTestCase {
    typealias Kernel = (Int32, Int32, Int32, Int32, UnsafePointer<UInt8>, Int, UnsafePointer<UInt8>, Int,
                        UnsafeMutablePointer<Float>, Int, UnsafePointer<Float>?, UnsafePointer<Float>?,
                        UnsafePointer<Float>?) -> Void

    static let portable: Kernel = { pd_i8_gemm_block_portable($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) }
    /// The native kernels, each with the `pd_cpu_features()` bit it needs.
    static let kernels: [(name: String, feature: Int, run: Kernel)] = [
        ("avx512vnni", Int(PD_CPU_AVX512_VNNI),
         { pd_i8_gemm_block_avx512vnni($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) }),
        ("avxvnni", Int(PD_CPU_AVX_VNNI),
         { pd_i8_gemm_block_avxvnni($0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) }),
    ]

    static let tileRows = Int(PD_I8_TILE_ROWS), panelColumns = Int(PD_I8_PANEL_COLUMNS)
    static let blockDepth = Int(PD_I8_BLOCK_DEPTH), recordBytes = Int(PD_I8_PANEL_BLOCK_BYTES)

    /// One product's operands: the logical int8 matrices and scales, and A and B packed as the
    /// contract lays them out (A rows up to the next multiple of PD_I8_TILE_ROWS, B panels
    /// 64-byte aligned). With `lastQuads` < 8 the last block's bytes past its quads are
    /// garbage in A and B: a kernel that reads them into its sums differs from the reference.
    final class Operands {
        let rows: Int, columns: Int, blocks: Int, lastQuads: Int, depth: Int
        let weights: [Int8]        // rows × depth
        let q: [Int8]              // depth × columns, k-major
        let xscale: [Float]        // blocks × columns
        let scale: [Float], bias: [Float]
        let lda: Int, panelStride: Int
        let a: UnsafeMutablePointer<UInt8>
        let b: UnsafeMutableRawPointer

        init(rows: Int, columns: Int, blocks: Int, lastQuads: Int = 8, random: inout SeededRandom) {
            let w = I8GemmKernelTests.panelColumns, d = I8GemmKernelTests.blockDepth
            self.rows = rows
            self.columns = columns
            self.blocks = blocks
            self.lastQuads = lastQuads
            // The k the product covers; a real depth short of its end (where A is 128 and q is
            // 0) on some.
            let covered = (blocks - 1) * d + 4 * lastQuads
            depth = max(1, covered - Int(random.next() % 2 == 0 ? 0 : random.next() % UInt64(4 * lastQuads)))
            // Full int8 range in the weights (A from 0 to 255), [−127, 127] in the activations.
            weights = (0..<rows * depth).map { _ in Int8(truncatingIfNeeded: random.next()) }
            q = (0..<depth * columns).map { _ in Int8(Int(random.next() % 255) - 127) }
            // Positive scales spread over 2⁻²⁰ … 2⁴, so the f32 sums round at varied places.
            xscale = (0..<blocks * columns).map { _ in
                Float(sign: .plus, exponent: Int(random.next() % 25) - 20, significand: random.uniform(1, 2))
            }
            scale = (0..<rows).map { _ in random.uniform(-0.05, 0.05) }
            bias = (0..<rows).map { _ in random.uniform(-2, 2) }

            // A: lda a multiple of 4, sometimes longer than the blocks (bytes never read).
            lda = blocks * d + 4 * Int(random.next() % 3)
            let paddedRows = (rows + I8GemmKernelTests.tileRows - 1) / I8GemmKernelTests.tileRows
                * I8GemmKernelTests.tileRows
            a = .allocate(capacity: paddedRows * lda)
            for i in 0..<paddedRows * lda { a[i] = UInt8(truncatingIfNeeded: random.next()) }  // padding rows too
            for r in 0..<rows {
                for k in 0..<covered { a[r * lda + k] = k < depth ? UInt8(Int(weights[r * depth + k]) + 128) : 128 }
            }

            // B: panels of `blocks` records, sometimes with a gap between panels.
            let panels = (columns + w - 1) / w
            panelStride = blocks * I8GemmKernelTests.recordBytes + 64 * Int(random.next() % 2)
            b = .allocate(byteCount: max(1, panels * panelStride), alignment: 64)
            b.initializeMemory(as: UInt8.self, repeating: 0xA5, count: panels * panelStride)
            for panel in 0..<panels {
                for blk in 0..<blocks {
                    let record = b + panel * panelStride + blk * I8GemmKernelTests.recordBytes
                    let qs = record.assumingMemoryBound(to: Int8.self)
                    for j in 0..<w {
                        let p = panel * w + j
                        var sum: Int32 = 0
                        for kk in 0..<d {
                            let k = blk * d + kk
                            guard k < covered else {
                                qs[((kk / 4) * w + j) * 4 + kk % 4] = Int8(truncatingIfNeeded: random.next() | 1)
                                continue
                            }
                            let value: Int8 = p < columns && k < depth ? q[k * columns + p] : 0
                            qs[((kk / 4) * w + j) * 4 + kk % 4] = value
                            sum += Int32(value)
                        }
                        record.storeBytes(of: p < columns ? xscale[blk * columns + p] : 0,
                                          toByteOffset: d * w + 4 * j, as: Float.self)
                        record.storeBytes(of: 128 * sum, toByteOffset: d * w + 4 * w + 4 * j, as: Int32.self)
                    }
                }
            }
        }

        deinit {
            a.deallocate()
            b.deallocate()
        }

        /// c (rows of `ldc`, plus a row's worth past the end) filled with the sentinel, the
        /// region's elements with `initial` when given.
        func output(ldc: Int, initial: [Float]?) -> [Float] {
            var c = [Float](repeating: I8GemmKernelTests.sentinel, count: (rows + 1) * ldc + 16)
            if let initial {
                for r in 0..<rows { for p in 0..<columns { c[r * ldc + p] = initial[r * columns + p] } }
            }
            return c
        }

        /// Runs `kernel` into c; `addend` nil, the separate array `separate`, or c itself.
        func run(_ kernel: Kernel, c: inout [Float], ldc: Int, useScale: Bool, useBias: Bool,
                 addend: AddendKind, separate: [Float]) {
            scale.withUnsafeBufferPointer { sp in bias.withUnsafeBufferPointer { bp in
                separate.withUnsafeBufferPointer { ap in c.withUnsafeMutableBufferPointer { cp in
                    let c = cp.baseAddress!
                    let addendPointer: UnsafePointer<Float>?
                    switch addend {
                    case .none: addendPointer = nil
                    case .separate: addendPointer = ap.baseAddress!
                    case .accumulate: addendPointer = UnsafePointer(c)
                    }
                    kernel(Int32(rows), Int32(columns), Int32(blocks), Int32(lastQuads), a, lda, UnsafePointer(b.assumingMemoryBound(to: UInt8.self)),
                           panelStride, c, ldc, useScale ? sp.baseAddress! : nil, useBias ? bp.baseAddress! : nil,
                           addendPointer)
                } }
            } }
        }
    }

    enum AddendKind: CaseIterable { case none, separate, accumulate }

    /// A NaN with a payload no arithmetic produces: any element outside rows × columns that
    /// does not keep these bits was written.
    static let sentinel = Float(bitPattern: 0x7FC0_1234)

    static let rowCounts = [1, 5, 6, 7, 12, 13, 25, 96]
    static let columnCounts = [1, 7, 31, 32, 33, 64, 100]
    /// (blocks, quads of the last one): whole blocks, and last blocks of 2 quads (attention's
    /// d = 40 and 80 end so) and 5.
    static let depths = [(1, 8), (2, 8), (12, 8), (1, 2), (2, 2), (2, 5), (12, 5)]

    /// Every kernel against the portable one, bit for bit; skips (naming it) a kernel this CPU
    /// lacks.
    func checkKernel(_ index: Int) throws {
        let kernel = Self.kernels[index]
        #if arch(x86_64)
        let available = KernelVariant.cpuFeatures & UInt32(kernel.feature) != 0
        #else
        let available = false
        #endif
        try XCTSkipUnless(available, "\(kernel.name): this CPU lacks it (pd_cpu_features() bit \(kernel.feature))")
        var seed: UInt64 = 77_000
        var failures = 0
        for rows in Self.rowCounts {
            for columns in Self.columnCounts {
                for (blocks, lastQuads) in Self.depths {
                    seed += 1
                    var random = SeededRandom(seed: seed)
                    let operands = Operands(rows: rows, columns: columns, blocks: blocks, lastQuads: lastQuads,
                                            random: &random)
                    let ldc = columns + Int(random.next() % 5)
                    let initial = random.array(rows * columns, -3, 3)
                    // A separate addend with ldc as its row stride, the sentinel in its gaps.
                    let separate = operands.output(ldc: ldc, initial: random.array(rows * columns, -3, 3))
                    for useScale in [false, true] {
                        for useBias in [false, true] {
                            for addend in AddendKind.allCases {
                                let label = "\(kernel.name) rows=\(rows) columns=\(columns) blocks=\(blocks)+\(lastQuads)q "
                                    + "depth=\(operands.depth) ldc=\(ldc) scale=\(useScale) bias=\(useBias) addend=\(addend)"
                                let start = operands.output(ldc: ldc, initial: addend == .accumulate ? initial : nil)
                                var expected = start, actual = start
                                operands.run(Self.portable, c: &expected, ldc: ldc, useScale: useScale, useBias: useBias,
                                             addend: addend, separate: separate)
                                operands.run(kernel.run, c: &actual, ldc: ldc, useScale: useScale, useBias: useBias,
                                             addend: addend, separate: separate)
                                if let difference = firstDifference(actual, expected) {
                                    XCTFail("\(label): \(difference)")
                                    failures += 1
                                }
                                for i in 0..<actual.count where i / ldc >= rows || i % ldc >= columns {
                                    if actual[i].bitPattern != Self.sentinel.bitPattern {
                                        XCTFail("\(label): wrote element \(i) (row \(i / ldc), column \(i % ldc)) outside c")
                                        failures += 1
                                        break
                                    }
                                }
                                if failures > 10 { return }
                            }
                        }
                    }
                }
            }
        }
    }

    func testAVX512VNNIMatchesPortable() throws { try checkKernel(0) }
    func testAVXVNNIMatchesPortable() throws { try checkKernel(1) }

    /// The portable kernel against the contract computed naively from the logical matrices:
    ///   s_b = Σ_{k in block b} w[r, k] · q[k, p] (= Σ (A − 128) · q: the contract's Σ A · q − corr),
    ///   f = fma(Float(s_b), xscale_b[p], f) from +0.0 in block order,
    ///   C = ((f · scale) + bias) + addend, each rounded on its own.
    func testPortableMatchesContract() {
        var seed: UInt64 = 78_000
        for rows in Self.rowCounts {
            for columns in Self.columnCounts {
                for (blocks, lastQuads) in Self.depths {
                    seed += 1
                    var random = SeededRandom(seed: seed)
                    let o = Operands(rows: rows, columns: columns, blocks: blocks, lastQuads: lastQuads, random: &random)
                    let ldc = columns + Int(random.next() % 3)
                    let separate = o.output(ldc: ldc, initial: random.array(rows * columns, -3, 3))
                    let (useScale, useBias, addend) = (seed % 2 == 0, seed % 3 != 0, AddendKind.allCases[Int(seed % 3)])
                    let initial = random.array(rows * columns, -3, 3)
                    var actual = o.output(ldc: ldc, initial: addend == .accumulate ? initial : nil)
                    let start = actual
                    o.run(Self.portable, c: &actual, ldc: ldc, useScale: useScale, useBias: useBias,
                          addend: addend, separate: separate)
                    var expected = start
                    let d = Self.blockDepth
                    for r in 0..<rows {
                        for p in 0..<columns {
                            var f: Float = 0
                            for blk in 0..<blocks {
                                var s = 0
                                for k in blk * d..<min((blk + 1) * d, o.depth) {
                                    s += Int(o.weights[r * o.depth + k]) * Int(o.q[k * columns + p])
                                }
                                f = f.addingProduct(Float(s), o.xscale[blk * columns + p])  // one rounding: fma
                            }
                            var value = f * (useScale ? o.scale[r] : 1)
                            value = value + (useBias ? o.bias[r] : 0)
                            switch addend {
                            case .none: break
                            case .separate: value = value + separate[r * ldc + p]
                            case .accumulate: value = value + start[r * ldc + p]
                            }
                            expected[r * ldc + p] = value
                        }
                    }
                    XCTAssertEqual(actual.count, expected.count)
                    for i in 0..<actual.count where actual[i].bitPattern != expected[i].bitPattern {
                        XCTFail("portable rows=\(rows) columns=\(columns) blocks=\(blocks)+\(lastQuads)q depth=\(o.depth) "
                                + "scale=\(useScale) bias=\(useBias) addend=\(addend): element \(i) is \(actual[i]), "
                                + "the contract gives \(expected[i])")
                        break
                    }
                }
            }
        }
    }
}
