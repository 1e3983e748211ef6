import CKernels

/// Weight conversions for the model converter (and the tests): symmetric per-row int8 and
/// IEEE half. Layout of a q8 matrix: `rows × cols` Int8 values row-major, then nothing
/// else; the `rows` Float scales are stored separately (see `WeightMatrix`).
public enum Quantization {
    /// Largest |error| of q8 on one element of row n: half a quantisation step,
    /// scale[n] / 2 = max|w[n, ·]| / 254 (round to nearest, no clipping since the scale
    /// covers the row's max).
    public static func q8ErrorBound(rowMaxAbs: Float) -> Float { rowMaxAbs / 254 }

    /// Symmetric per-row quantisation: scale[n] = max_k |w[n, k]| / 127 (1 for an all-zero
    /// row), q[n, k] = round(w[n, k] / scale[n]) ∈ [−127, 127], ties away from zero.
    /// Returns the largest absolute reconstruction error |q·scale − w| over the matrix, for
    /// the converter to report.
    @discardableResult
    public static func quantizeRowsQ8(_ src: UnsafePointer<Float>, rows: Int, cols: Int,
                                      values: UnsafeMutablePointer<Int8>,
                                      scales: UnsafeMutablePointer<Float>) -> Float {
        var worst: Float = 0
        for n in 0..<rows {
            let row = src + n * cols
            var maxAbs: Float = 0
            for k in 0..<cols { maxAbs = max(maxAbs, abs(row[k])) }
            let scale: Float = maxAbs > 0 ? maxAbs / 127 : 1
            let inverse = 1 / scale
            scales[n] = scale
            for k in 0..<cols {
                let q = min(max((row[k] * inverse).rounded(.toNearestOrAwayFromZero), -127), 127)
                values[n * cols + k] = Int8(q)
                worst = max(worst, abs(q * scale - row[k]))
            }
        }
        return worst
    }

    /// Float → IEEE half, round to nearest even (F16C `vcvtps2ph` on x86_64).
    public static func floatToHalf(_ src: UnsafePointer<Float>, count: Int, output dst: UnsafeMutablePointer<Float16>) {
        typealias V = NativeF32
        var i = 0
        while i + V.scalarCount <= count {
            let h = NativeF16(V.load(src + i))
            UnsafeMutableRawPointer(dst + i).storeBytes(of: h, as: NativeF16.self)
            i += V.scalarCount
        }
        while i < count {
            dst[i] = Float16(src[i])
            i += 1
        }
    }

    /// IEEE half → Float (exact).
    public static func halfToFloat(_ src: UnsafePointer<Float16>, count: Int, output dst: UnsafeMutablePointer<Float>) {
        switch Kernels.variant.vectorMath {
        case .avx512: return pd_half_to_float_avx512(UnsafeRawPointer(src).assumingMemoryBound(to: UInt16.self), dst, count)
        case .avx2: return pd_half_to_float_avx2(UnsafeRawPointer(src).assumingMemoryBound(to: UInt16.self), dst, count)
        case .swift: break
        }
        typealias V = NativeF32
        var i = 0
        while i + V.scalarCount <= count {
            V.loadHalf(UnsafeRawPointer(src + i)).store(dst + i)
            i += V.scalarCount
        }
        while i < count {
            dst[i] = Float(src[i])
            i += 1
        }
    }
}
