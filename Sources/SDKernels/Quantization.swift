/// Weight quantisation used by the converter.
public enum Quantization {
    /// Symmetric per-row int8: scale = max|w| / 127, q = round(w / scale).
    /// src: [rows × cols]; values: [rows × cols]; scales: [rows].
    public static func quantizeRowsQ8(_ src: UnsafePointer<Float>, rows: Int, cols: Int,
                                      values: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float>) {
        for r in 0..<rows {
            let row = src + r * cols
            var maxAbs: Float = 0
            for k in 0..<cols { maxAbs = max(maxAbs, abs(row[k])) }
            let scale = maxAbs / 127
            scales[r] = scale
            let inverse: Float = scale > 0 ? 1 / scale : 0
            for k in 0..<cols {
                values[r * cols + k] = Int8(clamping: Int((row[k] * inverse).rounded()))
            }
        }
    }
}
