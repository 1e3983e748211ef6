// The torch.nn layers the models are built of (Linear, Conv2d, GroupNorm, LayerNorm), each
// bound to its "weight"/"bias" keys and run on the channel-major layout of SDKernels.
// Linear and Conv2d bracket each call with their residency scope, so that under `stream`
// a large matrix leaves memory as soon as its product is done (the raw-pointer `apply`
// used inside chunk loops leaves that to the enclosing module's scope).
import SDFormat
import SDKernels

/// torch.nn.Linear over the columns of `[in, cols]`.
struct Linear {
    let weight: WeightMatrix  // weight: [out, in]
    let bias: [Float]?        // bias: [out]
    let scope: ResidencyScope

    init(_ w: Weights, in inFeatures: Int, out outFeatures: Int, bias hasBias: Bool = true) throws {
        weight = try w.matrix("weight", [outFeatures, inFeatures])
        bias = hasBias ? try w.vector("bias", outFeatures) : nil
        scope = w.scope
    }

    /// A 1×1 convolution is the same product; `proj_in`/`proj_out` use this form when
    /// `use_linear_projection` is false.
    init(conv1x1 w: Weights, in inFeatures: Int, out outFeatures: Int) throws {
        weight = try w.matrix("weight", [outFeatures, inFeatures, 1, 1])
        bias = try w.vector("bias", outFeatures)
        scope = w.scope
    }

    var inFeatures: Int { weight.cols }
    var outFeatures: Int { weight.rows }

    /// x: [in, B, H, W] → [out, B, H, W]; adds `residual` ([out, …]) when given.
    func callAsFunction(_ x: Tensor, residual: Tensor? = nil, pool: ThreadPool) -> Tensor {
        precondition(x.channels == inFeatures)
        let y = Tensor(channels: outFeatures, like: x)
        apply(x, residual: residual, into: y, pool: pool)
        return y
    }

    /// Like `callAsFunction` into an existing buffer; `residual` may be `y` itself.
    func apply(_ x: Tensor, residual: Tensor?, into y: Tensor, pool: ThreadPool) {
        precondition(x.columns == y.columns && y.channels == outFeatures)
        scope.using { apply(x.pointer, columns: x.columns, residual: residual?.pointer, into: y.data, pool: pool) }
    }

    /// On raw `[in, columns]` → `[out, columns]` buffers; `residual` may be `y`. Column
    /// ranges of wider tensors: rows of x `inputStride` apart, of y and the residual
    /// `outputStride` (default: `columns`).
    func apply(_ x: UnsafePointer<Float>, columns: Int, residual: UnsafePointer<Float>?,
               into y: UnsafeMutablePointer<Float>, pool: ThreadPool, inputStride: Int? = nil,
               outputStride: Int? = nil) {
        withOptionalPointer(bias) { b in
            Kernels.linear(weight, input: x, columns: columns, bias: b, residual: residual, output: y, pool: pool,
                           inputStride: inputStride, outputStride: outputStride)
        }
    }
}

/// torch.nn.Conv2d with a square kernel and symmetric zero padding.
struct Conv2d {
    let weight: WeightMatrix  // weight: [out, in, k, k] seen as [out, in·k·k]
    let bias: [Float]         // bias: [out]
    let kernelSize: Int
    let stride: Int
    let padding: Int
    let scope: ResidencyScope

    /// Without `bias` (TAESD's inner convolutions) the layer adds zeros.
    init(_ w: Weights, in inChannels: Int, out outChannels: Int, kernelSize: Int,
         stride: Int = 1, padding: Int, bias hasBias: Bool = true) throws {
        weight = try w.matrix("weight", [outChannels, inChannels, kernelSize, kernelSize])
        bias = hasBias ? try w.vector("bias", outChannels) : [Float](repeating: 0, count: outChannels)
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        scope = w.scope
    }

    var inChannels: Int { weight.cols / (kernelSize * kernelSize) }
    var outChannels: Int { weight.rows }

    func outputSize(_ size: Int) -> Int { (size + 2 * padding - kernelSize) / stride + 1 }

