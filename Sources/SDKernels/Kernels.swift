#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The kernels the models call. Same contracts as `ReferenceKernels` (see there for the
/// layouts), plus a thread pool. Every function here is tested against its reference
/// (Tests/SDKernelsTests); the implementations live in Gemm, Conv, Attention,
/// Normalization and Elementwise, written against the architecture's `NativeF32`
/// (NativeVector.swift).
public enum Kernels {
    /// y[N, P] = W[N, K] · x[K, P] (+ bias[n]) (+ residual[n, p]); residual may alias y
    /// (y must not alias x). Rows of x are `inputStride` floats apart, rows of y and of the
    /// residual `outputStride` (default: `columns` each): column ranges of wider tensors
    /// are multiplied in place.
    public static func linear(_ w: WeightMatrix, input x: UnsafePointer<Float>, columns: Int,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                              output y: UnsafeMutablePointer<Float>, pool: ThreadPool,
                              inputStride: Int? = nil, outputStride: Int? = nil) {
        if isPlanning { return }
        Gemm.linear(w, input: x, columns: columns, bias: bias, residual: residual, output: y, pool: pool,
                    inputStride: inputStride, outputStride: outputStride)
    }

    /// How `conv2d` computes 3×3, stride 1, padding 1 convolutions.
    public enum ConvAlgorithm: Sendable {
        /// With f32 products Winograd F(4×4, 3×3) where it measured faster
        /// (`Winograd43.pays`); else F(2×2, 3×3) where that did (`Winograd.pays`); else direct.
        case automatic
        /// Implicit GEMM (exact summation of the 9·Cin products per output).
        case direct
        /// Winograd F(2×2, 3×3) whenever it applies (tests, benchmarks).
        case winograd
        /// Winograd F(4×4, 3×3) whenever it applies with f32 products (tests, benchmarks).
        case winograd43
    }

    /// The choice `conv2d` uses; tests and benchmarks set `.direct` to compare.
    nonisolated(unsafe) public static var convAlgorithm: ConvAlgorithm = .automatic

    /// While true, every function here called from this thread returns at once without
    /// touching memory: the models run through to record their activation allocations
    /// (SDModels' `ActivationArena.plan`). Per thread, so a pipeline that plans does not
    /// silence the kernels of another one running on another thread.
    public static var isPlanning: Bool {
        get { pthread_getspecific(planningKey) != nil }
        set { pthread_setspecific(planningKey, newValue ? UnsafeRawPointer(bitPattern: 1) : nil) }
    }

    private static let planningKey: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key, nil)
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return key
    }()

    /// Convolution, any square kernel, stride and padding: 3×3 stride 1 padding 1 by
    /// Winograd F(2×2, 3×3) per `convAlgorithm`, otherwise implicit GEMM; 1×1 stride 1 goes
    /// straight to `linear`. residual may alias y (y must not alias x).
    public static func conv2d(_ w: WeightMatrix, kernelSize: Int, stride: Int, padding: Int,
                              input x: UnsafePointer<Float>, channels: Int, batch: Int,
                              height: Int, width: Int,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                              output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if isPlanning { return }
        let geometry = Conv.Geometry(channels: channels, batch: batch, height: height, width: width,
                                     kernel: kernelSize, stride: stride, padding: padding)
        Conv.conv2d(w, geometry: geometry, input: x, bias: bias, residual: residual, output: y,
                    pool: pool, algorithm: convAlgorithm)
    }

    /// y may alias x.
    public static func groupNorm(_ x: UnsafePointer<Float>, channels: Int, batch: Int, pixels: Int,
                                 groups: Int, eps: Float, gamma: UnsafePointer<Float>,
                                 beta: UnsafePointer<Float>, silu: Bool,
                                 output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if isPlanning { return }
        Normalization.groupNorm(x, channels: channels, batch: batch, pixels: pixels, groups: groups,
                                eps: eps, gamma: gamma, beta: beta, silu: silu, output: y, pool: pool)
    }

    /// y may alias x.
    public static func layerNorm(_ x: UnsafePointer<Float>, channels: Int, columns: Int, eps: Float,
                                 gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                 output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if isPlanning { return }
        Normalization.layerNorm(x, channels: channels, columns: columns, eps: eps, gamma: gamma,
                                beta: beta, output: y, pool: pool)
    }

    /// Flash-style attention; y must not alias q, k or v.
    public static func attention(query q: UnsafePointer<Float>, key k: UnsafePointer<Float>,
                                 value v: UnsafePointer<Float>, heads: Int, headDim: Int,
                                 batch: Int, queryTokens: Int, keyTokens: Int, causal: Bool,
                                 output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if isPlanning { return }
        Attention.attention(query: q, key: k, value: v, heads: heads, headDim: headDim, batch: batch,
                            queryTokens: queryTokens, keyTokens: keyTokens, causal: causal, output: y, pool: pool)
    }

    /// y may alias the value half of x (rows 0..<F), not the gate half.
    public static func geglu(_ x: UnsafePointer<Float>, features: Int, columns: Int,
                             output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if isPlanning { return }
        Elementwise.geglu(x, features: features, columns: columns, output: y, pool: pool)
    }

    /// An elementwise activation: exact GELU, CLIP's QuickGELU, or SiLU.
    public enum Activation: Sendable { case gelu, quickGelu, silu }

    /// In place: x[i] = f(x[i]) for i in 0..<count.
    public static func activate(_ f: Activation, _ x: UnsafeMutablePointer<Float>, count: Int, pool: ThreadPool) {
        if isPlanning { return }
        Elementwise.activate(f, x, count: count, pool: pool)
    }

    /// y[i] = a[i] + b[i]; y may alias a or b. Threaded when a pool is given.
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int,
                           output y: UnsafeMutablePointer<Float>, pool: ThreadPool? = nil) {
        if isPlanning { return }
        Elementwise.add(a, b, count: count, output: y, pool: pool)
    }

    /// Nearest-neighbour 2× up-sampling: x: [planes, H, W] → y: [planes, 2H, 2W].
    public static func upsampleNearest2x(_ x: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                                         output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if isPlanning { return }
        Elementwise.upsampleNearest2x(x, planes: planes, height: height, width: width, output: y, pool: pool)
    }
}
