/// How a weight matrix is stored in the model file.
public enum WeightType: UInt8, Sendable {
    case f32 = 0
    case f16 = 1
    /// int8 values with one f32 scale per row (output channel): w[n, k] ≈ q[n, k] · scale[n].
    case q8 = 2
}

/// A read-only `[rows × cols]` row-major weight matrix, usually pointing into the mapped
/// model file. `rows` are output features (channels) and `cols` the reduction length:
/// a PyTorch linear weight `[out, in]` or a conv weight `[out, in, kh, kw]` flattened to
/// `[out, in·kh·kw]`, both used as they are stored.
public struct WeightMatrix: @unchecked Sendable {
    /// How the elements are stored.
    public let type: WeightType
    /// Rows: output features.
    public let rows: Int
    /// Columns: input features (in · kh · kw for a conv).
    public let cols: Int
    /// The first element, row-major; memory the caller keeps alive (usually a mapped file).
    public let data: UnsafeRawPointer
    /// `rows` scales for `.q8`, nil otherwise.
    public let scales: UnsafePointer<Float>?

    /// A view of `rows` × `cols` stored weights; `.q8` needs `scales`.
    public init(type: WeightType, rows: Int, cols: Int, data: UnsafeRawPointer, scales: UnsafePointer<Float>? = nil) {
        precondition(type != .q8 || scales != nil, "q8 weights need scales")
        self.type = type
        self.rows = rows
        self.cols = cols
        self.data = data
        self.scales = scales
    }

    /// Element (n, k) as Float; the scalar reference path.
    @inline(__always)
    public func element(_ n: Int, _ k: Int) -> Float {
        let i = n * cols + k
        switch type {
        case .f32: return data.load(fromByteOffset: i * 4, as: Float.self)
        case .f16: return Float(data.load(fromByteOffset: i * 2, as: Float16.self))
        case .q8: return Float(data.load(fromByteOffset: i, as: Int8.self)) * scales![n]
        }
    }

    /// Writes rows [row, row + count) as Float into `out` (count × cols).
    public func dequantizeRows(_ row: Int, count: Int, into out: UnsafeMutablePointer<Float>) {
        for n in 0..<count {
            for k in 0..<cols { out[n * cols + k] = element(row + n, k) }
        }
    }
}