    /// x: [in, B, H, W] → [out, B, Ho, Wo]. `bias` replaces the layer's bias when given
    /// (ResnetBlock2D folds its time embedding into it); `residual` is added at the end.
    func callAsFunction(_ x: Tensor, bias overrideBias: [Float]? = nil, residual: Tensor? = nil,
                        pool: ThreadPool) -> Tensor {
        precondition(x.channels == inChannels)
        let y = Tensor(channels: outChannels, batch: x.batch, height: outputSize(x.height), width: outputSize(x.width))
        apply(x, bias: overrideBias, residual: residual, into: y, pool: pool)
        return y
    }

    /// Into an existing `y`; `residual` may be `y` itself (y must not be x).
    func apply(_ x: Tensor, bias overrideBias: [Float]? = nil, residual: Tensor?, into y: Tensor, pool: ThreadPool) {
        precondition(x.channels == inChannels && y !== x)
        precondition(y.channels == outChannels && y.batch == x.batch
                     && y.height == outputSize(x.height) && y.width == outputSize(x.width))
        precondition(residual == nil || residual!.count == y.count)
        scope.using {
            (overrideBias ?? bias).withUnsafeBufferPointer { b in
                Kernels.conv2d(weight, kernelSize: kernelSize, stride: stride, padding: padding,
                               input: x.pointer, channels: x.channels, batch: x.batch,
                               height: x.height, width: x.width, bias: b.baseAddress,
                               residual: residual?.pointer, output: y.data, pool: pool)
            }
        }
    }
}

/// torch.nn.GroupNorm, optionally followed by SiLU in the same pass.
struct GroupNorm {
    let weight: [Float]  // weight: [C]
    let bias: [Float]    // bias: [C]
    let groups: Int
    let eps: Float

    init(_ w: Weights, channels: Int, groups: Int, eps: Float) throws {
        guard groups > 0, channels % groups == 0 else {
            throw FormatError(w.source.sourceName, "\(w.prefix)*: \(channels) channels do not split into \(groups) groups")
        }
        weight = try w.vector("weight", channels)
        bias = try w.vector("bias", channels)
        self.groups = groups
        self.eps = eps
    }

    /// x: [C, B, H, W] → same shape.
    func callAsFunction(_ x: Tensor, silu: Bool = false, pool: ThreadPool) -> Tensor {
        let y = Tensor(channels: x.channels, like: x)
        apply(x, silu: silu, into: y, pool: pool)
        return y
    }

    /// Into `y`, which may be `x` itself (an intermediate nobody reads again).
    func apply(_ x: Tensor, silu: Bool = false, into y: Tensor, pool: ThreadPool) {
        precondition(x.channels == weight.count && y.count == x.count)
        weight.withUnsafeBufferPointer { g in
            bias.withUnsafeBufferPointer { b in
                Kernels.groupNorm(x.pointer, channels: x.channels, batch: x.batch, pixels: x.pixels,
                                  groups: groups, eps: eps, gamma: g.baseAddress!, beta: b.baseAddress!,
                                  silu: silu, output: y.data, pool: pool)
            }
        }
    }
}

/// torch.nn.LayerNorm over the channels of each column.
struct LayerNorm {
    let weight: [Float]  // weight: [C]
    let bias: [Float]    // bias: [C]
    let eps: Float

    init(_ w: Weights, channels: Int, eps: Float) throws {
        weight = try w.vector("weight", channels)
        bias = try w.vector("bias", channels)
        self.eps = eps
    }

    /// x: [C, cols] → same shape.
    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        precondition(x.channels == weight.count)
        let y = Tensor(channels: x.channels, like: x)
        weight.withUnsafeBufferPointer { g in
            bias.withUnsafeBufferPointer { b in
                Kernels.layerNorm(x.pointer, channels: x.channels, columns: x.columns, eps: eps,
                                  gamma: g.baseAddress!, beta: b.baseAddress!, output: y.data, pool: pool)
            }
        }
        return y
    }
}

@inline(__always)
func withOptionalPointer<R>(_ values: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let values else { return body(nil) }
    return values.withUnsafeBufferPointer { body($0.baseAddress) }
}
