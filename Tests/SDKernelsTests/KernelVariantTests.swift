import CKernels
import XCTest
@testable import SDKernels

/// Each kernel variant against the portable twin (`Gemm.portableBlock` on the Swift
/// micro-kernel). Bound: bitwise equality. Every variant sums each output element in the
/// same order (k ascending, one FMA per k, then + bias, then + addend), only the register
/// blocking differs, so any difference is a bug rather than rounding. Variants this CPU
/// cannot run are skipped with a message (an AVX-512 CI machine runs them).
final class KernelVariantTests: XCTestCase {
    /// The f32 block-product variants (avx512-bf16's and amx's f32 product is avx512's).
    let nativeVariants: [KernelVariant] = [.avx2, .avx512, .avx512BF16, .amx]

    func requireSupported(_ v: KernelVariant) throws {
        guard v.isSupported else {
            throw XCTSkip("kernel variant \(v.rawValue) needs CPU features this machine lacks "
                          + "(it has: \(KernelVariant.featureNames)); run on such a CPU to test it")
        }
        guard Gemm.nativeBlockFits else { throw XCTSkip("this build's vector width has no C block product") }
    }

    /// One block product: rows (tails of the 6- and 14-row tiles), columns (partial panels,
    /// odd panel counts for the 32-column AVX-512 tile), depth (1, odd, deep), C strided,
    /// with and without bias and addend (separate, and aliasing C).
    func checkBlock(_ v: KernelVariant, rows: Int, columns: Int, depth: Int, bias: Bool, addend: Int, seed: UInt64) {
        let w = Int(2 * NativeF32.scalarCount)
        let panels = (columns + w - 1) / w, panelStride = depth * w + 3 * w  // gaps between panels
        let lda = depth + 5, ldc = panels * w + 7
        var random = SeededRandom(seed: seed)
        let a = random.array(rows * lda)
        var b = random.array(panels * panelStride)
        for panel in 0..<panels {  // B's contract: zero past `columns`
            for k in 0..<depth { for j in 0..<w where panel * w + j >= columns { b[panel * panelStride + k * w + j] = 0 } }
        }
        let biasValues = random.array(rows), addendValues = random.array(rows * ldc)
        let initialC = random.array(rows * ldc)
        let edge = UnsafeMutablePointer<Float>.allocate(capacity: Gemm.tileRows * w)
        defer { edge.deallocate() }
        func run(_ variant: KernelVariant) -> [Float] {
            var c = addend == 2 ? addendValues : initialC
            with(variant) {
                a.ptr { ap in b.ptr { bp in biasValues.ptr { biasp in addendValues.ptr { addp in
                    c.withUnsafeMutableBufferPointer { cp in
                        let add: UnsafePointer<Float>? = addend == 0 ? nil : addend == 1 ? addp : UnsafePointer(cp.baseAddress!)
                        Gemm.block(depth: depth, a: ap, rowStride: lda, rows: rows, b: bp, panelStride: panelStride,
                                   columns: columns, c: cp.baseAddress!, rowStride: ldc,
                                   epilogue: Gemm.Epilogue(addend: add, bias: bias ? biasp : nil), edge: edge)
                    }
                } } } }
            }
            return c
        }
        let expected = run(.portable), actual = run(v)
        if let d = firstDifference(actual, expected) {
            XCTFail("\(v.rawValue) block rows \(rows) columns \(columns) depth \(depth) bias \(bias) addend \(addend): \(d)")
        }
    }

    func testBlockProductMatchesPortableTwin() throws {
        for v in nativeVariants {
            guard v.isSupported && Gemm.nativeBlockFits else { continue }
            var seed: UInt64 = 100
            for rows in [1, 5, 6, 7, 13, 14, 15, 28, 31] {
                for columns in [1, 9, 16, 17, 31, 32, 33, 48, 70] {
                    for depth in [1, 3, 64, 385] where rows * columns * depth < 200_000 || depth == 385 && rows == 14 {
                        seed += 1
                        checkBlock(v, rows: rows, columns: columns, depth: depth, bias: seed % 2 == 0,
                                   addend: Int(seed % 3), seed: seed)
                    }
                }
            }
        }
        try requireSupported(.avx2)  // report the skip when nothing ran
    }

    func testAVX512BlockProduct() throws {
        try requireSupported(.avx512)
        for (i, rows) in [1, 13, 14, 15, 29].enumerated() {
            for columns in [5, 16, 20, 32, 47, 64] {
                checkBlock(.avx512, rows: rows, columns: columns, depth: 97, bias: true, addend: i % 3, seed: UInt64(rows * 100 + columns))
            }
        }
    }

