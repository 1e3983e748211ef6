// Matches diffusers.models.downsampling.Downsample2D and upsampling.Upsample2D (use_conv).
import SDKernels

struct Downsample2D {
    let conv: Conv2d  // conv: [C, C, 3, 3], stride 2
    /// diffusers' downsample_padding 0 pads one zero row/column at the bottom/right only.
    let asymmetricPadding: Bool
    let scope: ResidencyScope  // this layer's weight pages

    init(_ w: Weights, channels: Int, padding: Int) throws {
        conv = try Conv2d(w["conv"], in: channels, out: channels, kernelSize: 3, stride: 2, padding: padding)
        asymmetricPadding = padding == 0
        scope = w.scope
    }

    /// x: [C, B, H, W] → [C, B, ⌊(H+1)/2⌋, ⌊(W+1)/2⌋] (padding 1).
    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        scope.using { downsample(x, pool: pool) }
    }

    private func downsample(_ x: Tensor, pool: ThreadPool) -> Tensor {
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
    let conv: Conv2d           // conv: [C, C, 3, 3]
    let scope: ResidencyScope  // this layer's weight pages
    let memory: MemoryOptions

    init(_ w: Weights, channels: Int) throws {
        conv = try Conv2d(w["conv"], in: channels, out: channels, kernelSize: 3, padding: 1)
        scope = w.scope
        memory = w.memory
    }

    /// Nearest up-sampling to `height × width` (2× unless the UNet passes its skip
    /// connection's size, as diffusers does for sizes that are not multiples of 2^levels),
    /// then the 3×3 convolution. x: [C, B, h, w] → [C, B, height, width].
    ///
    /// The up-sampled image is 4× x and only feeds the convolution, so it is made in bands
    /// of output rows (plus the one row above and below that a 3×3 kernel reads): each
    /// band's convolution gives exactly those rows of the whole one.
    func callAsFunction(_ x: Tensor, height: Int, width: Int, pool: ThreadPool) -> Tensor {
        scope.using {
            let bandRows = max(1, memory.chunkFloats / max(1, x.channels * x.batch * width) - 2)
            guard bandRows < height else {
                let up = Tensor(channels: x.channels, batch: x.batch, height: height, width: width)
                if height == 2 * x.height && width == 2 * x.width {
                    Kernels.upsampleNearest2x(x.pointer, planes: x.channels * x.batch, height: x.height,
                                              width: x.width, output: up.data, pool: pool)
                } else {
                    resizeNearest(x, rows: 0..<height, height: height, into: up)
                }
                return conv(up, pool: pool)
            }
            let y = Tensor(channels: x.channels, batch: x.batch, height: height, width: width)
            for r0 in stride(from: 0, to: height, by: bandRows) {
                let r1 = min(r0 + bandRows, height)
                let lo = max(0, r0 - 1), hi = min(height, r1 + 1)
                let band = Tensor(channels: x.channels, batch: x.batch, height: hi - lo, width: width)
                resizeNearest(x, rows: lo..<hi, height: height, into: band)
                let out = conv(band, pool: pool)
                for plane in 0..<x.channels * x.batch {
                    (y.data + (plane * height + r0) * width)
                        .update(from: out.data + (plane * out.height + r0 - lo) * width, count: (r1 - r0) * width)
                }
            }
            return y
        }
    }

    func callAsFunction(_ x: Tensor, pool: ThreadPool) -> Tensor {
        self(x, height: 2 * x.height, width: 2 * x.width, pool: pool)
    }

    /// Rows `rows` of torch.nn.functional.interpolate(mode="nearest", size=(height, y.width))
    /// into y: source index ⌊dst · (in/out)⌋ with the ratio in Float, as ATen computes it.
    private func resizeNearest(_ x: Tensor, rows: Range<Int>, height: Int, into y: Tensor) {
        precondition(y.height == rows.count)
        let sy = Float(x.height) / Float(height), sx = Float(x.width) / Float(y.width)
        let sourceRows = rows.map { min(Int((Float($0) * sy).rounded(.down)), x.height - 1) }
        let sourceCols = (0..<y.width).map { min(Int((Float($0) * sx).rounded(.down)), x.width - 1) }
        // 2× across (the usual case): each value twice, a loop the compiler vectorizes
        // instead of a gather through the index array.
        let doubles = y.width == 2 * x.width
        sourceCols.withUnsafeBufferPointer { cols in
            for plane in 0..<x.channels * x.batch {
                let src = x.data + plane * x.pixels, dst = y.data + plane * y.pixels
                for (oy, sourceRow) in sourceRows.enumerated() {
                    let dstRow = dst + oy * y.width
                    if oy > 0 && sourceRows[oy - 1] == sourceRow {  // the same source row: copy the row above
                        dstRow.update(from: dstRow - y.width, count: y.width)
                        continue
                    }
                    let srcRow = src + sourceRow * x.width
                    if doubles {
                        for i in 0..<x.width {
                            let v = srcRow[i]
                            dstRow[2 * i] = v
                            dstRow[2 * i + 1] = v
                        }
                    } else {
                        for ox in 0..<y.width { dstRow[ox] = srcRow[cols[ox]] }
                    }
                }
            }
        }
    }
}
