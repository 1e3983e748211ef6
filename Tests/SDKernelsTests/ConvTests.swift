import XCTest
@testable import SDKernels

final class ConvTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var cin, cout, batch, height, width, kernel, stride, padding: Int
        var description: String {
            "cin=\(cin) cout=\(cout) B=\(batch) H=\(height) W=\(width) k=\(kernel) s=\(stride) pad=\(padding)"
        }
    }

    /// 1×1 and 3×3, stride 1 and 2, padding 0 and 1, batch 1 and 2, odd sizes; output
    /// rows ≥ 16 wide so that the vector gather (plain, border-masked, stride 2) runs next
    /// to the scalar fallback (panels across rows, the first and last element of x).
    let cases: [Case] = [
        Case(cin: 1, cout: 1, batch: 1, height: 1, width: 1, kernel: 3, stride: 1, padding: 1),
        Case(cin: 3, cout: 7, batch: 1, height: 5, width: 7, kernel: 3, stride: 1, padding: 1),
        Case(cin: 5, cout: 17, batch: 2, height: 9, width: 6, kernel: 3, stride: 1, padding: 1),
        Case(cin: 4, cout: 7, batch: 1, height: 7, width: 9, kernel: 3, stride: 2, padding: 1),
        Case(cin: 3, cout: 5, batch: 2, height: 8, width: 17, kernel: 3, stride: 2, padding: 1),
        Case(cin: 2, cout: 13, batch: 1, height: 6, width: 19, kernel: 3, stride: 1, padding: 0),
        Case(cin: 3, cout: 8, batch: 2, height: 5, width: 33, kernel: 3, stride: 1, padding: 1),
        Case(cin: 2, cout: 6, batch: 1, height: 4, width: 40, kernel: 3, stride: 1, padding: 1),
        Case(cin: 3, cout: 7, batch: 1, height: 4, width: 32, kernel: 3, stride: 1, padding: 1),
        Case(cin: 2, cout: 5, batch: 2, height: 5, width: 35, kernel: 3, stride: 2, padding: 1),
        Case(cin: 2, cout: 4, batch: 1, height: 6, width: 64, kernel: 3, stride: 2, padding: 1),
        Case(cin: 7, cout: 17, batch: 1, height: 5, width: 7, kernel: 1, stride: 1, padding: 0),
        Case(cin: 6, cout: 9, batch: 2, height: 3, width: 17, kernel: 1, stride: 1, padding: 0),
        Case(cin: 5, cout: 3, batch: 1, height: 9, width: 7, kernel: 1, stride: 2, padding: 0),
        Case(cin: 3, cout: 4, batch: 1, height: 6, width: 6, kernel: 1, stride: 1, padding: 1),
    ]

    func check(_ c: Case, type: WeightType, bias: Bool, residual: Bool, aliasResidual: Bool = false,
               pool: ThreadPool, blocking: (String, Gemm.Blocking), seed: UInt64) {
        var random = SeededRandom(seed: seed)
        let weights = TestWeights(rows: c.cout, cols: c.cin * c.kernel * c.kernel, type: type, random: &random)
        let x = random.array(c.cin * c.batch * c.height * c.width)
        let geometry = Conv.Geometry(channels: c.cin, batch: c.batch, height: c.height, width: c.width,
                                     kernel: c.kernel, stride: c.stride, padding: c.padding)
        let outCount = c.cout * c.batch * geometry.outHeight * geometry.outWidth
        let b = random.array(c.cout), r = random.array(outCount)
        let expected = outputBuffer(outCount) { y in
            x.ptr { xp in b.ptr { bp in r.ptr { rp in
                ReferenceKernels.conv2d(weights.matrix, kernelSize: c.kernel, stride: c.stride, padding: c.padding,
                                        input: xp, channels: c.cin, batch: c.batch, height: c.height,
                                        width: c.width, bias: bias ? bp : nil, residual: residual ? rp : nil,
                                        output: y)
            } } }
        }
        var actual = aliasResidual ? r : [Float](repeating: .nan, count: outCount)
        actual.withUnsafeMutableBufferPointer { y in
            x.ptr { xp in b.ptr { bp in r.ptr { rp in
                let res: UnsafePointer<Float>? = aliasResidual ? UnsafePointer(y.baseAddress!) : (residual ? rp : nil)
                Conv.conv2d(weights.matrix, geometry: geometry, input: xp, bias: bias ? bp : nil,
                            residual: res, output: y.baseAddress!, pool: pool, blocking: blocking.1)
            } } }
        }
        let error = nmse(actual, expected)
        XCTAssertLessThan(error, MaxNMSE.conv(type),
                          "conv2d \(type) \(c) bias=\(bias) residual=\(residual) alias=\(aliasResidual) "
                          + "threads=\(pool.threads) blocking=\(blocking.0): nmse \(error)")
    }

    func testAwkwardShapesAllTypes() {
        var seed: UInt64 = 1000
        for type in [WeightType.f32, .f16, .q8] {
            for c in cases {
                for blocking in testBlockings {
                    seed += 1
                    check(c, type: type, bias: seed % 2 == 1, residual: seed % 3 == 1,
                          pool: testPools[Int(seed % 3)], blocking: blocking, seed: seed)
                }
            }
        }
    }

    func testResidualMayAliasOutput() {
        for blocking in testBlockings {
            check(cases[2], type: .f32, bias: true, residual: true, aliasResidual: true, pool: testPools[1],
                  blocking: blocking, seed: 1100)
            check(cases[9], type: .f16, bias: false, residual: true, aliasResidual: true, pool: testPools[2],
                  blocking: blocking, seed: 1101)
        }
    }

    /// Many output channels (split over rows) and a wide image (split over columns).
    func testThreadPartitions() {
        for pool in testPools {
            check(Case(cin: 2, cout: 40, batch: 1, height: 3, width: 5, kernel: 3, stride: 1, padding: 1),
                  type: .q8, bias: true, residual: false, pool: pool, blocking: testBlockings[0], seed: 1200)
            check(Case(cin: 2, cout: 3, batch: 2, height: 11, width: 21, kernel: 3, stride: 1, padding: 1),
                  type: .f32, bias: true, residual: true, pool: pool, blocking: testBlockings[1], seed: 1201)
        }
    }

    func testPublicConv() {
        var random = SeededRandom(seed: 1300)
        let weights = TestWeights(rows: 8, cols: 4 * 9, type: .f16, random: &random)
        let x = random.array(4 * 2 * 10 * 18), b = random.array(8)
        let expected = outputBuffer(8 * 2 * 5 * 9) { y in
            x.ptr { xp in b.ptr { bp in
                ReferenceKernels.conv2d(weights.matrix, kernelSize: 3, stride: 2, padding: 1, input: xp, channels: 4,
                                        batch: 2, height: 10, width: 18, bias: bp, residual: nil, output: y)
            } }
        }
        let actual = outputBuffer(8 * 2 * 5 * 9) { y in
            x.ptr { xp in b.ptr { bp in
                Kernels.conv2d(weights.matrix, kernelSize: 3, stride: 2, padding: 1, input: xp, channels: 4, batch: 2,
                               height: 10, width: 18, bias: bp, residual: nil, output: y, pool: testPools[1])
            } }
        }
        let error = nmse(actual, expected)
        XCTAssertLessThan(error, MaxNMSE.conv(.f16), "Kernels.conv2d 3x3 s2 f16: nmse \(error)")
    }
}

