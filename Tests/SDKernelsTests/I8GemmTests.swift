import XCTest
import CKernels
@testable import SDKernels

/// The int8 products (`Kernels.Precision.int8`) through `Gemm.linear` and `Kernels.conv2d`:
///   1. the activations' quantisation, byte for byte against its definition written here;
///   2. the products against the f32 reference run on the quantised operands (only the
///      summation order differs: `MaxNMSE.linear`), which checks packing, blocking and kernel;
///   3. against the exact f32 reference, within `maxNMSEExact`: what the mode costs;
///   4. what int8 leaves to other precisions (other weights, Winograd convolutions).
/// The per-ISA kernels are held bitwise to the portable one in I8GemmKernelTests.
final class I8GemmTests: XCTestCase {
    /// A uniform activation rounded to a step of max/127 errs by step²/12 in variance against
    /// its own max²/3: 1 / (4 · 127²) ≈ 1.6e-5 relative; outputs average that over k.
    /// Measured worst over these tests: see testLinearAwkwardShapes' report.
    static let maxNMSEExact = 6e-5

    override func tearDown() {
        for pool in testPools { pool.precision = .f32 }
    }

    func withInt8<R>(_ body: () -> R) -> R {
        for pool in testPools { pool.precision = .int8 }
        defer { for pool in testPools { pool.precision = .f32 } }
        return body()
    }

    /// The quantisation rule, scalar: per column, per block of 32 k from k = 0.
    static func quantized(_ x: [Float], depth k: Int, columns p: Int) -> (q: [Int32], dequantized: [Float], scales: [Float]) {
        var q = [Int32](repeating: 0, count: k * p), d = [Float](repeating: 0, count: k * p)
        var scales: [Float] = []
        for k0 in stride(from: 0, to: k, by: 32) {
            for j in 0..<p {
                var m: Float = 0
                for i in k0..<min(k, k0 + 32) { m = max(m, abs(x[i * p + j])) }
                let scale = m / 127
                scales.append(scale)
                for i in k0..<min(k, k0 + 32) where m > 0 {
                    let v = Int32((x[i * p + j] * (127 / m)).rounded(.toNearestOrEven))
                    q[i * p + j] = v
                    d[i * p + j] = Float(v) * scale
                }
            }
        }
        return (q, d, scales)
    }

    /// One B block packed from rows, every byte against the rule: quads, scales, corrections,
    /// zeros past the columns and the depth; and the same block packed from Gemm's f32
    /// micro-panels (the implicit-GEMM convolutions' source) is the same bytes.
    func testActivationPacking() {
        var random = SeededRandom(seed: 31_000)
        for (k, p) in [(32, 32), (70, 45), (5, 3), (64, 100), (33, 1)] {
            // Magnitudes that differ by block and column, a zero column, an exact ±max.
            var x = random.array(k * p)
            for i in 0..<k { for j in 0..<p { x[i * p + j] *= Float(1 << ((i / 32 + j) % 7)) * 0.01 } }
            for i in 0..<k { x[i * p] = 0 }
            if p > 1 { x[p + 1] = -1000 }
            let (q, _, scales) = Self.quantized(x, depth: k, columns: p)
            let blocks = (k + 31) / 32, panels = (p + 31) / 32
            let stride = I8Gemm.panelStride(depth: k)
            XCTAssertEqual(stride, blocks * 1280)
            var fromRows = [UInt8](repeating: 0xAA, count: panels * stride)
            fromRows.withUnsafeMutableBytes { dst in
                x.ptr { I8Gemm.packRows($0, rowStride: p, row: 0, depth: k, column: 0, count: p, into: dst.baseAddress!) }
            }
            for panel in 0..<panels {
                for block in 0..<blocks {
                    let record = panel * stride + block * 1280
                    for column in 0..<32 {
                        let j = panel * 32 + column
                        var sum: Int32 = 0
                        for i in 0..<32 {
                            let kk = block * 32 + i
                            let expected: Int32 = j < p && kk < k ? q[kk * p + j] : 0
                            sum += expected
                            let byte = fromRows[record + ((i / 4) * 32 + column) * 4 + i % 4]
                            XCTAssertEqual(Int32(Int8(bitPattern: byte)), expected, "k \(k) p \(p): q[\(kk), \(j)]")
                        }
                        let scale = fromRows.withUnsafeBytes { $0.load(fromByteOffset: record + 1024 + 4 * column, as: Float.self) }
                        let corr = fromRows.withUnsafeBytes { $0.load(fromByteOffset: record + 1152 + 4 * column, as: Int32.self) }
                        XCTAssertEqual(scale, j < p ? scales[block * p + j] : 0, "k \(k) p \(p): scale of block \(block), column \(j)")
                        XCTAssertEqual(corr, 128 * sum, "k \(k) p \(p): correction of block \(block), column \(j)")
                    }
                }
            }
            // The same operand through Gemm's f32 panels.
            let fw = 2 * NativeF32.scalarCount
            var f32Panels = [Float](repeating: 0, count: k * ((p + fw - 1) / fw * fw))
            f32Panels.withUnsafeMutableBufferPointer { panelsBuffer in
                x.ptr { Gemm.packRows($0, rowStride: p, row: 0, depth: k, column: 0, count: p, into: panelsBuffer.baseAddress!) }
            }
            var fromPanels = [UInt8](repeating: 0x55, count: panels * stride)
            fromPanels.withUnsafeMutableBytes { dst in
                f32Panels.ptr { I8Gemm.packPanels($0, depth: k, count: p, into: dst.baseAddress!) }
            }
            XCTAssertEqual(fromPanels, fromRows, "k \(k) p \(p): packed from f32 panels")
        }
    }

