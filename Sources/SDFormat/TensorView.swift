import SDKernels

/// Element types of stored tensors.
public enum TensorDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"
    /// int8 rows with one f32 scale per row (first axis); the scales are stored separately.
    case q8 = "Q8"

    /// Bytes per element (1 for q8, whose scales are stored separately).
    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool, .q8: return 1
        }
    }

    /// Whether the type is a floating-point type (f32, f16, bf16, f64).
    public var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 || self == .f64 }
}

/// A tensor inside a mapped file: no copy is made.
public struct TensorView: @unchecked Sendable {
    /// Element type.
    public let dtype: TensorDType
    /// Dimensions, outermost first.
    public let shape: [Int]
    /// Start of the element data (memory its owner keeps alive, usually a mapped file).
    public let data: UnsafeRawPointer
    /// Per-row scales for `.q8`.
    public let scales: UnsafePointer<Float>?

    /// A view of memory the caller keeps alive; `scales` is required for `.q8`.
    public init(dtype: TensorDType, shape: [Int], data: UnsafeRawPointer, scales: UnsafePointer<Float>? = nil) {
        self.dtype = dtype
        self.shape = shape
        self.data = data
        self.scales = scales
    }

    /// Elements in the tensor: the product of `shape`.
    public var elementCount: Int { shape.reduce(1, *) }
    /// Bytes of element data (scales not included).
    public var byteCount: Int { elementCount * dtype.byteSize }

    /// Element i (flat index) as Float.
    @inline(__always)
    public func float(at i: Int) -> Float {
        switch dtype {
        case .f32: return data.load(fromByteOffset: i * 4, as: Float.self)
        case .f16: return Float(data.load(fromByteOffset: i * 2, as: Float16.self))
        case .bf16: return Float(bitPattern: UInt32(data.load(fromByteOffset: i * 2, as: UInt16.self)) << 16)
        case .f64: return Float(data.load(fromByteOffset: i * 8, as: Double.self))
        case .q8:
            let cols = shape.count > 0 && shape[0] > 0 ? elementCount / shape[0] : 1
            return Float(data.load(fromByteOffset: i, as: Int8.self)) * scales![i / cols]
        case .i64: return Float(data.load(fromByteOffset: i * 8, as: Int64.self))
        case .i32: return Float(data.load(fromByteOffset: i * 4, as: Int32.self))
        case .i16: return Float(data.load(fromByteOffset: i * 2, as: Int16.self))
        case .i8: return Float(data.load(fromByteOffset: i, as: Int8.self))
        case .u8: return Float(data.load(fromByteOffset: i, as: UInt8.self))
        case .bool: return data.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0
        }
    }

    /// A Float copy: for small tensors (norms, biases, embeddings rows).
    public func floats() -> [Float] {
        (0..<elementCount).map { float(at: $0) }
    }

    /// The tensor as a `[shape[0], rest]` weight matrix read in place, if its type allows.
    public var matrix: WeightMatrix? {
        guard let rows = shape.first, rows > 0 else { return nil }
        let cols = elementCount / rows
        switch dtype {
        case .f32: return WeightMatrix(type: .f32, rows: rows, cols: cols, data: data)
        case .f16: return WeightMatrix(type: .f16, rows: rows, cols: cols, data: data)
        case .q8: return WeightMatrix(type: .q8, rows: rows, cols: cols, data: data, scales: scales)
        default: return nil
        }
    }
}

/// Anything that hands out weights by their diffusers state-dict key.
public protocol WeightSource: AnyObject {
    var sourceName: String { get }
    var tensorKeys: [String] { get }
    func tensor(_ key: String) -> TensorView?
}

/// Tensors looked up by key and checked against the shape a model config implies.
public extension WeightSource {
    /// The tensor `key`, checked against the shape the model config implies.
    func require(_ key: String, shape: [Int]) throws -> TensorView {
        guard let t = tensor(key) else { throw FormatError(sourceName, "missing tensor \(key)") }
        guard t.shape == shape else {
            throw FormatError(sourceName, "tensor \(key) has shape \(t.shape), the config implies \(shape)")
        }
        return t
    }

    /// A weight matrix `[rows, cols…]` for a GEMM or convolution.
    func requireMatrix(_ key: String, shape: [Int]) throws -> WeightMatrix {
        let t = try require(key, shape: shape)
        guard let m = t.matrix else { throw FormatError(sourceName, "tensor \(key) has unsupported dtype \(t.dtype.rawValue)") }
        return m
    }

    /// A small tensor copied to Float (biases, norm weights, embeddings).
    func requireFloats(_ key: String, shape: [Int]) throws -> [Float] {
        try require(key, shape: shape).floats()
    }
}
