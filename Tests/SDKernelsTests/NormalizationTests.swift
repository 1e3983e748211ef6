import XCTest
@testable import SDKernels

final class NormalizationTests: XCTestCase {
    func checkGroupNorm(channels: Int, batch: Int, pixels: Int, groups: Int, silu: Bool, offset: Float,
                        pool: ThreadPool, seed: UInt64, inPlace: Bool = false) {
        var random = SeededRandom(seed: seed)
        // A common offset checks that the variance does not cancel in Float.
        let x = random.array(channels * batch * pixels).map { $0 + offset }
        let gamma = random.array(channels, 0.5, 1.5), beta = random.array(channels)
        let expected = outputBuffer(x.count) { y in
            x.ptr { xp in gamma.ptr { g in beta.ptr { b in
                ReferenceKernels.groupNorm(xp, channels: channels, batch: batch, pixels: pixels, groups: groups,
                                           eps: 1e-5, gamma: g, beta: b, silu: silu, output: y)
            } } }
        }
        var actual = inPlace ? x : [Float](repeating: .nan, count: x.count)
        actual.withUnsafeMutableBufferPointer { y in
            x.ptr { xp in gamma.ptr { g in beta.ptr { b in
                let input = inPlace ? UnsafePointer(y.baseAddress!) : xp
                Kernels.groupNorm(input, channels: channels, batch: batch, pixels: pixels, groups: groups, eps: 1e-5,
                                  gamma: g, beta: b, silu: silu, output: y.baseAddress!, pool: pool)
            } } }
        }
        let error = nmse(actual, expected)
        XCTAssertLessThan(error, silu ? MaxNMSE.groupNormSiLU : MaxNMSE.groupNorm,
                          "groupNorm C=\(channels) B=\(batch) P=\(pixels) G=\(groups) silu=\(silu) offset=\(offset) "
                          + "inPlace=\(inPlace) threads=\(pool.threads): nmse \(error)")
    }

    func testGroupNorm() {
        let shapes: [(c: Int, b: Int, p: Int, g: Int)] = [(1, 1, 1, 1), (4, 1, 7, 2), (6, 2, 17, 3), (32, 1, 33, 32),
                                                          (12, 2, 77, 4), (8, 1, 1100, 2), (9, 2, 15, 3)]
        var seed: UInt64 = 3000
        for s in shapes {
            for silu in [false, true] {
                seed += 1
                checkGroupNorm(channels: s.c, batch: s.b, pixels: s.p, groups: s.g, silu: silu,
                               offset: seed % 2 == 0 ? 0 : 30, pool: testPools[Int(seed % 3)], seed: seed)
            }
        }
        checkGroupNorm(channels: 6, batch: 2, pixels: 17, groups: 3, silu: true, offset: 0, pool: testPools[1],
                       seed: 3100, inPlace: true)
    }

    func checkLayerNorm(channels: Int, columns: Int, offset: Float, pool: ThreadPool, seed: UInt64,
                        inPlace: Bool = false) {
        var random = SeededRandom(seed: seed)
        let x = random.array(channels * columns).map { $0 + offset }
        let gamma = random.array(channels, 0.5, 1.5), beta = random.array(channels)
        let expected = outputBuffer(x.count) { y in
            x.ptr { xp in gamma.ptr { g in beta.ptr { b in
                ReferenceKernels.layerNorm(xp, channels: channels, columns: columns, eps: 1e-5, gamma: g, beta: b,
                                           output: y)
            } } }
        }
        var actual = inPlace ? x : [Float](repeating: .nan, count: x.count)
        actual.withUnsafeMutableBufferPointer { y in
            x.ptr { xp in gamma.ptr { g in beta.ptr { b in
                Kernels.layerNorm(inPlace ? UnsafePointer(y.baseAddress!) : xp, channels: channels, columns: columns,
                                  eps: 1e-5, gamma: g, beta: b, output: y.baseAddress!, pool: pool)
            } } }
        }
        let error = nmse(actual, expected)
        XCTAssertLessThan(error, MaxNMSE.layerNorm,
                          "layerNorm C=\(channels) P=\(columns) offset=\(offset) inPlace=\(inPlace) "
                          + "threads=\(pool.threads): nmse \(error)")
    }

    func testLayerNorm() {
        let shapes: [(c: Int, p: Int)] = [(1, 1), (3, 7), (17, 16), (33, 17), (64, 77), (40, 154), (7, 33)]
        var seed: UInt64 = 3200
        for s in shapes {
            seed += 1
            checkLayerNorm(channels: s.c, columns: s.p, offset: seed % 2 == 0 ? 0 : 20, pool: testPools[Int(seed % 3)],
                           seed: seed)
        }
        checkLayerNorm(channels: 33, columns: 77, offset: 1, pool: testPools[2], seed: 3300, inPlace: true)
    }
}
