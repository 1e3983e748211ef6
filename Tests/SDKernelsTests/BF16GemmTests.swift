import XCTest
import CKernels
@testable import SDKernels

/// The bf16 products (`Kernels.Precision.bf16`): each implementation (the native C kernel
/// where the CPU has it, and its portable Swift twin everywhere) against
///   1. the f32 reference run on bf16-rounded operands: the same products, so only the
///      summation order differs (`MaxNMSE.linear`), which checks packing and kernel exactly;
///   2. the exact f32 reference, within `maxNMSEExact`: what the mode costs in accuracy.
final class BF16GemmTests: XCTestCase {
    /// Rounding both operands to 8 significant bits: relative error ≤ 2⁻⁹ each, so about
    /// 2 · (2⁻⁹)² / 3 ≈ 2.5e-6 expected on large outputs; the few-element outputs of the
    /// awkward shapes scatter around that (measured worst 1.3e-5 at N=3, P=1).
    static let maxNMSEExact = 4e-5

    /// Every bf16 kernel this machine runs: the twin, the AMX body on its scalar tile model
    /// (everywhere), and the native kernels the CPU has.
    static var implementations: [BF16Gemm.Implementation] {
        (BF16Gemm.nativeAvailable ? [.native] : []) + (KernelVariant.amx.isSupported ? [.amx] : [])
            + [.amxEmulated, .portable]
    }
    var implementations: [BF16Gemm.Implementation] { Self.implementations }

    override func tearDown() {
        for pool in testPools { pool.precision = .f32 }
        BF16Gemm.implementation = Kernels.variant.bf16Implementation
    }

    func testRoundingToNearestEven() {
        func bits(_ x: Float) -> UInt32 { BF16Gemm.pair(x, 0) }
        XCTAssertEqual(bits(1), 0x3F80)
        XCTAssertEqual(bits(1 + 0x1p-8), 0x3F80, "tie between 1 and 1 + 2⁻⁷ goes to the even 1")
        XCTAssertEqual(bits(1 + 3 * 0x1p-8), 0x3F82, "tie goes up to the even neighbour")
        XCTAssertEqual(bits(1 + 0x1p-8 + 0x1p-20), 0x3F81, "above the tie rounds up")
        XCTAssertEqual(bits(-2.5), 0xC020)
        XCTAssertEqual(BF16Gemm.pair(1, -1), 0xBF80_3F80)
        var random = SeededRandom(seed: 7)
        let values = random.array(4 * NativeF32.scalarCount, -100, 100)
        values.ptr { p in
            var i = 0
            while i < values.count {
                let v = BF16Gemm.pair(NativeF32.load(p + i), NativeF32.load(p + i + NativeF32.scalarCount))
                for l in 0..<NativeF32.scalarCount {
                    XCTAssertEqual(v[l], BF16Gemm.pair(p[i + l], p[i + NativeF32.scalarCount + l]))
                }
                i += 2 * NativeF32.scalarCount
            }
        }
    }

    /// bf16(x) as Float.
    static func rounded(_ x: Float) -> Float { Float(bitPattern: BF16Gemm.pair(x, 0) << 16) }

    /// The weight's values as the bf16 path multiplies them, as an f32 matrix: f32/f16 rounded
    /// to bf16; q8 unchanged (exact int8 times the f32 scale).
    final class RoundedWeights {
        let matrix: WeightMatrix
        private let values: UnsafeMutablePointer<Float>
        init(_ w: WeightMatrix) {
            values = .allocate(capacity: max(1, w.rows * w.cols))
            for n in 0..<w.rows {
                for k in 0..<w.cols {
                    let e = w.element(n, k)
                    values[n * w.cols + k] = w.type == .q8 ? e : BF16GemmTests.rounded(e)
                }
            }
            matrix = WeightMatrix(type: .f32, rows: w.rows, cols: w.cols, data: UnsafeRawPointer(values))
        }
        deinit { values.deallocate() }
    }

    /// Runs `body` with bf16 precision and the given implementation.
    func withBF16<R>(_ implementation: BF16Gemm.Implementation, _ body: () -> R) -> R {
        for pool in testPools { pool.precision = .bf16 }
        BF16Gemm.implementation = implementation
        defer { for pool in testPools { pool.precision = .f32 } }
        return body()
    }