    /// Whole kernels through every path that uses `Gemm.block` (linear with f32/f16/q8
    /// weights, implicit-GEMM conv with stride 2, both Winograd kinds, attention with and
    /// without a causal mask) and through the C builds of the activations, GEGLU and the
    /// norms, threaded: each supported variant equals portable bit for bit.
    func testKernelsMatchPortableUnderEachVariant() throws {
        let variants = nativeVariants.filter { $0.isSupported && Gemm.nativeBlockFits }
        if variants.isEmpty { try requireSupported(.avx2) }
        let pool = testPools[1]
        var random = SeededRandom(seed: 7)
        var cases: [(String, () -> [Float])] = []
        for type in [WeightType.f32, .f16, .q8] {
            let (n, k, p) = (37, 70, 101)
            let weights = TestWeights(rows: n, cols: k, type: type, random: &random)
            let x = random.array(k * p), bias = random.array(n), residual = random.array(n * p)
            cases.append(("linear \(type)", {
                outputBuffer(n * p) { y in x.ptr { xp in bias.ptr { bp in residual.ptr { rp in
                    Kernels.linear(weights.matrix, input: xp, columns: p, bias: bp, residual: rp, output: y, pool: pool)
                } } } }
            }))
        }
        let (cin, cout, h, wd) = (12, 20, 13, 11)
        let convWeights = TestWeights(rows: cout, cols: cin * 9, type: .f16, random: &random)
        let image = random.array(2 * cin * h * wd), convBias = random.array(cout)
        for (name, algorithm, stride) in [("conv direct s1", Kernels.ConvAlgorithm.direct, 1), ("conv direct s2", .direct, 2),
                                          ("conv winograd F(2,3)", .winograd, 1), ("conv winograd F(4,3)", .winograd43, 1)] {
            let ho = (h - 1) / stride + 1, wo = (wd - 1) / stride + 1
            cases.append((name, {
                let saved = Kernels.convAlgorithm
                Kernels.convAlgorithm = algorithm
                defer { Kernels.convAlgorithm = saved }
                return outputBuffer(2 * cout * ho * wo) { y in image.ptr { xp in convBias.ptr { bp in
                    Kernels.conv2d(convWeights.matrix, kernelSize: 3, stride: stride, padding: 1, input: xp, channels: cin,
                                   batch: 2, height: h, width: wd, bias: bp, residual: nil, output: y, pool: pool)
                } } }
            }))
        }
        for (heads, d, tq, tk, causal) in [(2, 40, 70, 77, false), (1, 9, 33, 100, false), (2, 64, 77, 77, true)] {
            let q = random.array(heads * d * tq), kk = random.array(heads * d * tk), vv = random.array(heads * d * tk)
            cases.append(("attention \(heads)x\(d) Tq=\(tq) Tk=\(tk) causal=\(causal)", {
                outputBuffer(heads * d * tq) { y in q.ptr { qp in kk.ptr { kp in vv.ptr { vp in
                    Kernels.attention(query: qp, key: kp, value: vp, heads: heads, headDim: d, batch: 1, queryTokens: tq,
                                      keyTokens: tk, causal: causal, output: y, pool: pool)
                } } } }
            }))
        }
        // The non-product kernels (C builds of VectorMath and the norms under every variant
        // but portable): values past the exponential's clamps (±90, ±200), at the erf
        // switch-over (±0.5), signed zeros and tails of every length below a vector.
        #if arch(x86_64) && !SDKERNELS_AVX512
        XCTAssertTrue(variants.allSatisfy(\.usesCVectorMath), "these cases must compare the C builds with the twins")
        #endif
        let special: [Float] = [0, -0, 0.5, -0.5, 0.499_999_97, 90, -90, 200, -200, 1e-8, -3.25, 88.3, -87.33]
        for count in [1, 7, 8, 9, 37, 70_001] {
            let values = special + random.array(count, -12, 12)
            for f in [Kernels.Activation.silu, .gelu, .quickGelu] {
                cases.append(("activation \(f) count \(values.count)", {
                    var y = values
                    y.withUnsafeMutableBufferPointer { Kernels.activate(f, $0.baseAddress!, count: $0.count, pool: pool) }
                    return y
                }))
            }
        }
        for (features, columns) in [(3, 5), (40, 1_001)] {
            let x = special + random.array(2 * features * columns - special.count, -6, 6)
            cases.append(("geglu \(features)x\(columns)", {
                outputBuffer(features * columns) { y in x.ptr { Kernels.geglu($0, features: features, columns: columns, output: y, pool: pool) } }
            }))
        }
        for (channels, pixels, groups, offset) in [(8, 1_111, 4, Float(0)), (6, 70, 3, 500), (32, 9, 32, 0), (64, 700, 64, 0)] {
            let x = random.array(2 * channels * pixels).map { $0 * 3 + offset }
            let gamma = random.array(channels, 0.5, 2), beta = random.array(channels)
            for silu in [false, true] {
                cases.append(("groupNorm C=\(channels) P=\(pixels) G=\(groups) silu=\(silu)", {
                    outputBuffer(x.count) { y in x.ptr { xp in gamma.ptr { gp in beta.ptr { bp in
                        Kernels.groupNorm(xp, channels: channels, batch: 2, pixels: pixels, groups: groups, eps: 1e-5,
                                          gamma: gp, beta: bp, silu: silu, output: y, pool: pool)
                    } } } }
                }))
            }
        }
        for (channels, columns) in [(1, 16), (40, 77), (320, 35)] {
            let x = random.array(channels * columns).map { $0 * 2 + 7 }
            let gamma = random.array(channels, 0.5, 2), beta = random.array(channels)
            cases.append(("layerNorm C=\(channels) columns=\(columns)", {
                outputBuffer(x.count) { y in x.ptr { xp in gamma.ptr { gp in beta.ptr { bp in
                    Kernels.layerNorm(xp, channels: channels, columns: columns, eps: 1e-5, gamma: gp, beta: bp,
                                      output: y, pool: pool)
                } } } }
            }))
        }
        for (name, compute) in cases {
            let expected = with(.portable, compute)
            XCTAssertTrue(expected.allSatisfy(\.isFinite), name)
            for v in variants {
                if let d = firstDifference(with(v, compute), expected) { XCTFail("\(name) under \(v.rawValue): \(d)") }
            }
        }
    }

