// Matches diffusers.models.downsampling.Downsample2D and upsampling.Upsample2D (use_conv).
import SDKernels

struct Downsample2D {
    let conv: Conv2d  // conv: [C, C, 3, 3], stride 2
    /// diffusers' downsample_padding 0 pads one zero row/column at the bottom/right only.
    let asymmetricPadding: Bool

    init(_ w: Weights, channels: Int, padding: Int) throws {
        conv = try Conv2d(w["conv"], in: channels, out: channels, kernelSize: 3, stride: 2, padding: padding)
        asymmetricPadding = padding == 0
    }

    /// x: [C, B, H, W] → [C, B, ⌊(H+1)/2⌋, ⌊(W+1)/2⌋] (padding 1).
    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        guard asymmetricPadding else { return conv(x, pool: pool) }
        let padded = Tensor(channels: x.channels, batch: x.batch, height: x.height + 1, width: x.width + 1)
        padded.data.initialize(repeating: 0, count: padded.count)
        for plane in 0..<x.channels * x.batch {
            for row in 0..<x.height {
                (padded.data + (plane * padded.height + row) * padded.width)
                    .update(from: x.data + (plane * x.height + row) * x.width, count: x.width)
            }
        }
        return conv(padded, pool: pool)
    }
}

struct Upsample2D {
    let conv: Conv2d  // conv: [C, C, 3, 3]

    init(_ w: Weights, channels: Int) throws {
        conv = try Conv2d(w["conv"], in: channels, out: channels, kernelSize: 3, padding: 1)
    }

    /// Nearest up-sampling to `height × width` (2× unless the UNet passes its skip
    /// connection's size, as diffusers does for sizes that are not multiples of 2^levels),
    /// then the 3×3 convolution. x: [C, B, h, w] → [C, B, height, width].
    func callAsFunction(_ x: Tensor, height: Int, width: Int, pool: ThreadPool) -> Tensor {
        let up = Tensor(channels: x.channels, batch: x.batch, height: height, width: width)
        if height == 2 * x.height && width == 2 * x.width {
            Kernels.upsampleNearest2x(x.pointer, planes: x.channels * x.batch, height: x.height,
                                      width: x.width, output: up.data, pool: pool)
        } else {
            resizeNearest(x, into: up)
        }
        return conv(up, pool: pool)
    }

    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        self(x, height: 2 * x.height, width: 2 * x.width, pool: pool)
    }

    /// torch.nn.functional.interpolate(mode="nearest", size=…): source index
    /// ⌊dst · (in/out)⌋ with the ratio in Float, as ATen computes it.
    private func resizeNearest(_ x: Tensor, into y: Tensor) {
        let sy = Float(x.height) / Float(y.height), sx = Float(x.width) / Float(y.width)
        let rows = (0..<y.height).map { min(Int((Float($0) * sy).rounded(.down)), x.height - 1) }
        let cols = (0..<y.width).map { min(Int((Float($0) * sx).rounded(.down)), x.width - 1) }
        for plane in 0..<x.channels * x.batch {
            let src = x.data + plane * x.pixels, dst = y.data + plane * y.pixels
            for oy in 0..<y.height {
                for ox in 0..<y.width { dst[oy * y.width + ox] = src[rows[oy] * x.width + cols[ox]] }
            }
        }
    }
}
