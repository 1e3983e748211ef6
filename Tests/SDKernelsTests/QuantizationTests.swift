import XCTest
@testable import SDKernels

final class QuantizationTests: XCTestCase {
    /// Every element reconstructs within half a step (max|row| / 254), the returned worst
    /// error is the true worst, the row max maps to ±127, and a zero row stays zero.
    func testQ8RoundTripWithinBound() {
        var random = SeededRandom(seed: 5000)
        let rows = 9, cols = 37
        var w = random.array(rows * cols, -2, 2)
        for k in 0..<cols { w[3 * cols + k] = 0 }            // all-zero row
        for k in 0..<cols { w[5 * cols + k] *= 1e-6 }        // tiny row
        var q = [Int8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows)
        let reported = w.ptr { src in
            q.withUnsafeMutableBufferPointer { qp in scales.withUnsafeMutableBufferPointer { sp in
                Quantization.quantizeRowsQ8(src, rows: rows, cols: cols, values: qp.baseAddress!, scales: sp.baseAddress!)
            } }
        }
        var worst: Float = 0
        for n in 0..<rows {
            let row = w[n * cols ..< (n + 1) * cols]
            let maxAbs = row.map(abs).max()!
            let bound = Quantization.q8ErrorBound(rowMaxAbs: maxAbs) * (1 + 1e-5)
            XCTAssertTrue(q[n * cols ..< (n + 1) * cols].contains { abs(Int($0)) == 127 } || maxAbs == 0, "row \(n) max")
            for k in 0..<cols {
                let error = abs(Float(q[n * cols + k]) * scales[n] - w[n * cols + k])
                XCTAssertLessThanOrEqual(error, bound, "q8 row \(n) col \(k): error \(error) > bound \(bound)")
                worst = max(worst, error)
            }
        }
        XCTAssertEqual(reported, worst, "reported worst error")
        XCTAssertEqual(scales[3], 1, "zero row scale")
        XCTAssertTrue(q[3 * cols ..< 4 * cols].allSatisfy { $0 == 0 }, "zero row values")
    }

    func testHalfConversionsMatchScalar() {
        var random = SeededRandom(seed: 5100)
        let x = random.array(37, -70000, 70000) + [0, -0, 1e-8, 65504, 1e-5]
        var h = [Float16](repeating: 0, count: x.count)
        x.ptr { src in h.withUnsafeMutableBufferPointer { Quantization.floatToHalf(src, count: x.count, output: $0.baseAddress!) } }
        XCTAssertEqual(h.map { $0.bitPattern }, x.map { Float16($0).bitPattern }, "floatToHalf")
        var back = [Float](repeating: .nan, count: x.count)
        h.withUnsafeBufferPointer { hp in back.withUnsafeMutableBufferPointer {
            Quantization.halfToFloat(hp.baseAddress!, count: x.count, output: $0.baseAddress!)
        } }
        XCTAssertEqual(back, h.map { Float($0) }, "halfToFloat")
    }
}
