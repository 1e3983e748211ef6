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

    /// Runs `body` with `Kernels.variant` set to `v`, restoring the previous variant after.
    func with<R>(_ v: KernelVariant, _ body: () -> R) -> R {
        let saved = Kernels.variant
        Kernels.variant = v
        defer { Kernels.variant = saved }
        return body()
    }

    func firstDifference(_ a: [Float], _ b: [Float]) -> String? {
        for i in 0..<a.count where a[i].bitPattern != b[i].bitPattern {
            return "element \(i): \(a[i]) vs portable \(b[i])"
        }
        return nil
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
