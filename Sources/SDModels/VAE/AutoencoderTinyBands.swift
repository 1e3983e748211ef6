// Row-band decoding for TAESD: the decoder's activations then depend on the band, not on
// the image (issue 10: SD-Turbo with `--vae taesd --memory stream` within 128 MiB at 512²).
// Unlike VAETiling's blended tiles it is exact: DecoderTiny has no normalisation and no
// attention, so each output row depends on a fixed window of input rows, and a band of
// output rows computed from the input rows it depends on is the whole decode's.
import SDKernels

/// How many output rows of each decoder stage `AutoencoderTiny.decode` computes at a time.
enum TinyDecodeBands {
    /// Bands whose largest activation stays within this many bytes (`Int.max`: no bands).
    case budget(bytes: Int)
    /// Bands of this many rows (rounded up to even): tests use it for many bands.
    case rows(Int)
}

/// One resolution of DecoderTiny: its layers from an up-sampling (or the first layer) up to
/// the next up-sampling. A stage's output is small next to the activations inside it (64
/// channels at half the image's side at most, then the 3-channel image), so it is made
/// whole, band by band, and the next stage reads its bands from it.
struct TinyDecoderStage {
    let layers: [TinyLayer]

    /// The decoder's layers split before each up-sampling.
    static func split(_ layers: [TinyLayer]) -> [TinyDecoderStage] {
        var stages: [[TinyLayer]] = [[]]
        for layer in layers {
            if case .upsample = layer, !stages[stages.count - 1].isEmpty { stages.append([]) }
            stages[stages.count - 1].append(layer)
        }
        return stages.map(TinyDecoderStage.init)
    }

    /// Output rows (and columns) per input row.
    var scale: Int {
        if case .upsample = layers.first { return 2 }
        return 1
    }

    /// The channels of the stage's output, given its input's.
    func outChannels(input: Int) -> Int { layers.reduce(input) { $1.outChannels ?? $0 } }

    /// What each layer's input must hold for `band` of the stage's output: element i is
    /// layer i's input rows, the last element `band` itself.
    func neededRows(for band: Range<Int>, inputHeight: Int) -> [Range<Int>] {
        var needed = [band]
        var height = scale * inputHeight
        for layer in layers.reversed() {
            if case .upsample = layer { height = inputHeight }
            needed.append(layer.inputRows(for: needed[needed.count - 1], inputHeight: height))
        }
        return needed.reversed()
    }

    /// Rows of the largest band activation beyond the band's own: the halo on both sides.
    var haloRows: Int {
        let probe = 1 << 20  // a band far from both borders of a tall image
        let needed = neededRows(for: probe..<(probe + 2), inputHeight: 1 << 21)
        return needed.map { $0.count }.max()! - 2
    }

    /// Output rows per band (even, so that every band starts on an even row): the most the
    /// budget allows at this width and batch, spread evenly over the bands; at least the
    /// halo, so that recomputed rows never outnumber the band's own.
    func bandRows(_ bands: TinyDecodeBands, input: Tensor) -> Int {
        let height = scale * input.height
        var most: Int
        switch bands {
        case .rows(let rows):
            most = rows
        case .budget(let bytes):
            let widest = layers.reduce(input.channels) { max($0, $1.outChannels ?? 0) }
            let rowBytes = widest * input.batch * scale * input.width * MemoryLayout<Float>.stride
            let halo = haloRows
            most = max(2, halo, bytes / rowBytes - halo)
        }
        precondition(most >= 1, "bands of \(most) rows")
        if most >= height { return height }
        let count = (height + most - 1) / most
        return ((height + count - 1) / count + 1) & ~1
    }
}

extension TinyLayer {
    /// Output channels, for the layers that change them.
    var outChannels: Int? {
        switch self {
        case .conv(let conv): return conv.outChannels
        case .block(let block): return block.conv4.outChannels
        case .relu, .upsample: return nil
        }
    }