    func testLinearAwkwardShapes() {
        let shapes: [(n: Int, k: Int, p: Int)] = [
            (1, 1, 1), (1, 3, 7), (7, 1, 3), (3, 17, 1), (13, 17, 33), (25, 33, 65), (12, 32, 32),
            (40, 77, 5), (19, 65, 48), (24, 400, 70),
        ]
        var seed: UInt64 = 9000
        for implementation in implementations {
            for type in [WeightType.f32, .f16, .q8] {
                for (n, k, p) in shapes {
                    for blocking in testBlockings {
                        seed += 1
                        var random = SeededRandom(seed: seed)
                        let weights = TestWeights(rows: n, cols: k, type: type, random: &random)
                        let x = random.array(k * p), b = random.array(n), r = random.array(n * p)
                        let useBias = seed % 2 == 0, useResidual = seed % 3 != 0
                        let pool = testPools[Int(seed % 3)]
                        let label = "\(implementation) \(type) N=\(n) K=\(k) P=\(p) blocking=\(blocking.0)"
                        let roundedX = x.map(Self.rounded)
                        let roundedW = RoundedWeights(weights.matrix)
                        func reference(_ w: WeightMatrix, _ x: [Float]) -> [Float] {
                            outputBuffer(n * p) { y in
                                x.ptr { xp in b.ptr { bp in r.ptr { rp in
                                    ReferenceKernels.linear(w, input: xp, columns: p, bias: useBias ? bp : nil,
                                                            residual: useResidual ? rp : nil, output: y)
                                } } }
                            }
                        }
                        let actual = withBF16(implementation) {
                            outputBuffer(n * p) { y in
                                x.ptr { xp in b.ptr { bp in r.ptr { rp in
                                    Gemm.linear(weights.matrix, input: xp, columns: p, bias: useBias ? bp : nil,
                                                residual: useResidual ? rp : nil, output: y, pool: pool,
                                                blocking: blocking.1)
                                } } }
                            }
                        }
                        let same = withExtendedLifetime(roundedW) { nmse(actual, reference(roundedW.matrix, roundedX)) }
                        XCTAssertLessThan(same, MaxNMSE.linear(type), "\(label): vs rounded operands")
                        if !useResidual {  // the residual would hide the products' error
                            let exact = nmse(actual, reference(weights.matrix, x))
                            XCTAssertLessThan(exact, Self.maxNMSEExact, "\(label): vs exact")
                        }
                    }
                }
            }
        }
    }

    /// Implicit-GEMM convolutions (strided, padded, 1×1) and Winograd in bf16.
    func testConvolutions() {
        let cases: [(cin: Int, cout: Int, h: Int, w: Int, k: Int, s: Int, pad: Int, algorithm: Kernels.ConvAlgorithm)] = [
            (3, 5, 9, 7, 3, 1, 1, .direct), (8, 13, 10, 11, 3, 2, 1, .direct), (16, 7, 6, 5, 1, 1, 0, .direct),
            (4, 4, 5, 5, 3, 1, 0, .direct), (70, 13, 9, 11, 3, 1, 1, .winograd), (24, 30, 16, 17, 3, 1, 1, .winograd),
            // Enough tiles (680) to split them across parts: U transformed once, shared.
            (15, 20, 40, 34, 3, 1, 1, .winograd),
            // Few tiles, more than one block of output channels: U per block.
            (9, 100, 6, 7, 3, 1, 1, .winograd),
        ]
        var seed: UInt64 = 9500
        for implementation in implementations {
            for type in [WeightType.f16, .q8] {
                for c in cases {
                    seed += 1
                    var random = SeededRandom(seed: seed)
                    let weights = TestWeights(rows: c.cout, cols: c.cin * c.k * c.k, type: type, random: &random)
                    let batch = 2
                    let x = random.array(c.cin * batch * c.h * c.w), b = random.array(c.cout)
                    let ho = (c.h + 2 * c.pad - c.k) / c.s + 1, wo = (c.w + 2 * c.pad - c.k) / c.s + 1
                    let count = c.cout * batch * ho * wo
                    func run(_ w: WeightMatrix, _ x: [Float], fast: Bool) -> [Float] {
                        outputBuffer(count) { y in
                            x.ptr { xp in b.ptr { bp in
                                if fast {
                                    Kernels.convAlgorithm = c.algorithm
                                    defer { Kernels.convAlgorithm = .automatic }
                                    Kernels.conv2d(w, kernelSize: c.k, stride: c.s, padding: c.pad, input: xp,
                                                   channels: c.cin, batch: batch, height: c.h, width: c.w, bias: bp,
                                                   residual: nil, output: y, pool: testPools[Int(seed % 3)])
                                } else {
                                    ReferenceKernels.conv2d(w, kernelSize: c.k, stride: c.s, padding: c.pad, input: xp,
                                                            channels: c.cin, batch: batch, height: c.h, width: c.w,
                                                            bias: bp, residual: nil, output: y)
                                }
                            } }
                        }
                    }
                    if c.h == 40 {
                        XCTAssertTrue(Gemm.splitsColumns(rows: c.cout, columns: 680, tileColumns: BF16Gemm.panelColumns,
                                                         threads: testPools[Int(seed % 3)].threads))
                    }
                    let actual = withBF16(implementation) { run(weights.matrix, x, fast: true) }
                    let label = "\(implementation) \(type) \(c)"
                    if c.algorithm == .direct {
                        let roundedW = RoundedWeights(weights.matrix)
                        let same = withExtendedLifetime(roundedW) {
                            nmse(actual, run(roundedW.matrix, x.map(Self.rounded), fast: false))
                        }
                        XCTAssertLessThan(same, MaxNMSE.conv(type), "\(label): vs rounded operands")
                    }
                    // Winograd rounds its transformed operands, so only the exact bound applies.
                    let exact = nmse(actual, run(weights.matrix, x, fast: false))
                    XCTAssertLessThan(exact, Self.maxNMSEExact, "\(label): vs exact")
                    XCTAssertGreaterThan(exact, 1e-9, "\(label): bf16 rounding should be visible")
                }
            }
        }
    }

