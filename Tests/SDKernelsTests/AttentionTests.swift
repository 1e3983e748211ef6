import XCTest
@testable import SDKernels

final class AttentionTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var heads, headDim, batch, tq, tk: Int
        var causal: Bool
        var description: String { "heads=\(heads) d=\(headDim) B=\(batch) Tq=\(tq) Tk=\(tk) causal=\(causal)" }
    }

    /// Tq ≠ Tk, single tokens, tails of the 16-query panel, of the 64-query tile and of the
    /// 96-key block, 77-token keys (CLIP), head dims 4, 8, 40, 64 and a 6-row tail (d = 9).
    let cases: [Case] = [
        Case(heads: 1, headDim: 4, batch: 1, tq: 1, tk: 1, causal: false),
        Case(heads: 2, headDim: 8, batch: 1, tq: 17, tk: 5, causal: false),
        Case(heads: 1, headDim: 9, batch: 2, tq: 3, tk: 33, causal: false),
        Case(heads: 3, headDim: 40, batch: 1, tq: 70, tk: 77, causal: false),
        Case(heads: 2, headDim: 40, batch: 2, tq: 33, tk: 100, causal: false),
        Case(heads: 1, headDim: 64, batch: 1, tq: 130, tk: 201, causal: false),
        Case(heads: 2, headDim: 64, batch: 2, tq: 77, tk: 77, causal: true),
        Case(heads: 1, headDim: 8, batch: 1, tq: 1, tk: 1, causal: true),
        Case(heads: 2, headDim: 4, batch: 1, tq: 100, tk: 100, causal: true),
        Case(heads: 1, headDim: 40, batch: 1, tq: 20, tk: 7, causal: true),
        Case(heads: 1, headDim: 77, batch: 1, tq: 17, tk: 9, causal: false),
    ]

    @discardableResult
    /// `keyOffset`: each key channel shifted by a multiple of it (−2…2), the per-channel bias
    /// real models' keys carry.
    /// `floor`: an error the result must exceed (a rounding path that must have run).
    func check(_ c: Case, pool: ThreadPool, seed: UInt64, scale: Float = 1, keyOffset: Float = 0,
               bound: Double = MaxNMSE.attention, floor: Double = 0) -> [Float] {
        var random = SeededRandom(seed: seed)
        let rows = c.heads * c.headDim
        let q = random.array(rows * c.batch * c.tq, -scale, scale)
        var k = random.array(rows * c.batch * c.tk, -scale, scale)
        for i in k.indices { k[i] += keyOffset * Float(i / (c.batch * c.tk) % 5 - 2) }
        let v = random.array(rows * c.batch * c.tk)
        let expected = outputBuffer(rows * c.batch * c.tq) { y in
            q.ptr { qp in k.ptr { kp in v.ptr { vp in
                ReferenceKernels.attention(query: qp, key: kp, value: vp, heads: c.heads, headDim: c.headDim,
                                           batch: c.batch, queryTokens: c.tq, keyTokens: c.tk, causal: c.causal,
                                           output: y)
            } } }
        }
        let actual = outputBuffer(rows * c.batch * c.tq) { y in
            q.ptr { qp in k.ptr { kp in v.ptr { vp in
                Kernels.attention(query: qp, key: kp, value: vp, heads: c.heads, headDim: c.headDim, batch: c.batch,
                                  queryTokens: c.tq, keyTokens: c.tk, causal: c.causal, output: y, pool: pool)
            } } }
        }
        let error = nmse(actual, expected)
        XCTAssertLessThan(error, bound, "attention \(c) scale=\(scale) threads=\(pool.threads): nmse \(error)")
        if floor > 0 { XCTAssertGreaterThan(error, floor, "attention \(c): as exact as f32, the rounding did not run") }
        if ProcessInfo.processInfo.environment["PRINT_NMSE"] != nil { print("nmse \(c) scale \(scale): \(error)") }
        return actual
    }

    func testAwkwardShapes() {
        for (i, c) in cases.enumerated() {
            check(c, pool: testPools[i % 3], seed: 2000 + UInt64(i))
        }
    }

    /// bf16 products (non-causal cases; causal ones keep f32), with the native kernel and
    /// its portable twin: Q, K, V and the probabilities rounded to bfloat16. Measured worst
    /// nmse 5.8e-5 (logits scaled by 6: rounding errors grow with the logits), 2.5e-5 at
    /// d = 40; a wrong term or rescale is ≥ 1e-3.
    static let maxNMSEBF16 = 2e-4

    func testBF16() {
        defer {
            for pool in testPools { pool.precision = .f32 }
            BF16Gemm.implementation = Kernels.variant.bf16Implementation
        }
        for pool in testPools { pool.precision = .bf16 }
        for implementation in BF16GemmTests.implementations {
            BF16Gemm.implementation = implementation
            for (i, c) in cases.enumerated() {
                check(c, pool: testPools[i % 3], seed: 2200 + UInt64(i), bound: Self.maxNMSEBF16)
            }
            check(Case(heads: 2, headDim: 8, batch: 1, tq: 40, tk: 200, causal: false), pool: testPools[1], seed: 2300,
                  scale: 6, bound: Self.maxNMSEBF16)
            check(Case(heads: 1, headDim: 40, batch: 2, tq: 150, tk: 300, causal: false), pool: testPools[2],
                  seed: 2301, scale: 3, bound: Self.maxNMSEBF16)
        }
    }

    /// int8 scores (`--precision int8` where bf16 is not native): K smoothed and quantised per
    /// key, Q per query and 32 channels, P · V in f32. Under every variant without native bf16
    /// and every int8 kernel this CPU runs, bit for bit the portable/portable result, and
    /// within `maxNMSEInt8` of the f32 reference; causal cases stay f32 (exact bound).
    /// Measured worst nmse 1.5e-4 (logits scaled by 4, d = 80); keys with channel offsets
    /// 3.1e-6 smoothed, 2.6e-3 without the smoothing.
    static let maxNMSEInt8 = 5e-4

    func testInt8Scores() {
        let saved = Kernels.variant
        defer {
            for pool in testPools { pool.precision = .f32 }
            Kernels.variant = saved
        }
        for pool in testPools { pool.precision = .int8 }
        let variants = [KernelVariant.portable, .avx2, .avx512].filter(\.isSupported)
        let extra = [Case(heads: 2, headDim: 8, batch: 1, tq: 40, tk: 200, causal: false),
                     Case(heads: 1, headDim: 40, batch: 2, tq: 150, tk: 300, causal: false),
                     Case(heads: 2, headDim: 80, batch: 1, tq: 65, tk: 97, causal: false)]
        var reference: [[Float]] = []
        for variant in variants {
            Kernels.variant = variant
            for implementation in [I8Gemm.Implementation.portable] + I8GemmTests.nativeImplementations {
                I8Gemm.implementation = implementation
                var outputs: [[Float]] = []
                for (i, c) in (cases + extra).enumerated() {
                    let scale: Float = i < cases.count ? 1 : 4
                    // (Causal cases stay f32; one key gives weight 1 whatever the scores.)
                    outputs.append(check(c, pool: testPools[i % 3], seed: 2400 + UInt64(i), scale: scale,
                                         bound: c.causal ? MaxNMSE.attention : Self.maxNMSEInt8,
                                         floor: c.causal || c.tk == 1 ? 0 : 1e-8))
                }
                // Keys with channel offsets 20× their spread: without the smoothing the
                // quantisation step would follow the offsets.
                outputs.append(check(Case(heads: 2, headDim: 40, batch: 2, tq: 50, tk: 130, causal: false),
                                     pool: testPools[1], seed: 2450, keyOffset: 20, bound: Self.maxNMSEInt8, floor: 1e-8))
                if reference.isEmpty {
                    reference = outputs
                } else {
                    for (i, out) in outputs.enumerated() {
                        XCTAssertNil(firstDifference(out, reference[i]), "\(variant.rawValue) \(implementation.name): case \(i)")
                    }
                }
            }
        }
    }

    /// What the reports name is what runs: the products by precision and variant.
    func testAttentionProductsFollowPrecisionAndVariant() {
        for variant in KernelVariant.supported {
            with(variant) {
                XCTAssertEqual(Kernels.Precision.f32.attention, .f32)
                XCTAssertEqual(Kernels.Precision.bf16.attention, .bf16)
                XCTAssertEqual(Kernels.Precision.int8.attention, variant.hasNativeBF16 ? .bf16 : .int8Scores,
                               variant.rawValue)
            }
        }
    }

    /// Large logits: peaked softmax, where a wrong running max or rescale shows.
    func testLargeScores() {
        check(Case(heads: 2, headDim: 8, batch: 1, tq: 40, tk: 200, causal: false), pool: testPools[1], seed: 2100,
              scale: 6)
        check(Case(heads: 1, headDim: 16, batch: 2, tq: 99, tk: 99, causal: true), pool: testPools[2], seed: 2101,
              scale: 5)
    }
}