    /// The 16-wide C quantiser of the AVX-512 variants against the Swift twin, byte for byte,
    /// from rows and from f32 panels: partial panels and blocks, a column offset, zero columns,
    /// NaN, ±∞, ±0, huge and subnormal values.
    func testAVX512QuantizerMatchesTwin() throws {
        try XCTSkipUnless(KernelVariant.avx512.isSupported, "needs AVX-512 (this CPU has: \(KernelVariant.featureNames))")
        try XCTSkipUnless(2 * NativeF32.scalarCount == 16, "this build's f32 panels are not 16 wide")
        XCTAssertTrue(with(.avx512) { I8Gemm.quantizesInC })
        XCTAssertFalse(with(.portable) { I8Gemm.quantizesInC })
        var random = SeededRandom(seed: 31_050)
        let special: [Float] = [.nan, .infinity, -.infinity, 0, -0, 3e38, -3e38, 1e-40, -1e-42, 127, -0.5]
        for (k, p, offset) in [(32, 32, 0), (70, 45, 3), (5, 3, 1), (64, 100, 0), (33, 1, 0), (100, 17, 2)] {
            let width = p + offset + 5
            var x = random.array(k * width, -4, 4)
            for i in 0..<k { x[i * width + offset] = 0 }  // a zero column
            // Each special value mid-column, most in a column of their own.
            for (n, value) in special.enumerated() { x[((n * 7 + 3) % k) * width + offset + (1 + n) % p] = value }
            func packed(_ variant: KernelVariant) -> ([UInt8], [UInt8]) {
                with(variant) {
                    let stride = I8Gemm.panelStride(depth: k), panels = (p + 31) / 32
                    var fromRows = [UInt8](repeating: 0xAA, count: panels * stride)
                    fromRows.withUnsafeMutableBytes { dst in
                        x.ptr { I8Gemm.packRows($0, rowStride: width, row: 0, depth: k, column: offset, count: p,
                                                into: dst.baseAddress!) }
                    }
                    var f32Panels = [Float](repeating: 0, count: k * ((p + 15) / 16 * 16))
                    f32Panels.withUnsafeMutableBufferPointer { panelsBuffer in
                        x.ptr { Gemm.packRows($0, rowStride: width, row: 0, depth: k, column: offset, count: p,
                                              into: panelsBuffer.baseAddress!) }
                    }
                    var fromPanels = [UInt8](repeating: 0x55, count: panels * stride)
                    fromPanels.withUnsafeMutableBytes { dst in
                        f32Panels.ptr { I8Gemm.packPanels($0, depth: k, count: p, into: dst.baseAddress!) }
                    }
                    return (fromRows, fromPanels)
                }
            }
            let twin = packed(.portable), c = packed(.avx512)
            for (name, a, b) in [("from rows", c.0, twin.0), ("from f32 panels", c.1, twin.1)] {
                XCTAssertEqual(a.count, b.count)
                if let i = a.indices.first(where: { a[$0] != b[$0] }) {
                    XCTFail("k \(k) p \(p) offset \(offset) \(name): byte \(i) is \(a[i]), the twin's \(b[i])")
                }
            }
        }
    }

