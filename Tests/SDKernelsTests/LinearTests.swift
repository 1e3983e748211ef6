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

    /// A column range of wider tensors multiplied in place (`inputStride`, `outputStride`,
    /// the residual aliasing the output as the attention and feed-forward chunks use it)
    /// gives the bits the same product on contiguous copies gives, in every precision this
    /// CPU runs, and leaves the columns outside the range untouched.
    func testColumnRangeInPlaceMatchesCopies() {
        var random = SeededRandom(seed: 8)
        let (n, k, wide, first, p) = (20, 45, 700, 37, 400)
        let precisions: [Kernels.Precision] = [.f32, .int8] + (Kernels.variant.hasNativeBF16 ? [.bf16] : [])
        for type in [WeightType.f32, .f16, .q8] {
            let weights = TestWeights(rows: n, cols: k, type: type, random: &random)
            let x = random.array(k * wide), h = random.array(n * wide), b = random.array(n)
            for precision in precisions {
                for pool in testPools {
                    pool.precision = precision
                    defer { pool.precision = .f32 }
                    let label = "\(type), \(precision), \(pool.threads) threads"
                    // Copies of the columns first ..< first + p, multiplied contiguously.
                    let xc = (0..<k).flatMap { x[($0 * wide + first)..<($0 * wide + first + p)] }
                    var yc = (0..<n).flatMap { h[($0 * wide + first)..<($0 * wide + first + p)] }
                    yc.withUnsafeMutableBufferPointer { y in
                        xc.ptr { xp in b.ptr { bp in
                            Kernels.linear(weights.matrix, input: xp, columns: p, bias: bp,
                                           residual: UnsafePointer(y.baseAddress!), output: y.baseAddress!, pool: pool)
                        } }
                    }
                    var inPlace = h
                    inPlace.withUnsafeMutableBufferPointer { y in
                        x.ptr { xp in b.ptr { bp in
                            Kernels.linear(weights.matrix, input: xp + first, columns: p, bias: bp,
                                           residual: UnsafePointer(y.baseAddress! + first), output: y.baseAddress! + first,
                                           pool: pool, inputStride: wide, outputStride: wide)
                        } }
                    }
                    for row in 0..<n {
                        let range = (row * wide + first)..<(row * wide + first + p)
                        XCTAssertEqual(Array(inPlace[range]), Array(yc[(row * p)..<(row * p + p)]), "\(label), row \(row)")
                        XCTAssertEqual(Array(inPlace[(row * wide)..<(row * wide + first)]),
                                       Array(h[(row * wide)..<(row * wide + first)]), "\(label): columns before")
                        XCTAssertEqual(Array(inPlace[range.upperBound..<((row + 1) * wide)]),
                                       Array(h[range.upperBound..<((row + 1) * wide)]), "\(label): columns after")
                    }
                }
            }
        }
    }
}