    /// Winograd F(2, 3)'s input transform (into f32 and into bf16 panels) and output
    /// transform (with and without bias and residual): 16 tiles per vector in C under the
    /// AVX-512 variants, bitwise equal to the Swift twins. The shapes reach whole tile rows
    /// of 16 and more (contiguous loads), tile rows shorter than 16 and groups across rows
    /// and images (gathers), odd sizes (edge tiles, skipped outputs), an odd channel count
    /// (a last bf16 channel paired with 0) and blocks starting mid-row.
    func testWinogradTransformsMatchTwins() throws {
        try requireSupported(.avx512)
        var random = SeededRandom(seed: 11)
        let shapes = [(channels: 13, batch: 2, height: 9, width: 67, firstTile: 0, count: 200),
                      (channels: 4, batch: 1, height: 64, width: 64, firstTile: 16, count: 256),
                      (channels: 3, batch: 2, height: 7, width: 15, firstTile: 5, count: 50),
                      (channels: 8, batch: 1, height: 33, width: 33, firstTile: 40, count: 150),
                      (channels: 2, batch: 1, height: 1, width: 1, firstTile: 0, count: 1)]
        for s in shapes {
            let g = Conv.Geometry(channels: s.channels, batch: s.batch, height: s.height, width: s.width,
                                  kernel: 3, stride: 1, padding: 1)
            let tiling = Winograd.Tiles(g: g)
            let t0 = s.firstTile, tb = min(s.count, tiling.count - s.firstTile)
            let x = random.array(s.channels * g.channelStride, -4, 4)
            let name = "\(s.channels) ch, \(s.batch)×\(s.height)×\(s.width), tiles \(t0)..<\(t0 + tb)"
            func input<Sink: Winograd.InputSink>(_ v: KernelVariant, words: Int, sink: (UnsafeMutableRawPointer) -> Sink) -> [Float] {
                var out = [Float](repeating: .nan, count: words)
                with(v) {
                    out.withUnsafeMutableBytes { raw in
                        var target = sink(raw.baseAddress!)
                        x.ptr { Winograd.transformInput(tiling, $0, firstTile: t0, count: tb,
                                                        panels: (tb + Sink.panelWidth - 1) / Sink.panelWidth, into: &target) }
                    }
                }
                return out
            }
            let fw = Winograd.F32Panels.panelWidth, fPanels = (tb + fw - 1) / fw
            let fStride = fPanels * s.channels * fw
            let bw = Winograd.BF16Panels.panelWidth, bPanels = (tb + bw - 1) / bw
            let bStride = (s.channels + 1) / 2 * bPanels * bw
            for v in [KernelVariant.avx512, .avx512BF16, .amx] where v.isSupported {
                let f32 = { (variant: KernelVariant) in
                    input(variant, words: 16 * fStride) {
                        Winograd.F32Panels(vp: $0.assumingMemoryBound(to: Float.self), channels: s.channels, xiStride: fStride)
                    }
                }
                if let d = firstDifference(f32(v), f32(.portable)) { XCTFail("input f32, \(name), \(v.rawValue): \(d)") }
                let bf16 = { (variant: KernelVariant) in
                    input(variant, words: 16 * bStride) {
                        Winograd.BF16Panels(vb: $0.assumingMemoryBound(to: UInt32.self), channels: s.channels, xiStride: bStride)
                    }
                }
                if let d = firstDifference(bf16(v), bf16(.portable)) { XCTFail("input bf16, \(name), \(v.rawValue): \(d)") }
            }
            // Output rows 2 ..< 7 of 7 output channels, from M with a row stride past the tiles.
            let (n0, rows, outChannels) = (2, 5, 7)
            let ldm = (tb + 31) / 32 * 32 + 16
            let m = random.array(16 * rows * ldm, -4, 4), bias = random.array(outChannels)
            let residual = random.array(outChannels * g.channelStride), initial = random.array(outChannels * g.channelStride)
            for (withBias, withResidual) in [(true, true), (false, false), (false, true)] {
                func output(_ v: KernelVariant) -> [Float] {
                    var y = initial
                    with(v) {
                        m.ptr { mp in bias.ptr { bp in residual.ptr { rp in
                            y.withUnsafeMutableBufferPointer {
                                Winograd.transformOutput(tiling, UnsafeMutablePointer(mutating: mp), rowStride: ldm, firstRow: n0,
                                                         rows: rows, firstTile: t0, count: tb, bias: withBias ? bp : nil,
                                                         residual: withResidual ? rp : nil, output: $0.baseAddress!)
                            }
                        } } }
                    }
                    return y
                }
                let expected = output(.portable)
                for v in [KernelVariant.avx512, .avx512BF16, .amx] where v.isSupported {
                    if let d = firstDifference(output(v), expected) {
                        XCTFail("output, bias \(withBias), residual \(withResidual), \(name), \(v.rawValue): \(d)")
                    }
                }
            }
        }
    }

