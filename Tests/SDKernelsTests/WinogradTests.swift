import XCTest
@testable import SDKernels

/// Winograd F(2×2, 3×3) against the Double reference conv. Its error is larger than the
/// direct conv's (the transforms add and subtract, the ½ in G is exact): `MaxNMSE.winograd23`.
final class WinogradTests: XCTestCase {
    typealias Case = ConvTests.Case

    /// Odd and even H/W (edge tiles), 1×1 images, batch 2, channel counts that are not
    /// multiples of the vector width or of the 6-row micro-tile, and rows of ≥ 16 tiles
    /// (W ≥ 31) so that the vector input/output paths run, with and without border masks.
    let cases: [Case] = [
        Case(cin: 1, cout: 1, batch: 1, height: 1, width: 1, kernel: 3, stride: 1, padding: 1),
        Case(cin: 3, cout: 7, batch: 2, height: 1, width: 1, kernel: 3, stride: 1, padding: 1),
        Case(cin: 3, cout: 7, batch: 1, height: 5, width: 7, kernel: 3, stride: 1, padding: 1),
        Case(cin: 5, cout: 17, batch: 2, height: 9, width: 6, kernel: 3, stride: 1, padding: 1),
        Case(cin: 9, cout: 13, batch: 1, height: 6, width: 35, kernel: 3, stride: 1, padding: 1),
        Case(cin: 11, cout: 5, batch: 2, height: 7, width: 64, kernel: 3, stride: 1, padding: 1),
        Case(cin: 17, cout: 66, batch: 1, height: 4, width: 33, kernel: 3, stride: 1, padding: 1),
        Case(cin: 4, cout: 8, batch: 2, height: 16, width: 16, kernel: 3, stride: 1, padding: 1),
        Case(cin: 2, cout: 3, batch: 1, height: 3, width: 96, kernel: 3, stride: 1, padding: 1),
    ]

    /// Which Winograd runs in `check`: F(2×2, 3×3) or F(4×4, 3×3).
    var tileSize = 2

    func check(_ c: Case, type: WeightType, bias: Bool, residual: Bool, aliasResidual: Bool = false,
               pool: ThreadPool, seed: UInt64, bound: Double? = nil, file: StaticString = #filePath, line: UInt = #line) {
        var random = SeededRandom(seed: seed)
        let weights = TestWeights(rows: c.cout, cols: c.cin * 9, type: type, random: &random)
        let x = random.array(c.cin * c.batch * c.height * c.width)
        let geometry = Conv.Geometry(channels: c.cin, batch: c.batch, height: c.height, width: c.width,
                                     kernel: 3, stride: 1, padding: 1)
        let outCount = c.cout * c.batch * c.height * c.width
        let b = random.array(c.cout), r = random.array(outCount)
        let expected = outputBuffer(outCount) { y in
            x.ptr { xp in b.ptr { bp in r.ptr { rp in
                ReferenceKernels.conv2d(weights.matrix, kernelSize: 3, stride: 1, padding: 1, input: xp,
                                        channels: c.cin, batch: c.batch, height: c.height, width: c.width,
                                        bias: bias ? bp : nil, residual: residual ? rp : nil, output: y)
            } } }
        }
        var actual = aliasResidual ? r : [Float](repeating: .nan, count: outCount)
        actual.withUnsafeMutableBufferPointer { y in
            x.ptr { xp in b.ptr { bp in r.ptr { rp in
                let res: UnsafePointer<Float>? = aliasResidual ? UnsafePointer(y.baseAddress!) : (residual ? rp : nil)
                if tileSize == 4 {
                    Winograd43.conv3x3(weights.matrix, geometry: geometry, input: xp, bias: bias ? bp : nil,
                                       residual: res, output: y.baseAddress!, pool: pool)
                } else {
                    Winograd.conv3x3(weights.matrix, geometry: geometry, input: xp, bias: bias ? bp : nil,
                                     residual: res, output: y.baseAddress!, pool: pool)
                }
            } } }
        }
        let error = nmse(actual, expected)
        XCTAssertLessThan(error, bound ?? (tileSize == 4 ? MaxNMSE.winograd43 : MaxNMSE.winograd23(type)),
                          "winograd F(\(tileSize),3) \(type) \(c) bias=\(bias) residual=\(residual) alias=\(aliasResidual) "
                          + "threads=\(pool.threads): nmse \(error)", file: file, line: line)
    }

    func testAwkwardShapesAllTypes() {
        var seed: UInt64 = 5000
        for type in [WeightType.f32, .f16, .q8] {
            for c in cases {
                seed += 1
                check(c, type: type, bias: seed % 2 == 1, residual: seed % 3 != 0, pool: testPools[Int(seed % 3)],
                      seed: seed)
            }
        }
    }

    /// F(4×4, 3×3) on the same shapes, blocks and partitions (sizes not multiples of 4 give
    /// partial edge tiles).
    func testF43() {
        tileSize = 4
        testAwkwardShapesAllTypes()
        testResidualMayAliasOutput()
        testBlocksAndPartitions()
        // Inputs so wide that fewer tiles than rows fit a block (700 channels: 32 tiles per
        // block against 48 rows), with several blocks of each, as SDXL's up blocks have.
        for pool in testPools {
            check(Case(cin: 700, cout: 100, batch: 1, height: 24, width: 40, kernel: 3, stride: 1, padding: 1),
                  type: .q8, bias: true, residual: true, pool: pool, seed: 5202, bound: MaxNMSE.winograd43Deep)
        }
    }

