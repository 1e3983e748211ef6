import XCTest
@testable import SDSchedulers

/// TorchGenerator against torch.randn goldens (tools/make_scheduler_goldens.py, torch 2.13
/// x86_64): bit patterns must be identical.
final class TorchGeneratorTests: XCTestCase {
    private func assertDraw(_ values: [Float], _ expected: RNGGoldens.Draw, _ label: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(values.count, expected.count, "\(label): count", file: file, line: line)
        func firstMismatch(_ got: ArraySlice<Float>, _ want: [Float]) -> String? {
            for (i, (g, w)) in zip(got.indices, zip(got, want)) where g.bitPattern != w.bitPattern {
                return "index \(i): got \(g) (0x\(String(g.bitPattern, radix: 16))) want \(w) (0x\(String(w.bitPattern, radix: 16)))"
            }
            return nil
        }
        if let bits = expected.bits {
            let want = Fixtures.floats(hex: bits)
            XCTAssertNil(firstMismatch(values[...], want), "\(label)", file: file, line: line)
        }
        if let head = expected.head {
            let want = Fixtures.floats(hex: head)
            XCTAssertNil(firstMismatch(values.prefix(want.count), want), "\(label) head", file: file, line: line)
        }
        if let tail = expected.tail {
            let want = Fixtures.floats(hex: tail)
            XCTAssertNil(firstMismatch(values.suffix(want.count), want), "\(label) tail", file: file, line: line)
        }
        XCTAssertEqual(Fixtures.fnv1a64(values), expected.fnv1a64, "\(label): hash of all bits", file: file, line: line)
    }

    func testFreshGeneratorDrawsMatchTorch() throws {
        let goldens = try Fixtures.load("rng.json", as: RNGGoldens.self)
        XCTAssertGreaterThanOrEqual(goldens.single.count, 33)
        for draw in goldens.single {
            var generator = TorchGenerator(seed: draw.seed!)
            assertDraw(generator.randn(count: draw.count), draw, "seed \(draw.seed!) randn(\(draw.count))")
        }
    }

    func testSuccessiveDrawsCarryStateAndNormalCache() throws {
        let goldens = try Fixtures.load("rng.json", as: RNGGoldens.self)
        for sequence in goldens.sequences {
            var generator = TorchGenerator(seed: sequence.seed)
            for (i, draw) in sequence.draws.enumerated() {
                assertDraw(generator.randn(count: draw.count), draw, "seed \(sequence.seed) draw #\(i) randn(\(draw.count))")
            }
        }
    }

    func testSeedUsesLow32BitsAndCopiesAreIndependent() {
        var big = TorchGenerator(seed: 1_234_567_890_123)
        var low = TorchGenerator(seed: 1_234_567_890_123 & 0xFFFF_FFFF)
        XCTAssertEqual(big.randn(count: 40), low.randn(count: 40))
        XCTAssertEqual(big.seed, 1_234_567_890_123)
        var copy = big
        XCTAssertEqual(copy.randn(count: 3), big.randn(count: 3))
        XCTAssertEqual(TorchGenerator(seed: 5).seed, 5)
        var empty = TorchGenerator(seed: 1)
        XCTAssertEqual(empty.randn(count: 0), [])
    }

    func testNormalStatisticsOfLargeDraw() {
        var generator = TorchGenerator(seed: 3)
        let values = generator.randn(count: 1 << 16)
        let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
        let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)
        XCTAssertEqual(mean, 0, accuracy: 0.02)
        XCTAssertEqual(variance, 1, accuracy: 0.02)
    }
}

/// The libm replacements, against Foundation's (glibc's) results.
final class ElementaryMathTests: XCTestCase {
    /// Allowed distance in units in the last place from the platform libm.
    let maxULPs: Double = 2

    private func ulps(_ got: Double, _ want: Double) -> Double {
        if got == want { return 0 }
        return abs(got - want) / want.ulp
    }

    func testLogExpSinCosAgreeWithLibm() {
        var generator = TorchGenerator(seed: 11)
        var worst = (log: 0.0, exp: 0.0, sin: 0.0, cos: 0.0)
        for _ in 0..<20_000 {
            let u = Double(generator.nextUInt32()) / 4_294_967_296.0 + Double(generator.nextUInt32()) / 1.8446744073709552e19
            let x = 1 - u                                   // (0, 1]
            worst.log = max(worst.log, ulps(ElementaryMath.log(x), Foundation.log(x)))
            let y = (u - 0.5) * 80                          // [-40, 40]
            worst.exp = max(worst.exp, ulps(ElementaryMath.exp(y), Foundation.exp(y)))
            let theta = 2 * Double.pi * u
            let (s, c) = ElementaryMath.sinCos(theta)
            // Near zeros of sin/cos compare in absolute ulps of 1 (both are Lipschitz).
            worst.sin = max(worst.sin, abs(s - Foundation.sin(theta)) / max(abs(Foundation.sin(theta)), 0.25).ulp)
            worst.cos = max(worst.cos, abs(c - Foundation.cos(theta)) / max(abs(Foundation.cos(theta)), 0.25).ulp)
        }
        XCTAssertLessThanOrEqual(worst.log, maxULPs, "log")
        XCTAssertLessThanOrEqual(worst.exp, maxULPs, "exp")
        XCTAssertLessThanOrEqual(worst.sin, maxULPs, "sin")
        XCTAssertLessThanOrEqual(worst.cos, maxULPs, "cos")
        XCTAssertEqual(ElementaryMath.log(1.0), 0)
        XCTAssertEqual(ElementaryMath.log(0.0), -.infinity)
        XCTAssertEqual(ElementaryMath.exp(-Double.infinity), 0)
        XCTAssertEqual(ElementaryMath.pow(2, 7), 128, accuracy: 1e-12)
        XCTAssertEqual(ElementaryMath.log(Double.leastNonzeroMagnitude), Foundation.log(Double.leastNonzeroMagnitude), accuracy: 1e-12)
    }
}

final class PerImageGeneratorTests: XCTestCase {
    /// diffusers' list of generators: each image's share of every draw from its own generator.
    func testSeedsSplitEveryDrawByImage() {
        var batch = TorchGenerator(seeds: [5, 6, 7])
        var alone = [TorchGenerator(seed: 5), TorchGenerator(seed: 6), TorchGenerator(seed: 7)]
        for count in [3 * 64, 3 * 5, 3 * 1000] {  // both torch paths (< 16 and ≥ 16 per image)
            let drawn = batch.randn(count: count)
            let expected = alone.indices.flatMap { alone[$0].randn(count: count / 3) }
            XCTAssertEqual(drawn, expected)
        }
        var one = TorchGenerator(seeds: [9])
        var plain = TorchGenerator(seed: 9)
        XCTAssertEqual(one.randn(count: 40), plain.randn(count: 40), "one seed is the plain generator")
    }
}