    /// Winograd F(2, 3)'s weight transforms into bf16 A rows and into the f32 U (16 channels
    /// per zmm in C under the AVX-512 variants) equal the Swift twin's words: f32, f16 and q8 weights, channel
    /// counts below, at and past 16 (odd: a last channel paired with 0), row ranges not a
    /// multiple of 12 (zero rows up to the tile) starting past row 0, a ξ stride with a gap
    /// (which a computed last row must not write into).
    func testWinogradWeightTransformMatchesTwin() throws {
        try requireSupported(.avx512)
        var random = SeededRandom(seed: 12)
        for type in [WeightType.f32, .f16, .q8] {
            for (rows, cin, range) in [(20, 13, 3..<20), (30, 16, 0..<30), (14, 33, 1..<14), (5, 1, 0..<5), (26, 64, 2..<26),
                                      (12, 13, 0..<12)] {
                let weights = TestWeights(rows: rows, cols: 9 * cin, type: type, random: &random)
                let pairs = (cin + 1) / 2, padded = (range.count + 11) / 12 * 12
                let xiStride = padded * pairs + 7
                func run(_ v: KernelVariant) -> [UInt32] {
                    var out = [UInt32](repeating: 0xDEAD_BEEF, count: 16 * xiStride)
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: Winograd.weightTransformScratch(channels: cin))
                    defer { scratch.deallocate() }
                    with(v) {
                        out.withUnsafeMutableBufferPointer {
                            Winograd.transformWeightsBF16(weights.matrix, rows: range, into: $0.baseAddress!, xiStride: xiStride,
                                                          scratch: scratch)
                        }
                    }
                    return out
                }
                // The f32 U of the exact mode: u[ξ][r][ic], ξ stride rows · Cin, then a guard
                // that must stay untouched.
                func runF32(_ v: KernelVariant) -> [UInt32] {
                    let count = 16 * range.count * cin
                    var out = [Float](repeating: .nan, count: count + 7)
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: Winograd.weightTransformScratch(channels: cin))
                    defer { scratch.deallocate() }
                    with(v) {
                        out.withUnsafeMutableBufferPointer {
                            Winograd.transformWeights(weights.matrix, firstRow: range.lowerBound, count: range.count,
                                                      into: $0.baseAddress!, rowBuffer: scratch)
                        }
                    }
                    XCTAssertFalse(out[..<count].contains { $0.isNaN }, "every element of U written")
                    XCTAssertTrue(out[count...].allSatisfy { $0.isNaN }, "nothing written past U")
                    return out.map(\.bitPattern)
                }
                let expected = run(.portable), expectedF32 = runF32(.portable)
                for v in [KernelVariant.avx512, .avx512BF16, .amx] where v.isSupported {
                    XCTAssertEqual(run(v), expected, "\(type), \(cin) channels, rows \(range), \(v.rawValue)")
                    XCTAssertEqual(runF32(v), expectedF32, "f32 U: \(type), \(cin) channels, rows \(range), \(v.rawValue)")
                }
            }
        }
    }

    // MARK: the 16-wide C vector math (f32_vector_math_avx512.c) against the Swift twins

    /// Skips unless this CPU runs AVX-512 and this build uses the C vector math (not in
    /// builds with 16-wide Swift vectors, whose twins sum in another order).
    func requireAVX512VectorMath() throws {
        try requireSupported(.avx512)
        guard KernelVariant.avx512.usesAVX512VectorMath, KernelVariant.avx512.vectorMath == .avx512 else {
            throw XCTSkip("this build runs the Swift twins under every variant (16-wide Swift vectors)")
        }
    }

    /// Lengths around one and two zmm (and none), and a long odd one.
    static let wideLengths = [0, 1, 15, 16, 17, 31, 33, 1_003]

    /// Values past the exponential's clamps (±90, ±200, huge, ±∞) and next to them (one ulp
    /// either side of 88.3 and −87.33), at erf's switch-over (±0.5), signed zeros, tiny and
    /// subnormal magnitudes, and a quiet NaN (whose payload every twin passes through).
    static let wideSpecial: [Float] = [0, -0, 0.5, -0.5, 0.499_999_97, -0.500_000_06, 90, -90, 200, -200, 1e-8, -1e-8,
                                       -3.25, 88.3, -87.33, Float(88.3).nextUp, Float(88.3).nextDown,
                                       Float(-87.33).nextUp, Float(-87.33).nextDown, 1e30, -1e30, 3e38, -3e38, 1e-40,
                                       .infinity, -.infinity, .nan]

    /// Inputs of each length: the special values first (in the first vector), and last (in
    /// the masked tail), the rest random in [lo, hi); 16 more values follow that are not
    /// part of the input (so that no array is empty and reads past the end see non-zeros).
    func wideInputs(_ n: Int, _ random: inout SeededRandom, _ lo: Float, _ hi: Float,
                    special: [Float] = wideSpecial) -> [[Float]] {
        let r = random.array(n, lo, hi), pad = [Float](repeating: 7.25, count: 16)
        return [Array((special + r).prefix(n)) + pad, Array((r + special).suffix(n)) + pad]
    }

    /// `outputBuffer` for a twin that writes `count` floats (maybe none).
    func twinOutput(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) -> [Float] {
        Array(outputBuffer(count + 16, body).prefix(count))
    }

    func bitwiseDifference(_ a: [Float], _ b: [Float]) -> String? {
        if a.count != b.count { return "\(a.count) vs \(b.count) elements" }
        for i in 0..<a.count where a[i].bitPattern != b[i].bitPattern {
            return "element \(i): \(a[i]) (\(String(a[i].bitPattern, radix: 16))) vs twin \(b[i]) (\(String(b[i].bitPattern, radix: 16)))"
        }
        return nil
    }

    /// Runs a C kernel writing `count` floats into a buffer with 16 guard values after them;
    /// fails if a guard changed, returns the `count` floats.
    func guarded(_ count: Int, _ name: String, _ body: (UnsafeMutablePointer<Float>) -> Void) -> [Float] {
        let guardValue: Float = 12_345.5
        var out = [Float](repeating: .nan, count: count) + [Float](repeating: guardValue, count: 16)
        out.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
        if out[count...].contains(where: { $0 != guardValue }) { XCTFail("\(name): wrote past element \(count)") }
        return Array(out[..<count])
    }

    /// SiLU, GELU, QuickGELU and GEGLU, and half → float.
    func testAVX512ElementwiseMatchesTwins() throws {
        try requireAVX512VectorMath()
        var random = SeededRandom(seed: 21)
        let pool = testPools[0]
        for n in Self.wideLengths {
            for (arrangement, x) in wideInputs(n, &random, -12, 12).enumerated() {
                for (f, kind) in [(Kernels.Activation.silu, PD_ACTIVATION_SILU), (.gelu, PD_ACTIVATION_GELU),
                                  (.quickGelu, PD_ACTIVATION_QUICK_GELU)] {
                    var twin = x
                    with(.portable) {
                        twin.withUnsafeMutableBufferPointer { Elementwise.activate(f, $0.baseAddress!, count: n, pool: pool) }
                    }
                    let expected = Array(twin.prefix(n))
                    let name = "\(f) n=\(n) arrangement \(arrangement)"
                    let actual = guarded(n, name) { y in x.ptr { pd_activate_avx512(Int32(kind), $0, y, n) } }
                    if let d = bitwiseDifference(actual, expected) { XCTFail("\(name): \(d)") }
                }
                let gate = wideInputs(n, &random, -6, 6)[1 - arrangement]
                let xg = Array(x.prefix(n)) + gate
                let expected = with(.portable) {
                    twinOutput(n) { y in xg.ptr { Elementwise.geglu($0, features: n, columns: 1, output: y, pool: pool) } }
                }
                let name = "geglu n=\(n) arrangement \(arrangement)"
                let actual = guarded(n, name) { y in xg.ptr { pd_geglu_avx512($0, $0 + n, y, n) } }
                if let d = bitwiseDifference(actual, expected) { XCTFail("\(name): \(d)") }
            }
            // Half → float: every class of half (±0, subnormals, normals, ±∞, quiet NaNs with
            // payloads). Signalling NaNs are left out: a Swift build without F16C converts
            // with a library call that need not quiet them as vcvtph2ps does.
            let specialHalves: [UInt16] = [0, 0x8000, 0x0001, 0x83FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                                           0x7E00, 0xFE01, 0x7FFF]
            let randomHalves = (0..<n).map { _ in UInt16(truncatingIfNeeded: random.next()) }
                .map { $0 & 0x7C00 == 0x7C00 && $0 & 0x03FF != 0 ? $0 | 0x0200 : $0 }  // NaNs quiet
            let pad = [UInt16](repeating: 0x3C00, count: 16)
            for (arrangement, h) in [Array((specialHalves + randomHalves).prefix(n)) + pad,
                                     Array((randomHalves + specialHalves).suffix(n)) + pad].enumerated() {
                let expected = with(.portable) {
                    twinOutput(n) { y in h.withUnsafeBufferPointer {
                        Quantization.halfToFloat(UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: Float16.self),
                                                 count: n, output: y)
                    } }
                }
                let name = "half to float n=\(n) arrangement \(arrangement)"
                let actual = guarded(n, name) { y in h.withUnsafeBufferPointer { pd_half_to_float_avx512($0.baseAddress!, y, n) } }
                if let d = bitwiseDifference(actual, expected) { XCTFail("\(name): \(d)") }
            }
        }
    }

    /// The norms' passes: the chunked sums (lengths across chunk boundaries and every tail
    /// length of the 16-element step, data with a large common offset), normalize with and
    /// without SiLU, and LayerNorm's 16-column blocks.
    func testAVX512NormsMatchTwins() throws {
        try requireAVX512VectorMath()
        var random = SeededRandom(seed: 22)
        let chunk = Normalization.chunk
        let finite = Self.wideSpecial.filter { $0.isFinite && $0.magnitude < 1e6 }
        let sumLengths = Self.wideLengths + [chunk - 1, chunk, chunk + 1, chunk + 15, chunk + 16, chunk + 17,
                                             2 * chunk, 2 * chunk + 33, 3 * chunk - 5, 4 * chunk, 4 * chunk + 1,
                                             5 * chunk + 17, 8 * chunk, 9 * chunk - 16, 9 * chunk + 16]
        for n in sumLengths {
            for (arrangement, x0) in wideInputs(n, &random, -6, 6, special: finite).enumerated() {
                for offset: Float in [0, 300] {
                    let x = x0.map { $0 + offset }
                    let center = x.first ?? 0.25, mean = offset + 0.125
                    let name = "n=\(n) arrangement \(arrangement) offset \(offset)"
                    x.ptr { xp in
                        let s = Normalization.sum(xp, count: n, shift: center, build: .swift)
                        let s16 = pd_sum_shifted_avx512(xp, n, center, chunk)
                        XCTAssertEqual(s16.bitPattern, s.bitPattern, "sum \(name): \(s16) vs twin \(s)")
                        let q = Normalization.sumOfSquares(xp, count: n, around: mean, build: .swift)
                        let q16 = pd_sum_of_squares_avx512(xp, n, mean, chunk)
                        XCTAssertEqual(q16.bitPattern, q.bitPattern, "sum of squares \(name): \(q16) vs twin \(q)")
                    }
                }
            }
        }
        for n in Self.wideLengths {
            for (arrangement, x) in wideInputs(n, &random, -6, 6).enumerated() {
                for silu in [false, true] {
                    let (mean, scale, beta): (Float, Float, Float) = (0.3, 1.7, -0.2)
                    let expected = twinOutput(n) { y in x.ptr {
                        Normalization.normalize($0, mean: mean, scale: scale, beta: beta, silu: silu, count: n, output: y,
                                                build: .swift)
                    } }
                    let name = "normalize n=\(n) silu \(silu) arrangement \(arrangement)"
                    let actual = guarded(n, name) { y in x.ptr { pd_normalize_avx512($0, mean, scale, beta, silu ? 1 : 0, n, y) } }
                    if let d = bitwiseDifference(actual, expected) { XCTFail("\(name): \(d)") }
                }
            }
        }
        // LayerNorm: the twin's 2 × 8-column blocks against C calls of 1–4 blocks of 16 (the
        // scalar column tail is Swift in both).
        for (channels, columns) in [(1, 16), (2, 48), (7, 33), (40, 77), (320, 35), (3, 130)] {
            let x = random.array(channels * columns).map { $0 * 2 + 7 }
            let gamma = random.array(channels, 0.5, 2), beta = random.array(channels)
            let expected = with(.portable) {
                outputBuffer(x.count) { y in x.ptr { xp in gamma.ptr { gp in beta.ptr { bp in
                    Normalization.layerNorm(xp, channels: channels, columns: columns, eps: 1e-5, gamma: gp, beta: bp,
                                            output: y, pool: testPools[0])
                } } } }
            }
            for group in 1...4 {
                var actual = expected
                actual.withUnsafeMutableBufferPointer { y in x.ptr { xp in gamma.ptr { gp in beta.ptr { bp in
                    let full = columns / 16
                    for block in stride(from: 0, to: full, by: group) {
                        let n = min(group, full - block), p = block * 16
                        for c in 0..<channels { y[c * columns + p ..< c * columns + p + 16 * n].update(repeating: .nan) }
                        pd_layer_norm_blocks16_avx512(xp + p, columns, Int32(channels), Int32(n), 1e-5, gp, bp, y.baseAddress! + p)
                    }
                } } } }
                if let d = bitwiseDifference(actual, expected) {
                    XCTFail("layerNorm C=\(channels) columns=\(columns) blocks per call \(group): \(d)")
                }
            }
        }
    }

    /// The f32 attention's softmax block over 16 queries: key counts around one and two
    /// zmm and a whole block, causal masking on (a diagonal inside the block) and off, a first
    /// block (running max at `masked`) and a later one (running maxima above some scores,
    /// below others), scores far below the maximum (exp2's clamp at −126) and masked ones.
    func testAVX512SoftmaxBlockMatchesTwin() throws {
        try requireAVX512VectorMath()
        var random = SeededRandom(seed: 23)
        let lanes = NativeF32.scalarCount, w = 16
        XCTAssertEqual(2 * lanes, w)
        for keys in [1, 2, 15, 16, 17, 31, 33, Attention.blockKeys] {
            for (causal, firstQuery, firstKey) in [(false, 0, 0), (true, 40, 30), (true, 0, 0), (true, 100, 96)] {
                for laterBlock in [false, true] {
                    var scores = random.array(keys * w, -30, 8)
                    for (i, v) in [-200, -1e30, 130, -126.5, -125.5, 0, -0].enumerated() where i < scores.count {
                        scores[(i * 37) % scores.count] = Float(v)
                    }
                    if keys >= 2 { scores[w + 3] = .nan }  // the max rule then takes the next score
                    let runningMax = laterBlock ? random.array(w, -10, 10) : [Float](repeating: Attention.masked, count: w)
                    let queryIndex = (0..<w).map { Float(firstQuery + $0) }
                    let name = "keys \(keys) causal \(causal) queries \(firstQuery)… keys \(firstKey)… later \(laterBlock)"
                    // Twin.
                    var twinScores = scores
                    var max0 = NativeF32(), max1 = NativeF32()
                    runningMax.ptr { max0 = NativeF32.load($0); max1 = NativeF32.load($0 + lanes) }
                    var sum0 = NativeF32(), sum1 = NativeF32()
                    var q0 = NativeF32(), q1 = NativeF32()
                    queryIndex.ptr { q0 = NativeF32.load($0); q1 = NativeF32.load($0 + lanes) }
                    twinScores.withUnsafeMutableBufferPointer {
                        Attention.softmaxBlock($0.baseAddress!, keys: keys, queryIndex: q0, q1, firstKey: firstKey,
                                               causal: causal, max0: &max0, max1: &max1, sum0: &sum0, sum1: &sum1)
                    }
                    let twinMax = (0..<w).map { $0 < lanes ? max0[$0] : max1[$0 - lanes] }
                    let twinSum = (0..<w).map { $0 < lanes ? sum0[$0] : sum1[$0 - lanes] }
                    // C.
                    var cScores = scores, cMax = runningMax, cSum = [Float](repeating: .nan, count: w)
                    cScores.withUnsafeMutableBufferPointer { s in cMax.withUnsafeMutableBufferPointer { m in
                        cSum.withUnsafeMutableBufferPointer { b in queryIndex.ptr { q in
                            pd_softmax_block16_avx512(s.baseAddress!, Int32(keys), q, Int32(firstKey), causal ? 1 : 0,
                                                      Attention.masked, m.baseAddress!, b.baseAddress!)
                        } }
                    } }
                    if let d = bitwiseDifference(cScores, twinScores) { XCTFail("\(name), probabilities: \(d)") }
                    if let d = bitwiseDifference(cMax, twinMax) { XCTFail("\(name), running max: \(d)") }
                    if let d = bitwiseDifference(cSum, twinSum) { XCTFail("\(name), block sums: \(d)") }
                }
            }
        }
    }

    /// The bf16 attention's softmax and P packing over a 32-query panel: odd and even key
    /// counts (an odd last key paired with 0), the first block (sums stored) and later ones
    /// (running sums and O rescaled), running maxima above and below the block's scores,
    /// scores far below the maximum (exp2's clamp at −126) and equal to it. P's words past
    /// the block's ⌈keys/2⌉ rows must stay untouched.
    func testAVX512SoftmaxPackBF16MatchesTwin() throws {
        try requireAVX512VectorMath()
        var random = SeededRandom(seed: 24)
        let w = Int(PD_BF16_PANEL_COLUMNS)
        for keys in [1, 2, 3, 15, 16, 17, 31, 33, 95, Attention.blockKeys] {
            for firstBlock in [true, false] {
                for d in [1, 40] {
                    var scores = random.array(keys * w, -20, 20)
                    for (i, v) in [-200, -1e30, 60, -126.5, -125.5, 0, -0, -1e-40].enumerated() where i < scores.count {
                        scores[(i * 37) % scores.count] = Float(v)
                    }
                    if keys >= 3 {
                        // A NaN score (the twin's max rule, a > b ? a : b, then takes the next
                        // score): column 5's maximum is 0 although its first score is 385.7, so
                        // that probability is 2^385.7 wrapped by twoToThe into a subnormal, which
                        // the pair rounding must keep (vcvtneps2bf16 would flush it to zero).
                        scores[5] = 385.7
                        scores[w + 5] = .nan
                        for j in 2..<keys { scores[j * w + 5] = 0 }
                    }
                    let runningMax = firstBlock ? [Float](repeating: Attention.masked, count: w) : random.array(w, -25, 25)
                    let runningSum = firstBlock ? [Float](repeating: 0, count: w) : random.array(w, 1, 50)
                    let out = random.array(d * w, -3, 3)
                    let pWords = (keys + 1) / 2 * w + 2 * w
                    func run(_ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                      UnsafeMutablePointer<UInt32>, UnsafeMutablePointer<Float>) -> Void)
                        -> (max: [Float], sum: [Float], p: [UInt32], out: [Float]) {
                        var m = runningMax, s = runningSum, o = out
                        var p = [UInt32](repeating: 0xDEAD_BEEF, count: pWords)
                        scores.ptr { sp in m.withUnsafeMutableBufferPointer { mp in s.withUnsafeMutableBufferPointer { lp in
                            p.withUnsafeMutableBufferPointer { pp in o.withUnsafeMutableBufferPointer { op in
                                body(sp, mp.baseAddress!, lp.baseAddress!, pp.baseAddress!, op.baseAddress!)
                            } }
                        } } }
                        return (m, s, p, o)
                    }
                    let twin = run { sp, mp, lp, pp, op in
                        Attention.softmaxPackBF16(sp, keys: keys, firstBlock: firstBlock, runningMax: mp, runningSum: lp,
                                                  p: pp, out: op, headDim: d)
                    }
                    let c = run { sp, mp, lp, pp, op in
                        pd_softmax_pack_bf16_avx512(sp, Int32(keys), firstBlock ? 1 : 0, mp, lp, pp, op, Int32(d))
                    }
                    let name = "keys \(keys) first block \(firstBlock) d \(d)"
                    if let e = bitwiseDifference(c.max, twin.max) { XCTFail("\(name), running max: \(e)") }
                    if let e = bitwiseDifference(c.sum, twin.sum) { XCTFail("\(name), running sum: \(e)") }
                    if let e = bitwiseDifference(c.out, twin.out) { XCTFail("\(name), O: \(e)") }
                    if let i = (0..<pWords).first(where: { c.p[$0] != twin.p[$0] }) {
                        XCTFail("\(name), P word \(i) (row \(i / w), column \(i % w)): "
                                + "\(String(c.p[i], radix: 16)) vs twin \(String(twin.p[i], radix: 16))")
                    }
                }
            }
        }
    }

    /// The bf16 kernel follows the variant: vdpbf16ps under avx512-bf16, tiles under amx.
    func testVariantSelectsBF16Implementation() {
        with(.portable) { XCTAssertEqual(BF16Gemm.implementation, .portable) }
        with(.avx512) { XCTAssertEqual(BF16Gemm.implementation, .portable) }
        if KernelVariant.avx512BF16.isSupported {
            with(.avx512BF16) { XCTAssertEqual(BF16Gemm.implementation, .native) }
        }
        if KernelVariant.amx.isSupported {
            with(.amx) { XCTAssertEqual(BF16Gemm.implementation, .amx) }
            XCTAssertEqual(KernelVariant.best, .amx)
        }
    }

    func testParse() throws {
        XCTAssertEqual(try KernelVariant.parse("auto"), KernelVariant.best)
        XCTAssertEqual(try KernelVariant.parse("portable"), .portable)
        XCTAssertTrue(KernelVariant.best.isSupported)
        XCTAssertThrowsError(try KernelVariant.parse("sse2")) { error in
            XCTAssertTrue("\(error)".contains("unknown kernel variant 'sse2'"), "\(error)")
            XCTAssertTrue("\(error)".contains("auto, portable, avx2, avx512, avx512-bf16"), "\(error)")
        }
        XCTAssertThrowsError(try KernelVariant.parse("AVX2"), "names are lower case")
        if let missing = KernelVariant.allCases.first(where: { !$0.isSupported }) {
            XCTAssertThrowsError(try KernelVariant.parse(missing.rawValue)) { error in
                XCTAssertTrue("\(error)".contains("needs CPU features this machine lacks"), "\(error)")
            }
        }
        #if arch(x86_64)
        // Every x86_64 this project's scripts build for (-target-cpu haswell) has AVX2 + FMA.
        XCTAssertTrue(KernelVariant.avx2.isSupported, "cpuid/xgetbv: \(KernelVariant.featureNames)")
        XCTAssertNotEqual(KernelVariant.best, .portable)
        #endif
    }

    /// cpuid/xgetbv decoding agrees with the kernel's own view of the CPU (/proc/cpuinfo
    /// lists a feature only when the OS enabled its register state).
    func testCPUFeaturesAgreeWithProcCPUInfo() throws {
        #if arch(x86_64) && os(Linux)
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else {
            throw XCTSkip("no /proc/cpuinfo flags line")
        }
        let flags = Set(line.split(separator: " ").map(String.init))
        let names = KernelVariant.featureNames
        XCTAssertEqual(KernelVariant.avx2.isSupported, flags.isSuperset(of: ["avx2", "fma", "f16c"]), names)
        XCTAssertEqual(KernelVariant.avx512.isSupported, flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl"]), names)
        XCTAssertEqual(KernelVariant.avx512BF16.isSupported,
                       flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512_bf16"]), names)
        XCTAssertEqual(names.contains("amx-bf16"), flags.isSuperset(of: ["amx_tile", "amx_bf16"]), names)
        // amx also needs the tile state granted (arch_prctl), which cpuinfo does not show.
        if KernelVariant.amx.isSupported {
            XCTAssertTrue(flags.isSuperset(of: ["amx_tile", "amx_bf16", "avx512_bf16"]), names)
        }
        #else
        throw XCTSkip("x86_64 Linux only")
        #endif
    }

    /// CI forces a variant for whole test runs with POCKETSD_KERNELS; a typo there must fail
    /// the run rather than silently test `auto`.
    func testEnvironmentVariantIsActive() throws {
        guard let raw = ProcessInfo.processInfo.environment[KernelVariant.environmentVariable], !raw.isEmpty else {
            throw XCTSkip("\(KernelVariant.environmentVariable) is not set")
        }
        XCTAssertNil(Kernels.variantEnvironmentError)
        let expected = raw == "auto" ? KernelVariant.best.rawValue : raw
        XCTAssertEqual(Kernels.variant.rawValue, expected)
    }
}