    /// Weight rows: each int8 value + 128, then 128s past the depth and in the padding rows.
    func testWeightPacking() {
        var random = SeededRandom(seed: 31_100)
        let weights = TestWeights(rows: 5, cols: 70, type: .q8, random: &random)
        let width = I8Gemm.rowBytes(depth: 37)
        XCTAssertEqual(width, 64)
        var packed = [UInt8](repeating: 0, count: 12 * width)
        packed.withUnsafeMutableBufferPointer {
            I8Gemm.packWeights(weights.matrix, row: 1, count: 4, column: 30, depth: 37, into: $0.baseAddress!)
        }
        for r in 0..<12 {
            for i in 0..<width {
                let expected = r < 4 && i < 37
                    ? UInt8(Int(weights.matrix.data.load(fromByteOffset: (1 + r) * 70 + 30 + i, as: Int8.self)) + 128) : 128
                XCTAssertEqual(packed[r * width + i], expected, "row \(r) byte \(i)")
            }
        }
    }

    func testLinearAwkwardShapes() {
        let shapes: [(n: Int, k: Int, p: Int)] = [
            (1, 1, 1), (1, 3, 7), (7, 1, 3), (3, 17, 1), (13, 17, 33), (25, 33, 65), (12, 32, 32),
            (40, 77, 5), (19, 65, 48), (24, 400, 70), (100, 800, 40),
        ]
        var seed: UInt64 = 31_200, worst = 0.0
        for (n, k, p) in shapes {
            for blocking in testBlockings + [("deep", Gemm.Blocking(maxDepth: 100, maxRows: 24, maxColumns: 64))] {
                seed += 1
                var random = SeededRandom(seed: seed)
                let weights = TestWeights(rows: n, cols: k, type: .q8, random: &random)
                let x = random.array(k * p), b = random.array(n), r = random.array(n * p)
                let useBias = seed % 2 == 0, useResidual = seed % 3 != 0
                let pool = testPools[Int(seed % 3)]
                let label = "N=\(n) K=\(k) P=\(p) blocking=\(blocking.0)"
                func reference(_ x: [Float]) -> [Float] {
                    outputBuffer(n * p) { y in
                        x.ptr { xp in b.ptr { bp in r.ptr { rp in
                            ReferenceKernels.linear(weights.matrix, input: xp, columns: p, bias: useBias ? bp : nil,
                                                    residual: useResidual ? rp : nil, output: y)
                        } } }
                    }
                }
                let actual = withInt8 {
                    outputBuffer(n * p) { y in
                        x.ptr { xp in b.ptr { bp in r.ptr { rp in
                            Gemm.linear(weights.matrix, input: xp, columns: p, bias: useBias ? bp : nil,
                                        residual: useResidual ? rp : nil, output: y, pool: pool, blocking: blocking.1)
                        } } }
                    }
                }
                let same = nmse(actual, reference(Self.quantized(x, depth: k, columns: p).dequantized))
                XCTAssertLessThan(same, MaxNMSE.linear(.q8), "\(label): vs quantised operands")
                if !useResidual {  // the residual would hide the products' error
                    let exact = nmse(actual, reference(x))
                    worst = max(worst, exact)
                    XCTAssertLessThan(exact, Self.maxNMSEExact, "\(label): vs exact")
                    if k > 1 { XCTAssertGreaterThan(exact, 1e-9, "\(label): int8 rounding should be visible") }
                }
            }
        }
        print("I8GemmTests: worst NMSE against the exact product \(worst)")
    }