    /// The C kernel and its twin on packed operands with odd strides, every epilogue.
    func testNativeMatchesTwin() throws {
        try XCTSkipUnless(BF16Gemm.nativeAvailable, "no native bf16 kernel on this CPU")
        var random = SeededRandom(seed: 9900)
        for (rows, columns, pairs) in [(1, 1, 1), (5, 31, 3), (12, 32, 8), (13, 33, 17), (30, 70, 40), (16, 33, 20), (40, 32, 48), (27, 5, 2)] {
            let paddedRows = (rows + 11) / 12 * 12, panels = (columns + 31) / 32
            let lda = pairs + 5, panelStride = pairs * 32 + 3
            var a = [UInt32](repeating: 0, count: paddedRows * lda)
            var bm = [UInt32](repeating: 0, count: panels * panelStride)
            for r in 0..<rows { for i in 0..<pairs {
                a[r * lda + i] = BF16Gemm.pair(random.uniform(), random.uniform())
            } }
            for p in 0..<columns { for i in 0..<pairs {
                bm[(p / 32) * panelStride + i * 32 + p % 32] = BF16Gemm.pair(random.uniform(), random.uniform())
            } }
            let ldc = columns + 3
            let scale = random.array(rows), bias = random.array(rows), addend = random.array(rows * ldc)
            for epilogue in 0..<4 {
                func run(_ native: Bool) -> [Float] {
                    var c = [Float](repeating: .nan, count: rows * ldc)
                    a.withUnsafeBufferPointer { ap in bm.withUnsafeBufferPointer { bp in
                        scale.ptr { sp in bias.ptr { biasp in addend.ptr { addp in
                            c.withUnsafeMutableBufferPointer { cp in
                                let s = epilogue & 1 != 0 ? sp : nil, bb = epilogue & 2 != 0 ? biasp : nil
                                let add = epilogue == 3 ? addp : nil
                                BF16Gemm.implementation = native ? .native : .portable
                                BF16Gemm.block(rows: rows, columns: columns, pairs: pairs, a: ap.baseAddress!,
                                               lda: lda, b: bp.baseAddress!, panelStride: panelStride,
                                               c: cp.baseAddress!, rowStride: ldc, scale: s, bias: bb, addend: add)
                            }
                        } } }
                    } }
                    // Only the columns < `columns` of each row are written.
                    return (0..<rows).flatMap { r in c[(r * ldc)..<(r * ldc + columns)] }
                }
                let native = run(true), twin = run(false)
                XCTAssertFalse(native.contains { $0.isNaN }, "every element written")
                XCTAssertLessThan(nmse(native, twin), 1e-12, "rows \(rows) columns \(columns) pairs \(pairs) epilogue \(epilogue)")
            }
        }
    }

    /// Packed operands for one block call: A padded to whole 12-row tiles only (the
    /// contract; the AMX kernel reads 16-row tiles and must copy the last ones), rows
    /// `lda` apart with gaps, B panels with gaps between them and zero past `columns`.
    struct PackedBlock {
        let rows, columns, pairs, lda, panelStride, ldc: Int
        var a, b: [UInt32]
        let scale, bias, addend: [Float]