    /// `ScratchPolicy.roomy` only makes F(4, 3)'s tile blocks larger: the same bits as
    /// `compact`, on a shape where the compact budget takes several tile blocks per part
    /// (300 channels: 80 tiles per 4 MiB block, 256 tiles) and the roomy one a single one.
    func testRoomyScratchGivesTheSameBits() {
        var random = SeededRandom(seed: 5500)
        let cin = 300, cout = 20, h = 64, w = 64
        let weights = TestWeights(rows: cout, cols: cin * 9, type: .q8, random: &random)
        let x = random.array(cin * h * w), b = random.array(cout)
        let geometry = Conv.Geometry(channels: cin, batch: 1, height: h, width: w, kernel: 3, stride: 1, padding: 1)
        XCTAssertGreaterThan(256, Winograd.tileBlock(wordsPerTile: 36 * cin, panelWidth: 16,
                                                     budget: Winograd43.maxTransformedInput))
        XCTAssertEqual(256, Winograd.tileBlock(wordsPerTile: 36 * cin, panelWidth: 16,
                                               budget: Winograd43.roomyTransformedInput))
        func run(_ policy: ScratchPolicy, threads: Int) -> [Float] {
            let pool = ThreadPool(threads: threads, scratch: policy)
            return outputBuffer(cout * h * w) { y in
                x.ptr { xp in b.ptr { bp in
                    Winograd43.conv3x3(weights.matrix, geometry: geometry, input: xp, bias: bp, residual: nil,
                                       output: y, pool: pool)
                } }
            }
        }
        for threads in [1, 2] {
            let compact = run(.compact, threads: threads), roomy = run(.roomy, threads: threads)
            XCTAssertEqual(compact.count, roomy.count)
            XCTAssertTrue(zip(compact, roomy).allSatisfy { $0.bitPattern == $1.bitPattern },
                          "roomy scratch changed F(4,3) results at \(threads) threads")
        }
    }

    func testResidualMayAliasOutput() {
        check(cases[5], type: .f32, bias: true, residual: true, aliasResidual: true, pool: testPools[1], seed: 5100)
        check(cases[3], type: .q8, bias: false, residual: true, aliasResidual: true, pool: testPools[2], seed: 5101)
    }

    /// Several tile blocks and output-channel blocks per part (more tiles than `maxTileBlock`,
    /// more channels than `rowBlock`), split over columns and over rows.
    func testBlocksAndPartitions() {
        for pool in testPools {
            check(Case(cin: 3, cout: 5, batch: 2, height: 31, width: 40, kernel: 3, stride: 1, padding: 1),
                  type: .f32, bias: true, residual: true, pool: pool, seed: 5200)
            check(Case(cin: 6, cout: 130, batch: 1, height: 5, width: 9, kernel: 3, stride: 1, padding: 1),
                  type: .f16, bias: true, residual: false, pool: pool, seed: 5201)
        }
    }

    /// Depth past one GEMM k-block (Cin > 384), as in the UNet's 1280-channel convs.
    func testDeepInput() {
        check(Case(cin: 400, cout: 7, batch: 1, height: 4, width: 5, kernel: 3, stride: 1, padding: 1),
              type: .q8, bias: true, residual: true, pool: testPools[1], seed: 5300)
    }

    /// `Kernels.conv2d` dispatch: forced Winograd and forced direct agree with the reference,
    /// and the two paths really differ (different rounding), so the switch is not a no-op.
    func testDispatchOption() {
        var random = SeededRandom(seed: 5400)
        let cin = 64, cout = 64, h = 16, w = 16
        let weights = TestWeights(rows: cout, cols: cin * 9, type: .f16, random: &random)
        let x = random.array(cin * h * w), b = random.array(cout)
        func run(_ algorithm: Kernels.ConvAlgorithm) -> [Float] {
            let saved = Kernels.convAlgorithm
            defer { Kernels.convAlgorithm = saved }
            Kernels.convAlgorithm = algorithm
            return outputBuffer(cout * h * w) { y in
                x.ptr { xp in b.ptr { bp in
                    Kernels.conv2d(weights.matrix, kernelSize: 3, stride: 1, padding: 1, input: xp, channels: cin,
                                   batch: 1, height: h, width: w, bias: bp, residual: nil, output: y, pool: testPools[1])
                } }
            }
        }
        let expected = outputBuffer(cout * h * w) { y in
            x.ptr { xp in b.ptr { bp in
                ReferenceKernels.conv2d(weights.matrix, kernelSize: 3, stride: 1, padding: 1, input: xp, channels: cin,
                                        batch: 1, height: h, width: w, bias: bp, residual: nil, output: y)
            } }
        }
        let direct = run(.direct), winograd = run(.winograd), automatic = run(.automatic)
        XCTAssertLessThan(nmse(direct, expected), MaxNMSE.conv(.f16))
        XCTAssertLessThan(nmse(winograd, expected), MaxNMSE.winograd23(.f16))
        XCTAssertNotEqual(direct, winograd, "the forced paths should round differently")
        XCTAssertTrue(Winograd.pays(for: Conv.Geometry(channels: cin, batch: 1, height: h, width: w, kernel: 3,
                                                       stride: 1, padding: 1), outChannels: cout))
        XCTAssertEqual(automatic, winograd)
    }
}