    /// Implicit-GEMM convolutions (strided, padded, 1×1) in int8 against the exact reference;
    /// a 3×3 stride-1 convolution that runs as Winograd takes `elsewhere`'s path, bit for bit.
    func testConvolutions() {
        let cases: [(cin: Int, cout: Int, h: Int, w: Int, k: Int, s: Int, pad: Int)] = [
            (3, 5, 9, 7, 3, 1, 1), (8, 13, 10, 11, 3, 2, 1), (40, 7, 6, 5, 1, 1, 0), (4, 4, 5, 5, 3, 1, 0),
            (70, 24, 9, 11, 3, 2, 1),
        ]
        var seed: UInt64 = 31_300
        for c in cases {
            seed += 1
            var random = SeededRandom(seed: seed)
            let weights = TestWeights(rows: c.cout, cols: c.cin * c.k * c.k, type: .q8, random: &random)
            let batch = 2
            let x = random.array(c.cin * batch * c.h * c.w), b = random.array(c.cout)
            let ho = (c.h + 2 * c.pad - c.k) / c.s + 1, wo = (c.w + 2 * c.pad - c.k) / c.s + 1
            let count = c.cout * batch * ho * wo
            let actual = withInt8 {
                outputBuffer(count) { y in
                    x.ptr { xp in b.ptr { bp in
                        Kernels.convAlgorithm = .direct
                        defer { Kernels.convAlgorithm = .automatic }
                        Kernels.conv2d(weights.matrix, kernelSize: c.k, stride: c.s, padding: c.pad, input: xp,
                                       channels: c.cin, batch: batch, height: c.h, width: c.w, bias: bp,
                                       residual: nil, output: y, pool: testPools[Int(seed % 3)])
                    } }
                }
            }
            let exact = outputBuffer(count) { y in
                x.ptr { xp in b.ptr { bp in
                    ReferenceKernels.conv2d(weights.matrix, kernelSize: c.k, stride: c.s, padding: c.pad, input: xp,
                                            channels: c.cin, batch: batch, height: c.h, width: c.w,
                                            bias: bp, residual: nil, output: y)
                } }
            }
            let error = nmse(actual, exact)
            XCTAssertLessThan(error, Self.maxNMSEExact, "\(c): vs exact")
            XCTAssertGreaterThan(error, 1e-9, "\(c): int8 rounding should be visible")
        }
    }

    /// The measured rule for int8 mode's 3×3 convolutions (`Conv.int8DirectPays`) on SD 1.5
    /// shapes, and `.automatic` following it: bit for bit the direct conv where it says so,
    /// Winograd elsewhere.
    func testAutomaticConvRunsDirectWhereItPays() {
        func pays(_ cin: Int, _ cout: Int, _ size: Int, batch: Int = 2, stride: Int = 1, f32: Bool) -> Bool {
            let g = Conv.Geometry(channels: cin, batch: batch, height: size, width: size, kernel: 3, stride: stride,
                                  padding: 1)
            return Conv.int8DirectPays(g, outChannels: cout, winogradF32: f32)
        }
        // Against f32 Winograd: every UNet conv; the VAE's 256- and 128-channel ones only with
        // the 8-lane int8 kernels; never below 128 channels.
        let kernel = I8Gemm.implementation
        defer { I8Gemm.implementation = kernel }
        for implementation in [I8Gemm.Implementation.avx512VNNI, .avxVNNI, .sdot] {
            I8Gemm.implementation = implementation
            for (cin, cout, size) in [(320, 320, 64), (640, 640, 32), (1280, 1280, 16), (2560, 1280, 8)] {
                XCTAssertTrue(pays(cin, cout, size, f32: true), "\(cin)→\(cout) at \(size)², f32 Winograd, \(implementation)")
            }
            let narrow = implementation != .avx512VNNI
            XCTAssertEqual(pays(512, 256, 256, batch: 1, f32: true), narrow, "\(implementation)")
            XCTAssertEqual(pays(128, 128, 512, batch: 1, f32: true), narrow, "\(implementation)")
            XCTAssertFalse(pays(128, 64, 512, batch: 1, f32: true), "\(implementation)")
        }
        I8Gemm.implementation = kernel
        // Against bf16 Winograd: wide inputs on few tiles only.
        XCTAssertTrue(pays(2560, 1280, 16, f32: false))
        XCTAssertTrue(pays(960, 640, 32, f32: false))
        XCTAssertFalse(pays(960, 320, 64, f32: false), "2048 tiles")
        XCTAssertFalse(pays(640, 640, 32, f32: false))
        XCTAssertFalse(pays(512, 512, 64, batch: 1, f32: false))
        XCTAssertFalse(pays(1280, 1280, 16, stride: 2, f32: true), "not a Winograd shape")

        var random = SeededRandom(seed: 31_350)
        let pool = testPools[2]
        func conv(_ weights: TestWeights, _ x: [Float], cin: Int, _ algorithm: Kernels.ConvAlgorithm) -> [Float] {
            pool.precision = .int8
            Kernels.convAlgorithm = algorithm
            defer { pool.precision = .f32; Kernels.convAlgorithm = .automatic }
            return outputBuffer(weights.matrix.rows * 16 * 16) { y in
                x.ptr {
                    Kernels.conv2d(weights.matrix, kernelSize: 3, stride: 1, padding: 1, input: $0, channels: cin,
                                   batch: 1, height: 16, width: 16, bias: nil, residual: nil, output: y, pool: pool)
                }
            }
        }
        // 960 → 320 on 64 tiles is direct by both rules; 64 → 64 by neither.
        for (cin, cout, direct) in [(960, 320, true), (64, 64, false)] {
            let weights = TestWeights(rows: cout, cols: cin * 9, type: .q8, random: &random)
            let x = random.array(cin * 16 * 16)
            let automatic = conv(weights, x, cin: cin, .automatic)
            let (same, other) = direct ? (Kernels.ConvAlgorithm.direct, Kernels.ConvAlgorithm.winograd) : (.winograd, .direct)
            XCTAssertNil(firstDifference(automatic, conv(weights, x, cin: cin, same)), "\(cin)→\(cout): as \(same)")
            XCTAssertNotNil(firstDifference(automatic, conv(weights, x, cin: cin, other)), "\(cin)→\(cout)")
        }
    }

