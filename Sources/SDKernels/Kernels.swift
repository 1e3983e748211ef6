/// The kernels the models call. Same contracts as `ReferenceKernels` (see there for the
/// layouts), plus a thread pool. Every function here is tested against its reference.
public enum Kernels {
    public static func linear(_ w: WeightMatrix, input x: UnsafePointer<Float>, columns: Int,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                              output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        Gemm.linear(NativeF32.self, w, input: x, columns: columns, bias: bias, residual: residual, output: y, pool: pool)
    }

    public static func conv2d(_ w: WeightMatrix, kernelSize: Int, stride: Int, padding: Int,
                              input x: UnsafePointer<Float>, channels: Int, batch: Int,
                              height: Int, width: Int,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                              output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        ReferenceKernels.conv2d(w, kernelSize: kernelSize, stride: stride, padding: padding, input: x,
                                channels: channels, batch: batch, height: height, width: width,
                                bias: bias, residual: residual, output: y)
    }

    public static func groupNorm(_ x: UnsafePointer<Float>, channels: Int, batch: Int, pixels: Int,
                                 groups: Int, eps: Float, gamma: UnsafePointer<Float>,
                                 beta: UnsafePointer<Float>, silu: Bool,
                                 output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        ReferenceKernels.groupNorm(x, channels: channels, batch: batch, pixels: pixels, groups: groups,
                                   eps: eps, gamma: gamma, beta: beta, silu: silu, output: y)
    }

    public static func layerNorm(_ x: UnsafePointer<Float>, channels: Int, columns: Int, eps: Float,
                                 gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                 output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        ReferenceKernels.layerNorm(x, channels: channels, columns: columns, eps: eps, gamma: gamma,
                                   beta: beta, output: y)
    }

    public static func attention(query q: UnsafePointer<Float>, key k: UnsafePointer<Float>,
                                 value v: UnsafePointer<Float>, heads: Int, headDim: Int,
                                 batch: Int, queryTokens: Int, keyTokens: Int, causal: Bool,
                                 output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        ReferenceKernels.attention(query: q, key: k, value: v, heads: heads, headDim: headDim, batch: batch,
                                   queryTokens: queryTokens, keyTokens: keyTokens, causal: causal, output: y)
    }

    public static func geglu(_ x: UnsafePointer<Float>, features: Int, columns: Int,
                             output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        ReferenceKernels.geglu(x, features: features, columns: columns, output: y)
    }

    public enum Activation: Sendable { case gelu, quickGelu, silu }

    /// In place: x[i] = f(x[i]) for i in 0..<count.
    public static func activate(_ f: Activation, _ x: UnsafeMutablePointer<Float>, count: Int, pool: ThreadPool) {
        switch f {
        case .gelu: for i in 0..<count { x[i] = ReferenceKernels.gelu(x[i]) }
        case .quickGelu: for i in 0..<count { x[i] = ReferenceKernels.quickGelu(x[i]) }
        case .silu: for i in 0..<count { x[i] = ReferenceKernels.silu(x[i]) }
        }
    }

    /// y[i] = a[i] + b[i]; y may alias a or b.
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int,
                           output y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] = a[i] + b[i] }
    }

    public static func upsampleNearest2x(_ x: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                                         output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        ReferenceKernels.upsampleNearest2x(x, planes: planes, height: height, width: width, output: y)
    }
}
