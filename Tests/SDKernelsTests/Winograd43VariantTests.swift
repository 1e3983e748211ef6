import XCTest
@testable import SDKernels

/// Winograd F(4×4, 3×3)'s transforms in C (winograd43_transforms.c, 16 tiles or channels per
/// zmm, taken under the AVX-512 variants) against their Swift twins run with the portable
/// variant. Bound: bitwise equality (the same operations in the same order per lane; any
/// difference is a bug). Skipped where the CPU lacks AVX-512.
final class Winograd43VariantTests: XCTestCase {
    let cVariants: [KernelVariant] = [.avx512, .avx512BF16, .amx]

    func requireAVX512() throws {
        guard KernelVariant.avx512.isSupported else {
            throw XCTSkip("the F(4, 3) C transforms need AVX-512, which this machine lacks "
                          + "(it has: \(KernelVariant.featureNames)); run on such a CPU to test them")
        }
    }

    /// Shapes: whole tile rows of ≥ 16 tiles (64 wide), rows longer than 16 tiles starting
    /// mid-row (130 wide), rows shorter than 16 (32 wide: 8 tiles, 15 wide: 4 tiles) so that
    /// groups cross rows and images, odd sizes (width/height not multiples of 4), odd
    /// channel counts, blocks starting mid-row, a one-pixel image.
    let shapes = [(channels: 13, batch: 2, height: 9, width: 67, firstTile: 0, count: 200),
                  (channels: 4, batch: 1, height: 64, width: 64, firstTile: 16, count: 256),
                  (channels: 3, batch: 2, height: 7, width: 15, firstTile: 5, count: 50),
                  (channels: 8, batch: 1, height: 33, width: 33, firstTile: 40, count: 150),
                  (channels: 5, batch: 2, height: 32, width: 32, firstTile: 3, count: 100),
                  (channels: 7, batch: 1, height: 21, width: 130, firstTile: 37, count: 120),
                  (channels: 2, batch: 1, height: 1, width: 1, firstTile: 0, count: 1),
                  (channels: 1, batch: 3, height: 6, width: 5, firstTile: 1, count: 11)]

    func geometry(_ s: (channels: Int, batch: Int, height: Int, width: Int, firstTile: Int, count: Int))
        -> (Conv.Geometry, Winograd.Tiles, t0: Int, tb: Int, name: String) {
        let g = Conv.Geometry(channels: s.channels, batch: s.batch, height: s.height, width: s.width,
                              kernel: 3, stride: 1, padding: 1)
        let tiling = Winograd.Tiles(g: g, size: 4)
        let t0 = s.firstTile, tb = min(s.count, tiling.count - s.firstTile)
        return (g, tiling, t0, tb, "\(s.channels) ch, \(s.batch)×\(s.height)×\(s.width), tiles \(t0)..<\(t0 + tb)")
    }

    /// Input with some exact zeros and negative zeros among the random values.
    func input(_ count: Int, _ random: inout SeededRandom) -> [Float] {
        var x = random.array(count, -4, 4)
        for i in stride(from: 0, to: count, by: 7) { x[i] = i % 2 == 0 ? 0 : -0.0 }
        return x
    }

    /// V of a block: all 36 positions and panels, lanes past the count included.
    func testInputTransformMatchesTwin() throws {
        try requireAVX512()
        var random = SeededRandom(seed: 43)
        let w = 2 * NativeF32.scalarCount
        for s in shapes {
            let (g, tiling, t0, tb, name) = geometry(s)
            let x = input(s.channels * g.channelStride, &random)
            let panels = (tb + w - 1) / w
            let words = 36 * panels * s.channels * w
            func run(_ v: KernelVariant) -> [Float] {
                var out = [Float](repeating: .nan, count: words + 16)
                let patch = UnsafeMutablePointer<Float>.allocate(capacity: 40 * NativeF32.scalarCount)
                defer { patch.deallocate() }
                with(v) {
                    out.withUnsafeMutableBufferPointer { o in
                        x.ptr { Winograd43.transformInput(tiling, $0, firstTile: t0, count: tb, panels: panels,
                                                          into: o.baseAddress!, patch: patch) }
                    }
                }
                return out
            }
            let expected = run(.portable)
            for v in cVariants where v.isSupported {
                if let d = firstDifference(run(v), expected) { XCTFail("input, \(name), \(v.rawValue): \(d)") }
            }
        }
    }

