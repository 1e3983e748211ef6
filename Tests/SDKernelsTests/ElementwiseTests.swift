import Glibc
import XCTest
@testable import SDKernels

final class ElementwiseTests: XCTestCase {
    func testActivations() {
        let cases: [(Kernels.Activation, (Float) -> Float, Double)] = [
            (.gelu, ReferenceKernels.gelu, MaxNMSE.gelu),
            (.quickGelu, ReferenceKernels.quickGelu, MaxNMSE.quickGelu),
            (.silu, ReferenceKernels.silu, MaxNMSE.silu),
        ]
        var random = SeededRandom(seed: 4000)
        // 1 and 7: scalar tails only; 33: one tail; 40_000: threaded.
        for count in [1, 7, 33, 40_000] {
            let x = random.array(count, -8, 8)
            for (f, reference, threshold) in cases {
                var actual = x
                actual.withUnsafeMutableBufferPointer { Kernels.activate(f, $0.baseAddress!, count: count, pool: testPools[1]) }
                let expected = x.map(reference)
                let error = nmse(actual, expected)
                XCTAssertLessThan(error, threshold, "activate \(f) count=\(count): nmse \(error)")
            }
        }
    }

    /// The vector erf against glibc's erff: absolute error everywhere, relative near 0
    /// (GELU's 1 + erf needs the former, small inputs the latter).
    func testVectorErfAgainstErff() {
        let maxAbsolute: Float = 3e-7, maxRelativeNearZero: Float = 1e-6
        var worstAbs: Float = 0, worstRel: Float = 0
        var x: Float = -6
        while x <= 6 {
            var v = NativeF32()
            for i in 0..<NativeF32.scalarCount { v[i] = x + Float(i) * 1e-4 }
            let r = VectorMath.erf(v)
            for i in 0..<NativeF32.scalarCount {
                let expected = erff(v[i])
                worstAbs = max(worstAbs, abs(r[i] - expected))
                if abs(v[i]) < 0.5 && v[i] != 0 { worstRel = max(worstRel, abs(r[i] - expected) / abs(expected)) }
            }
            x += 0.0123
        }
        XCTAssertLessThan(worstAbs, maxAbsolute, "erf absolute error \(worstAbs)")
        XCTAssertLessThan(worstRel, maxRelativeNearZero, "erf relative error near 0: \(worstRel)")
    }

    func testVectorExpAgainstExpf() {
        let maxRelative: Float = 5e-7
        var worst: Float = 0
        var x: Float = -87
        while x <= 88 {
            let r = VectorMath.exp(NativeF32(repeating: x))
            worst = max(worst, abs(r[0] - expf(x)) / expf(x))
            x += 0.0917
        }
        XCTAssertLessThan(worst, maxRelative, "exp relative error \(worst)")
        // Far below the range: (almost) zero, never NaN; the masked-score case.
        let tiny = VectorMath.exp(NativeF32(repeating: -1e30))[0]
        XCTAssertTrue(tiny >= 0 && tiny < 1e-37, "exp(-1e30) = \(tiny)")
    }

    func testGeglu() {
        var random = SeededRandom(seed: 4100)
        for (features, columns) in [(1, 1), (3, 7), (17, 33), (40, 77), (64, 600)] {
            let x = random.array(2 * features * columns, -4, 4)
            let expected = outputBuffer(features * columns) { y in
                x.ptr { ReferenceKernels.geglu($0, features: features, columns: columns, output: y) }
            }
            let actual = outputBuffer(features * columns) { y in
                x.ptr { Kernels.geglu($0, features: features, columns: columns, output: y, pool: testPools[2]) }
            }
            let error = nmse(actual, expected)
            XCTAssertLessThan(error, MaxNMSE.geglu, "geglu F=\(features) P=\(columns): nmse \(error)")
        }
    }

    func testAddIsExact() {
        var random = SeededRandom(seed: 4200)
        for count in [1, 9, 40_001] {
            let a = random.array(count), b = random.array(count)
            for pool in [nil, testPools[1]] {
                var y = a
                y.withUnsafeMutableBufferPointer { yp in
                    b.ptr { Kernels.add(UnsafePointer(yp.baseAddress!), $0, count: count, output: yp.baseAddress!, pool: pool) }
                }
                XCTAssertEqual(y, zip(a, b).map { $0 + $1 }, "add count=\(count) pool=\(pool?.threads ?? 0)")
            }
        }
    }

    func testUpsampleIsExact() {
        var random = SeededRandom(seed: 4300)
        for (planes, h, w) in [(1, 1, 1), (3, 5, 7), (2, 17, 33), (8, 64, 70)] {
            let x = random.array(planes * h * w)
            let expected = outputBuffer(4 * x.count) { y in
                x.ptr { ReferenceKernels.upsampleNearest2x($0, planes: planes, height: h, width: w, output: y) }
            }
            let actual = outputBuffer(4 * x.count) { y in
                x.ptr { Kernels.upsampleNearest2x($0, planes: planes, height: h, width: w, output: y, pool: testPools[2]) }
            }
            XCTAssertEqual(actual, expected, "upsample planes=\(planes) H=\(h) W=\(w)")
        }
    }
}
