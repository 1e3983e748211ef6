import XCTest
@testable import SDKernels

/// Normalised mean squared error Σ(a − b)² / Σb², the kernel tests' metric (as in ggml's
/// test-backend-ops): scale-free, so one threshold per op and dtype serves every shape.
func nmse(_ actual: [Float], _ expected: [Float]) -> Double {
    precondition(actual.count == expected.count)
    var num = 0.0, den = 0.0
    for i in 0..<actual.count {
        let d = Double(actual[i]) - Double(expected[i])
        num += d * d
        den += Double(expected[i]) * Double(expected[i])
    }
    if den == 0 { return num == 0 ? 0 : .infinity }
    return num / den
}

/// Thresholds per op and weight type. Fast kernels see exactly the reference's weight
/// values (f16 and q8 are dequantised the same way), so what differs is only Float
/// summation order against the Double reference and the vector exp/erf (relative error
/// ~2e-7). Measured worst cases over these tests: GEMM/conv 3e-14, attention 2e-13,
/// activations 1e-15, norms 1.3e-12 (inputs with a +20/+30 offset, where the Float input
/// itself limits x − mean to ~1e-6 relative). A single wrong term in a K = 100 dot
/// product is ~1e-2.
enum MaxNMSE {
    static func linear(_ type: WeightType) -> Double {
        switch type {
        case .f32: return 1e-11
        case .f16: return 1e-11
        case .q8: return 1e-11
        }
    }
    static func conv(_ type: WeightType) -> Double {
        switch type {
        case .f32: return 1e-11
        case .f16: return 1e-11
        case .q8: return 1e-11
        }
    }
    /// Winograd F(2×2, 3×3) in Float: the input and output transforms add up to 4 and 9
    /// terms of mixed sign, so the rounding grows with the spread of the tile values
    /// (measured worst over WinogradTests: see the report in the test file).
    static func winograd23(_ type: WeightType) -> Double {
        switch type {
        case .f32: return 1e-11
        case .f16: return 1e-11
        case .q8: return 1e-11
        }
    }
    /// Winograd F(4×4, 3×3): transforms with coefficients up to 8 and 1/24 (measured worst
    /// over WinogradTests.testF43: 1.5e-12).
    static let winograd43 = 1e-11
    /// F(4×4, 3×3) summing 700 input channels per product: the rounding grows with the depth
    /// (measured 1.43e-11 at 700 channels).
    static let winograd43Deep = 1e-10
    static let attention = 1e-11
    static let groupNorm = 1e-10
    static let groupNormSiLU = 1e-10
    static let layerNorm = 1e-10
    static let gelu = 1e-11
    static let quickGelu = 1e-11
    static let silu = 1e-11
    static let geglu = 1e-11
}

/// SplitMix64: reproducible inputs for every test case.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    mutating func uniform(_ lo: Float = -1, _ hi: Float = 1) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }

    mutating func array(_ count: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<count).map { _ in uniform(lo, hi) }
    }
}

/// Weights of any type plus the storage `WeightMatrix` points into; keep it alive while
/// the matrix is used.
final class TestWeights {
    let matrix: WeightMatrix
    private let storage: UnsafeMutableRawPointer
    private let scaleStorage: UnsafeMutablePointer<Float>?

    init(rows: Int, cols: Int, type: WeightType, random: inout SeededRandom) {
        let values = random.array(rows * cols, -0.5, 0.5)
        let bytes: Int
        switch type {
        case .f32: bytes = rows * cols * 4
        case .f16: bytes = rows * cols * 2
        case .q8: bytes = rows * cols
        }
        storage = .allocate(byteCount: max(bytes, 1), alignment: 64)
        switch type {
        case .f32:
            storage.copyMemory(from: values, byteCount: bytes)
            scaleStorage = nil
        case .f16:
            let h = storage.bindMemory(to: Float16.self, capacity: rows * cols)
            for i in 0..<rows * cols { h[i] = Float16(values[i]) }
            scaleStorage = nil
        case .q8:
            let q = storage.bindMemory(to: Int8.self, capacity: rows * cols)
            let s = UnsafeMutablePointer<Float>.allocate(capacity: max(rows, 1))
            Quantization.quantizeRowsQ8(values, rows: rows, cols: cols, values: q, scales: s)
            scaleStorage = s
        }
        matrix = WeightMatrix(type: type, rows: rows, cols: cols, data: UnsafeRawPointer(storage),
                              scales: scaleStorage.map { UnsafePointer($0) })
    }

    deinit {
        storage.deallocate()
        scaleStorage?.deallocate()
    }
}

/// Small blockings that force every loop of the blocked GEMM (several K, N and P blocks)
/// on test-sized shapes, next to the production one.
let testBlockings: [(String, Gemm.Blocking)] = [
    ("default", Gemm.blocking),
    ("tiny", Gemm.Blocking(maxDepth: 7, maxRows: 12, maxColumns: 32)),
]

/// Pools shared by the tests: one thread, the machine's two, and more parts than cores.
let testPools: [ThreadPool] = [ThreadPool(threads: 1), ThreadPool(threads: 2), ThreadPool(threads: 3)]

extension Array where Element == Float {
    func ptr<R>(_ body: (UnsafePointer<Float>) -> R) -> R { withUnsafeBufferPointer { body($0.baseAddress!) } }
}

func outputBuffer(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) -> [Float] {
    // Filled with NaN so that an element the kernel forgets to write fails the test.
    var out = [Float](repeating: .nan, count: count)
    out.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
    return out
}

/// The kernel-variant tests' shared steps: run under a forced variant, compare bit for bit.
extension XCTestCase {
    /// Runs `body` with `Kernels.variant` set to `v`, restoring the previous variant after.
    func with<R>(_ v: KernelVariant, _ body: () -> R) -> R {
        let saved = Kernels.variant
        Kernels.variant = v
        defer { Kernels.variant = saved }
        return body()
    }

    /// The first element whose bits differ from the portable result, or nil when all agree
    /// (a count mismatch fails the test).
    func firstDifference(_ a: [Float], _ b: [Float]) -> String? {
        XCTAssertEqual(a.count, b.count)
        for i in 0..<min(a.count, b.count) where a[i].bitPattern != b[i].bitPattern {
            return "element \(i): \(a[i]) vs portable \(b[i])"
        }
        return nil
    }
}