    /// y from M: output rows 2 ..< 7 of 7 output channels, M's row stride past the tiles,
    /// with and without bias and residual (y's other values untouched).
    func testOutputTransformMatchesTwin() throws {
        try requireAVX512()
        var random = SeededRandom(seed: 44)
        for s in shapes {
            let (g, tiling, t0, tb, name) = geometry(s)
            let (n0, rows, outChannels) = (2, 5, 7)
            let ldm = (tb + 31) / 32 * 32 + 16
            let m = input(36 * rows * ldm, &random), bias = random.array(outChannels)
            let residual = random.array(outChannels * g.channelStride)
            let initial = random.array(outChannels * g.channelStride)
            for (withBias, withResidual) in [(true, true), (false, false), (false, true), (true, false)] {
                func output(_ v: KernelVariant) -> [Float] {
                    var y = initial
                    let patch = UnsafeMutablePointer<Float>.allocate(capacity: 40 * NativeF32.scalarCount)
                    defer { patch.deallocate() }
                    with(v) {
                        m.ptr { mp in bias.ptr { bp in residual.ptr { rp in
                            y.withUnsafeMutableBufferPointer {
                                Winograd43.transformOutput(tiling, UnsafeMutablePointer(mutating: mp), rowStride: ldm,
                                                           firstRow: n0, rows: rows, firstTile: t0, count: tb,
                                                           bias: withBias ? bp : nil, residual: withResidual ? rp : nil,
                                                           output: $0.baseAddress!, patch: patch)
                            }
                        } } }
                    }
                    return y
                }
                let expected = output(.portable)
                XCTAssertNotNil(firstDifference(expected, initial), "output, \(name): the twin wrote nothing")
                for v in cVariants where v.isSupported {
                    if let d = firstDifference(output(v), expected) {
                        XCTFail("output, bias \(withBias), residual \(withResidual), \(name), \(v.rawValue): \(d)")
                    }
                }
            }
        }
    }

    /// U in f32: f32, f16 and q8 weights, channel counts below, at and past 16 (odd tails),
    /// row ranges starting past row 0; nothing written past U.
    func testWeightTransformMatchesTwin() throws {
        try requireAVX512()
        var random = SeededRandom(seed: 45)
        for type in [WeightType.f32, .f16, .q8] {
            for (rows, cin, range) in [(20, 13, 3..<20), (30, 16, 0..<30), (14, 33, 1..<14), (5, 1, 0..<5),
                                       (26, 64, 2..<26), (9, 47, 4..<6)] {
                let weights = TestWeights(rows: rows, cols: 9 * cin, type: type, random: &random)
                let v = NativeF32.scalarCount, cinPadded = (cin + v - 1) / v * v
                func run(_ variant: KernelVariant) -> [Float] {
                    var out = [Float](repeating: .nan, count: 36 * range.count * cin + 16)
                    let rowBuffer = UnsafeMutablePointer<Float>.allocate(capacity: 9 * cinPadded)
                    defer { rowBuffer.deallocate() }
                    with(variant) {
                        out.withUnsafeMutableBufferPointer {
                            Winograd43.transformWeights(weights.matrix, firstRow: range.lowerBound, count: range.count,
                                                        into: $0.baseAddress!, rowBuffer: rowBuffer)
                        }
                    }
                    return out
                }
                let expected = run(.portable)
                for variant in cVariants where variant.isSupported {
                    if let d = firstDifference(run(variant), expected) {
                        XCTFail("weights \(type), \(cin) channels, rows \(range), \(variant.rawValue): \(d)")
                    }
                }
            }
        }
    }
}
