import XCTest
@testable import SDKernels

final class LinearTests: XCTestCase {
    /// Awkward sizes: 1, tails of the 6-row tile and of the 16-column (2 × SIMD8) tile.
    let shapes: [(n: Int, k: Int, p: Int)] = [
        (1, 1, 1), (1, 3, 7), (7, 1, 3), (3, 17, 1), (7, 17, 33), (17, 33, 17), (33, 7, 77),
        (6, 16, 16), (13, 40, 77), (40, 77, 5), (19, 65, 48),
    ]

    func check(n: Int, k: Int, p: Int, type: WeightType, bias: Bool, residual: Bool, aliasResidual: Bool,
               pool: ThreadPool, blocking: (String, Gemm.Blocking), seed: UInt64) {
        var random = SeededRandom(seed: seed)
        let weights = TestWeights(rows: n, cols: k, type: type, random: &random)
        let x = random.array(k * p)
        let b = random.array(n)
        let r = random.array(n * p)
        let expected = outputBuffer(n * p) { y in
            x.ptr { xp in b.ptr { bp in r.ptr { rp in
                ReferenceKernels.linear(weights.matrix, input: xp, columns: p, bias: bias ? bp : nil,
                                        residual: residual ? rp : nil, output: y)
            } } }
        }
        var actual: [Float]
        if aliasResidual {
            actual = r
            actual.withUnsafeMutableBufferPointer { y in
                x.ptr { xp in b.ptr { bp in
                    Gemm.linear(weights.matrix, input: xp, columns: p, bias: bias ? bp : nil,
                                residual: UnsafePointer(y.baseAddress!), output: y.baseAddress!, pool: pool,
                                blocking: blocking.1)
                } }
            }
        } else {
            actual = outputBuffer(n * p) { y in
                x.ptr { xp in b.ptr { bp in r.ptr { rp in
                    Gemm.linear(weights.matrix, input: xp, columns: p, bias: bias ? bp : nil,
                                residual: residual ? rp : nil, output: y, pool: pool, blocking: blocking.1)
                } } }
            }
        }
        let error = nmse(actual, expected)
        XCTAssertLessThan(error, MaxNMSE.linear(type),
                          "linear \(type) N=\(n) K=\(k) P=\(p) bias=\(bias) residual=\(residual) alias=\(aliasResidual) "
                          + "threads=\(pool.threads) blocking=\(blocking.0): nmse \(error)")
    }

    func testAwkwardShapesAllTypes() {
        var seed: UInt64 = 1
        for type in [WeightType.f32, .f16, .q8] {
            for (n, k, p) in shapes {
                for blocking in testBlockings {
                    seed += 1
                    let pool = testPools[Int(seed % 3)]
                    check(n: n, k: k, p: p, type: type, bias: seed % 2 == 0, residual: seed % 3 == 0,
                          aliasResidual: false, pool: pool, blocking: blocking, seed: seed)
                }
            }
        }
    }

    func testResidualMayAliasOutput() {
        for (i, pool) in testPools.enumerated() {
            for blocking in testBlockings {
                check(n: 17, k: 33, p: 77, type: .f16, bias: true, residual: true, aliasResidual: true,
                      pool: pool, blocking: blocking, seed: 100 + UInt64(i))
            }
        }
    }

    /// Splits along columns (P ≥ N) and along rows (N > P), with each pool size.
    func testThreadPartitions() {
        for pool in testPools {
            check(n: 5, k: 9, p: 200, type: .f32, bias: true, residual: false, aliasResidual: false,
                  pool: pool, blocking: testBlockings[1], seed: 200)
            check(n: 50, k: 9, p: 20, type: .q8, bias: false, residual: true, aliasResidual: false,
                  pool: pool, blocking: testBlockings[1], seed: 201)
        }
    }

    /// The public entry point with the production blocking, text-encoder-like width.
    func testPublicLinear() {
        var random = SeededRandom(seed: 7)
        let (n, k, p) = (24, 64, 77)
        let weights = TestWeights(rows: n, cols: k, type: .f16, random: &random)
        let x = random.array(k * p), b = random.array(n)
        let expected = outputBuffer(n * p) { y in
            x.ptr { xp in b.ptr { bp in ReferenceKernels.linear(weights.matrix, input: xp, columns: p, bias: bp,
                                                                residual: nil, output: y) } }
        }
        let actual = outputBuffer(n * p) { y in
            x.ptr { xp in b.ptr { bp in Kernels.linear(weights.matrix, input: xp, columns: p, bias: bp, residual: nil,
                                                       output: y, pool: testPools[1]) } }
        }
        let error = nmse(actual, expected)
        XCTAssertLessThan(error, MaxNMSE.linear(.f16), "Kernels.linear f16 \(n)x\(k) P=\(p): nmse \(error)")
    }
}