    /// What int8 leaves to `elsewhere` runs exactly as `elsewhere` does: weights not stored as
    /// int8 (linear), and Winograd 3×3 convolutions.
    func testOtherProductsRunElsewhere() {
        var random = SeededRandom(seed: 31_400)
        let pool = testPools[1]
        let f16 = TestWeights(rows: 20, cols: 50, type: .f16, random: &random)
        let x = random.array(50 * 40)
        func linear(_ precision: Kernels.Precision) -> [Float] {
            pool.precision = precision
            defer { pool.precision = .f32 }
            return outputBuffer(20 * 40) { y in
                x.ptr { Gemm.linear(f16.matrix, input: $0, columns: 40, bias: nil, residual: nil, output: y, pool: pool) }
            }
        }
        let elsewhere = Kernels.Precision.int8.elsewhere
        XCTAssertEqual(elsewhere, Kernels.variant.hasNativeBF16 ? .bf16 : .f32)
        XCTAssertNil(firstDifference(linear(.int8), linear(elsewhere)), "f16 weights under int8")

        let q8 = TestWeights(rows: 24, cols: 30 * 9, type: .q8, random: &random)
        let image = random.array(30 * 16 * 17)
        func conv(_ precision: Kernels.Precision) -> [Float] {
            pool.precision = precision
            Kernels.convAlgorithm = .winograd
            defer { pool.precision = .f32; Kernels.convAlgorithm = .automatic }
            return outputBuffer(24 * 16 * 17) { y in
                image.ptr {
                    Kernels.conv2d(q8.matrix, kernelSize: 3, stride: 1, padding: 1, input: $0, channels: 30, batch: 1,
                                   height: 16, width: 17, bias: nil, residual: nil, output: y, pool: pool)
                }
            }
        }
        XCTAssertNil(firstDifference(conv(.int8), conv(elsewhere)), "Winograd convolution under int8")
    }

    /// The int8 kernels this CPU runs besides the portable one.
    static var nativeImplementations: [I8Gemm.Implementation] {
        let f = KernelVariant.cpuFeatures
        #if arch(arm64)
        return pd_i8_sdot_available() != 0 ? [.sdot] : []
        #else
        return (f & UInt32(PD_CPU_AVX512_VNNI) != 0 ? [.avx512VNNI] : []) + (f & UInt32(PD_CPU_AVX_VNNI) != 0 ? [.avxVNNI] : [])
        #endif
    }