        init(rows: Int, columns: Int, pairs: Int, random: inout SeededRandom) {
            self.rows = rows; self.columns = columns; self.pairs = pairs
            lda = pairs + 5; panelStride = pairs * 32 + 3; ldc = columns + 3
            let paddedRows = (rows + 11) / 12 * 12, panels = (columns + 31) / 32
            a = [UInt32](repeating: 0, count: (paddedRows - 1) * lda + pairs)
            b = [UInt32](repeating: 0, count: (panels - 1) * panelStride + pairs * 32)
            for r in 0..<rows { for i in 0..<pairs { a[r * lda + i] = BF16Gemm.pair(random.uniform(), random.uniform()) } }
            for p in 0..<columns { for i in 0..<pairs {
                b[(p / 32) * panelStride + i * 32 + p % 32] = BF16Gemm.pair(random.uniform(), random.uniform())
            } }
            scale = random.array(rows); bias = random.array(rows); addend = random.array(rows * ldc)
        }

        /// C (rows × ldc, NaN where not written) from `implementation`, with epilogue
        /// 0 none, 1 scale, 2 bias, 3 scale + bias + addend, 4 the same with addend = C.
        func run(_ implementation: BF16Gemm.Implementation, epilogue: Int) -> [Float] {
            var c = [Float](repeating: .nan, count: rows * ldc)
            if epilogue == 4 { for r in 0..<rows { for p in 0..<columns { c[r * ldc + p] = addend[r * ldc + p] } } }
            let saved = BF16Gemm.implementation
            defer { BF16Gemm.implementation = saved }
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in
                scale.ptr { sp in bias.ptr { biasp in addend.ptr { addp in
                    c.withUnsafeMutableBufferPointer { cp in
                        let add: UnsafePointer<Float>? = epilogue == 3 ? addp : epilogue == 4 ? UnsafePointer(cp.baseAddress!) : nil
                        BF16Gemm.implementation = implementation
                        BF16Gemm.block(rows: rows, columns: columns, pairs: pairs, a: ap.baseAddress!, lda: lda,
                                       b: bp.baseAddress!, panelStride: panelStride, c: cp.baseAddress!, rowStride: ldc,
                                       scale: [1, 3, 4].contains(epilogue) ? sp : nil,
                                       bias: epilogue >= 2 ? biasp : nil, addend: add)
                    }
                } } }
            } }
            return c
        }
    }

    /// Shapes around the AMX kernel's 32 × 32 blocks of 16 × 16 tiles and 16-pair steps:
    /// a short last A tile (rows 1, 17, 33, 47: below the 16 the tile reads), a single
    /// half, partial and several panels, a tail step alone (pairs < 16), none (16, 32), and
    /// after full steps (17, 20 = the SD 1.5 attention's head dimension 40, 33).
    static let amxShapes = [(1, 1, 1), (5, 31, 3), (16, 32, 16), (17, 33, 17), (32, 32, 32), (33, 64, 20),
                            (47, 70, 33), (12, 96, 8), (64, 40, 48)]

    /// The AMX kernel's body on its scalar tile model against the twin: equal up to the sign
    /// of zero (the model sums in the twin's order: per pair, low then high product, each
    /// exact in f32; only the epilogue's "· 1 + 0" differs), every row and column written and
    /// nothing else, and no tile operation the hardware would refuse.
    func testAMXKernelOnTileModelMatchesTwin() {
        var random = SeededRandom(seed: 9950)
        let faultsBefore = pd_amx_emulation_faults()
        for (rows, columns, pairs) in Self.amxShapes {
            let block = PackedBlock(rows: rows, columns: columns, pairs: pairs, random: &random)
            for epilogue in 0...4 {
                let model = block.run(.amxEmulated, epilogue: epilogue), twin = block.run(.portable, epilogue: epilogue)
                let label = "rows \(rows) columns \(columns) pairs \(pairs) epilogue \(epilogue)"
                for r in 0..<rows {
                    for p in 0..<block.ldc {
                        let i = r * block.ldc + p
                        if p < columns {
                            XCTAssertTrue(model[i] == twin[i], "\(label): C[\(r), \(p)] = \(model[i]), twin \(twin[i])")
                        } else {
                            XCTAssertTrue(model[i].isNaN, "\(label): C[\(r), \(p)] past the columns was written")
                        }
                    }
                }
            }
        }
        XCTAssertEqual(pd_amx_emulation_faults(), faultsBefore, "tile operations the hardware would refuse")
    }

    /// The probe `pd_amx_bf16_available` runs on the AMX kernel before `amx` counts as
    /// supported, on stand-in kernels: it accepts a correct one (the AMX body on the tile
    /// model), refuses a wrong product and an illegal instruction (the SIGILL caught, the
    /// handler that was there before restored), and the process goes on.
    func testAMXStartupProbe() {
        func currentSIGILLHandler() -> UnsafeMutableRawPointer? {
            var action = sigaction()
            sigaction(SIGILL, nil, &action)
            return unsafeBitCast(action.__sigaction_handler.sa_handler, to: UnsafeMutableRawPointer?.self)
        }
        let before = currentSIGILLHandler()
        XCTAssertEqual(pd_amx_probe_selftest(0), 1, "a correct kernel passes")
        XCTAssertEqual(pd_amx_probe_selftest(1), 0, "a wrong product fails")
        XCTAssertEqual(pd_amx_probe_selftest(2), 0, "an illegal instruction fails, caught")
        XCTAssertEqual(currentSIGILLHandler(), before, "the previous SIGILL handler is restored")
        XCTAssertEqual(pd_amx_probe_selftest(0), 1, "and a correct kernel still passes after it")
    }

    /// The same on the tile instructions, where the CPU has AMX (their rounding is not
    /// documented to the bit, so the native kernel's bound).
    func testAMXKernelMatchesTwin() throws {
        try XCTSkipUnless(KernelVariant.amx.isSupported,
                          "no AMX-BF16 here (\(KernelVariant.featureNames)); the tile-model test covers the kernel's body")
        var random = SeededRandom(seed: 9960)
        for (rows, columns, pairs) in Self.amxShapes {
            let block = PackedBlock(rows: rows, columns: columns, pairs: pairs, random: &random)
            for epilogue in 0...4 {
                let amx = block.run(.amx, epilogue: epilogue), twin = block.run(.portable, epilogue: epilogue)
                let written = { (c: [Float]) in (0..<rows).flatMap { r in c[(r * block.ldc)..<(r * block.ldc + columns)] } }
                XCTAssertFalse(written(amx).contains { $0.isNaN }, "every element written")
                XCTAssertLessThan(nmse(written(amx), written(twin)), 1e-12,
                                  "rows \(rows) columns \(columns) pairs \(pairs) epilogue \(epilogue)")
            }
        }
    }

    /// The native q8 weight packing (`pd_bf16_pack_q8_row`, 32 int8 per step) gives the
    /// twin's words exactly: all 256 int8 values, every tail length, odd depths (the last
    /// high half 0), a block starting mid-row.
    func testNativeQ8PackingMatchesTwin() throws {
        try XCTSkipUnless(BF16Gemm.nativeAvailable, "no native bf16 kernel on this CPU")
        let saved = BF16Gemm.implementation
        defer { BF16Gemm.implementation = saved }
        let (rows, cols) = (3, 300)
        var bytes = (0..<(rows * cols)).map { Int8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        bytes[0] = -128; bytes[1] = 127; bytes[2] = 0; bytes[3] = -1
        let scales = [Float](repeating: 0.5, count: rows)
        let rowBuffer = UnsafeMutablePointer<Float>.allocate(capacity: cols + 1)
        defer { rowBuffer.deallocate() }
        for (k0, kc) in [(0, 300), (0, 1), (5, 31), (7, 32), (1, 33), (2, 63), (0, 64), (3, 257)] {
            func pack(_ implementation: BF16Gemm.Implementation) -> [UInt32] {
                BF16Gemm.implementation = implementation
                let words = (rows + 11) / 12 * 12 * ((kc + 1) / 2)
                var out = [UInt32](repeating: 0xDEAD_BEEF, count: words)
                bytes.withUnsafeBytes { raw in scales.withUnsafeBufferPointer { sp in
                    let w = WeightMatrix(type: .q8, rows: rows, cols: cols, data: raw.baseAddress!, scales: sp.baseAddress!)
                    out.withUnsafeMutableBufferPointer {
                        BF16Gemm.packWeights(w, row: 0, count: rows, column: k0, depth: kc, into: $0.baseAddress!,
                                             rowBuffer: rowBuffer)
                    }
                } }
                return out
            }
            XCTAssertEqual(pack(.native), pack(.portable), "columns \(k0) ..< \(k0 + kc)")
        }
    }
}