    /// The rows of this layer's input, `inputHeight` rows tall, that rows `rows` of its
    /// output depend on. A convolution of a crop is right except within its reach of a
    /// cropped edge (zero padding stands in for the rows cut off), so each layer takes its
    /// reach more rows on both sides and the caller crops its output back. The start is
    /// rounded down to even so that the convolutions' 2×2 Winograd tiles cover the rows
    /// they cover in the whole decode.
    func inputRows(for rows: Range<Int>, inputHeight: Int) -> Range<Int> {
        let reach: Int
        switch self {
        case .upsample: return (rows.lowerBound / 2)..<((rows.upperBound + 1) / 2)
        case .relu: return rows
        case .conv(let conv):
            precondition(conv.stride == 1 && 2 * conv.padding + 1 == conv.kernelSize, "decoder convolutions keep the size")
            reach = conv.padding
        case .block: reach = 3  // three 3×3 convolutions; the skip is 1×1
        }
        return (max(0, rows.lowerBound - reach) & ~1)..<min(inputHeight, rows.upperBound + reach)
    }

    /// The rows of the output computed from input rows `rows`.
    func outputRows(from rows: Range<Int>) -> Range<Int> {
        if case .upsample = self { return (2 * rows.lowerBound)..<(2 * rows.upperBound) }
        return rows
    }
}

extension AutoencoderTiny {
    /// The largest band activation `decode` allows by default: 8 MiB, 64 rows of TAESD's 64
    /// channels at 512 px wide in its last stage (a band and its halo), where a
    /// whole 512² decode holds 3–4 tensors of 64 MiB. Measured on SD-Turbo at 512²: the
    /// decode phase peaks at 74 MiB (226 MiB whole), below the UNet step's 123 MiB.
    public static let standardBandBytes = 8 << 20

    /// `stage` on `input` ([C, B, h, w]) → its output [C', B, s·h, s·w], band by band.
    static func run(_ stage: TinyDecoderStage, _ input: Tensor, bands: TinyDecodeBands, pool: ThreadPool) -> Tensor {
        let height = stage.scale * input.height
        let bandRows = stage.bandRows(bands, input: input)
        if bandRows >= height { return run(stage.layers, input, pool: pool) }
        let output = Tensor(channels: stage.outChannels(input: input.channels), batch: input.batch,
                            height: height, width: stage.scale * input.width)
        for first in stride(from: 0, to: height, by: bandRows) {
            let band = first..<min(height, first + bandRows)
            let needed = stage.neededRows(for: band, inputHeight: input.height)
            var rows = needed[0]
            var h = input.rows(rows, firstRow: 0)
            for (layer, next) in zip(stage.layers, needed.dropFirst()) {
                h = apply(layer, h, pool: pool)
                h = h.rows(next, firstRow: layer.outputRows(from: rows).lowerBound)
                rows = next
            }
            output.setRows(band.lowerBound, from: h)
        }
        return output
    }
}

extension Tensor {
    /// Rows `rows` of every plane as a tensor of their own, from this tensor whose row 0 is
    /// row `firstRow` of the whole (itself when it holds just those rows).
    func rows(_ rows: Range<Int>, firstRow: Int) -> Tensor {
        if rows.lowerBound == firstRow && rows.count == height { return self }
        precondition(rows.lowerBound >= firstRow && rows.upperBound <= firstRow + height)
        let t = Tensor(channels: channels, batch: batch, height: rows.count, width: width)
        if Kernels.isPlanning { return t }
        let source = data + (rows.lowerBound - firstRow) * width
        for plane in 0..<(channels * batch) {
            (t.data + plane * t.pixels).update(from: source + plane * pixels, count: t.pixels)
        }
        return t
    }

    /// Writes all of `band`'s rows into every plane from row `firstRow` on.
    func setRows(_ firstRow: Int, from band: Tensor) {
        precondition(band.channels == channels && band.batch == batch && band.width == width
                     && firstRow + band.height <= height)
        if Kernels.isPlanning { return }
        let destination = data + firstRow * width
        for plane in 0..<(channels * batch) {
            (destination + plane * pixels).update(from: band.data + plane * band.pixels, count: band.pixels)
        }
    }
}