/// The im2col gather against its definition, element for element: it is a copy, so any
/// difference is a bug (a wrong lane, a missed border, a stale value in padding).
final class Im2colTests: XCTestCase {
    func testGatherMatchesDefinition() {
        let w = 2 * NativeF32.scalarCount
        // Output rows narrower than, as wide as and wider than a panel; stride 2; no
        // padding; one-row and one-column images; batch 2 so panels cross batch planes.
        let geometries: [(h: Int, w: Int, k: Int, s: Int, pad: Int)] = [
            (8, 8, 3, 1, 1), (16, 16, 3, 1, 1), (4, 4, 3, 1, 1), (5, 3, 3, 1, 1), (1, 1, 3, 1, 1),
            (6, 40, 3, 1, 1), (3, 33, 3, 2, 1), (9, 18, 3, 2, 1), (7, 7, 3, 1, 0), (6, 12, 1, 1, 0),
            (2, 2 * w, 3, 1, 1), (3, w, 3, 2, 1),
        ]
        var random = SeededRandom(seed: 1400)
        for (h, wd, k, s, pad) in geometries {
            let g = Conv.Geometry(channels: 3, batch: 2, height: h, width: wd, kernel: k, stride: s, padding: pad)
            let x = random.array(g.channels * g.channelStride)
            let depth = g.channels * k * k, columns = g.batch * g.outHeight * g.outWidth
            func expected(_ row: Int, _ column: Int) -> Float {
                let ic = row / (k * k), ky = row / k % k, kx = row % k
                let b = column / (g.outHeight * g.outWidth), oy = column / g.outWidth % g.outHeight
                let iy = oy * s + ky - pad, ix = column % g.outWidth * s + kx - pad
                guard iy >= 0 && iy < h && ix >= 0 && ix < wd else { return 0 }
                return x[ic * g.channelStride + b * g.planeSize + iy * wd + ix]
            }
            // Blocks that start inside a channel's 3 × 3 and mid-panel-row.
            for (k0, p0) in [(0, 0), (min(4, depth - 1), 0), (1, min(5, columns - 1)), (depth / 2, columns / 3)] {
                let kc = depth - k0, np = columns - p0
                let panels = (np + w - 1) / w
                var dst = [Float](repeating: .nan, count: panels * kc * w)
                let origins = UnsafeMutablePointer<Conv.ColumnOrigin>.allocate(capacity: np)
                defer { origins.deallocate() }
                x.ptr { xp in
                    dst.withUnsafeMutableBufferPointer {
                        Conv.packIm2col(g, xp, row: k0, depth: kc, column: p0, count: np, into: $0.baseAddress!,
                                        origins: origins)
                    }
                }
                var wrong = 0
                for panel in 0..<panels {
                    for r in 0..<kc {
                        for lane in 0..<w {
                            let column = p0 + panel * w + lane
                            let want = column < columns ? expected(k0 + r, column) : 0
                            if dst[(panel * kc + r) * w + lane].bitPattern != want.bitPattern { wrong += 1 }
                        }
                    }
                }
                XCTAssertEqual(wrong, 0, "im2col \(g) from row \(k0), column \(p0): \(wrong) wrong elements")
            }
        }
    }
}