    /// Whole products (threaded, blocked, packed in Swift) on each native kernel, bit for bit
    /// the portable one's: linear layers and strided convolutions.
    func testNativeKernelsMatchPortableThroughTheLayers() throws {
        let natives = Self.nativeImplementations
        try XCTSkipIf(natives.isEmpty, "no int8 dot products on this CPU (\(KernelVariant.featureNames))")
        let saved = I8Gemm.implementation
        defer { I8Gemm.implementation = saved }
        var random = SeededRandom(seed: 31_600)
        let weights = TestWeights(rows: 77, cols: 3 * 3 * 45, type: .q8, random: &random)
        let x = random.array(45 * 2 * 13 * 11), b = random.array(77)
        let xl = random.array(405 * 95), residual = random.array(77 * 95)
        func layers(_ implementation: I8Gemm.Implementation) -> [Float] {
            I8Gemm.implementation = implementation
            return withInt8 {
                let linear = outputBuffer(77 * 95) { y in
                    xl.ptr { xp in b.ptr { bp in residual.ptr { rp in
                        Gemm.linear(weights.matrix, input: xp, columns: 95, bias: bp, residual: rp, output: y,
                                    pool: testPools[2], blocking: Gemm.Blocking(maxDepth: 100, maxRows: 24, maxColumns: 64))
                    } } }
                }
                let conv = outputBuffer(77 * 2 * 7 * 6) { y in
                    x.ptr { xp in b.ptr { bp in
                        Kernels.conv2d(weights.matrix, kernelSize: 3, stride: 2, padding: 1, input: xp, channels: 45, batch: 2,
                                       height: 13, width: 11, bias: bp, residual: nil, output: y, pool: testPools[1])
                    } }
                }
                return linear + conv
            }
        }
        let portable = layers(.portable)
        for implementation in natives {
            XCTAssertNil(firstDifference(layers(implementation), portable), "\(implementation)")
        }
    }

    /// Which int8 kernel each variant runs for a set of CPU features: a kernel only where its
    /// instructions exist (an AVX-512 CPU without VNNI must not get `vpdpbusd`).
    func testInt8KernelChoiceFollowsTheFeatures() {
        let zmm = UInt32(PD_CPU_AVX512_VNNI), ymm = UInt32(PD_CPU_AVX_VNNI)
        let cases: [(KernelVariant, UInt32, I8Gemm.Implementation)] = [
            (.portable, zmm | ymm, .portable),
            (.avx2, 0, .portable), (.avx2, zmm, .portable), (.avx2, ymm, .avxVNNI), (.avx2, zmm | ymm, .avxVNNI),
            (.avx512, 0, .portable), (.avx512, ymm, .avxVNNI), (.avx512, zmm, .avx512VNNI),
            (.avx512BF16, 0, .portable), (.avx512BF16, zmm | ymm, .avx512VNNI),
            (.amx, 0, .portable), (.amx, zmm, .avx512VNNI),
        ]
        for (variant, features, expected) in cases {
            XCTAssertEqual(variant.i8Implementation(features: features), expected, "\(variant) with features \(features)")
        }
    }

    /// A NaN or infinite activation is no crash (the rounding uses no trapping conversion);
    /// it spoils its own column only.
    func testNonFiniteActivations() {
        var random = SeededRandom(seed: 31_500)
        let weights = TestWeights(rows: 6, cols: 40, type: .q8, random: &random)
        var x = random.array(40 * 8)
        x[3 * 8 + 2] = .nan
        x[35 * 8 + 5] = .infinity
        let y = withInt8 {
            outputBuffer(6 * 8) { y in
                x.ptr { Gemm.linear(weights.matrix, input: $0, columns: 8, bias: nil, residual: nil, output: y, pool: testPools[0]) }
            }
        }
        for n in 0..<6 {
            for j in 0..<8 where j != 2 && j != 5 { XCTAssertTrue(y[n * 8 + j].isFinite, "row \(n) column \(j)") }
        }
    }
}
