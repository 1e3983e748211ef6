import Glibc

/// Pillow's `Image.resize(size, Image.LANCZOS)` for 8-bit images (libImaging/Resample.c),
/// which diffusers' VaeImageProcessor uses to bring an init image or a mask to the
/// generation size: a separable 3-lobe Lanczos filter widened by the scale when shrinking,
/// weights normalised per output pixel and rounded to fixed point with 22 fraction bits, a
/// horizontal pass (rounded to 8 bits) over the source rows the vertical pass reads, then
/// the vertical pass. The same integer arithmetic gives the same bytes as Pillow.
public enum LanczosResampler {
    static let precisionBits = 32 - 8 - 2

    /// One axis: for output i, the first source index, the tap count and fixed-point weights.
    struct Taps {
        var first: [Int] = []
        var count: [Int] = []
        var weights: [Int32] = []  // `stride` per output
        var stride = 0
    }

    static func lanczos(_ x: Double) -> Double {
        func sinc(_ x: Double) -> Double {
            if x == 0 { return 1 }
            let px = x * Double.pi
            return sin(px) / px
        }
        return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0
    }

    static func taps(inSize: Int, outSize: Int) -> Taps {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = 3.0 * filterScale
        var t = Taps()
        t.stride = Int(support.rounded(.up)) * 2 + 1
        t.weights = [Int32](repeating: 0, count: outSize * t.stride)
        var w = [Double](repeating: 0, count: t.stride)
        for i in 0..<outSize {
            let center = (Double(i) + 0.5) * scale
            let inverse = 1.0 / filterScale
            let lo = max(Int(center - support + 0.5), 0)   // C's (int) truncation, value ≥ -0.5…
            let hi = min(Int(center + support + 0.5), inSize)
            let n = hi - lo
            var total = 0.0
            for k in 0..<n {
                w[k] = lanczos((Double(k + lo) - center + 0.5) * inverse)
                total += w[k]
            }
            for k in 0..<n {
                let v = total != 0 ? w[k] / total : w[k]
                let fixed = v * Double(1 << precisionBits)
                t.weights[i * t.stride + k] = Int32(v < 0 ? (fixed - 0.5).rounded(.towardZero) : (fixed + 0.5).rounded(.towardZero))
            }
            t.first.append(lo)
            t.count.append(n)
        }
        return t
    }

    static func clip8(_ sum: Int64) -> UInt8 {
        let v = sum >> Int64(precisionBits)
        return UInt8(clamping: min(max(v, 0), 255))
    }

    /// Resizes interleaved 8-bit pixels (`channels` per pixel) to `outWidth × outHeight`.
    public static func resize(_ pixels: [UInt8], width: Int, height: Int, channels: Int,
                              outWidth: Int, outHeight: Int) -> [UInt8] {
        precondition(pixels.count == width * height * channels && outWidth >= 1 && outHeight >= 1)
        if width == outWidth && height == outHeight { return pixels }
        let horizontal = taps(inSize: width, outSize: outWidth)
        let vertical = taps(inSize: height, outSize: outHeight)
        let half = Int64(1) << Int64(precisionBits - 1)
        var source = pixels, sourceWidth = width
        var rowFirst = vertical.first
        if width != outWidth {
            // Only the rows the vertical pass reads.
            let firstRow = vertical.first[0]
            let lastRow = vertical.first[outHeight - 1] + vertical.count[outHeight - 1]
            var temp = [UInt8](repeating: 0, count: (lastRow - firstRow) * outWidth * channels)
            for y in firstRow..<lastRow {
                for x in 0..<outWidth {
                    let lo = horizontal.first[x], base = x * horizontal.stride
                    for c in 0..<channels {
                        var sum = half
                        for k in 0..<horizontal.count[x] {
                            sum += Int64(pixels[(y * width + lo + k) * channels + c]) * Int64(horizontal.weights[base + k])
                        }
                        temp[((y - firstRow) * outWidth + x) * channels + c] = clip8(sum)
                    }
                }
            }
            rowFirst = rowFirst.map { $0 - firstRow }
            source = temp
            sourceWidth = outWidth
        }
        guard height != outHeight else { return source }
        var out = [UInt8](repeating: 0, count: outWidth * outHeight * channels)
        for y in 0..<outHeight {
            let lo = rowFirst[y], base = y * vertical.stride
            for x in 0..<outWidth {
                for c in 0..<channels {
                    var sum = half
                    for k in 0..<vertical.count[y] {
                        sum += Int64(source[((lo + k) * sourceWidth + x) * channels + c]) * Int64(vertical.weights[base + k])
                    }
                    out[(y * outWidth + x) * channels + c] = clip8(sum)
                }
            }
        }
        return out
    }
}

extension RGBImage {
    /// This image resized with Pillow's Lanczos filter (see `LanczosResampler`).
    public func resizedLanczos(width outWidth: Int, height outHeight: Int) -> RGBImage {
        RGBImage(width: outWidth, height: outHeight,
                 pixels: LanczosResampler.resize(pixels, width: width, height: height, channels: 3,
                                                 outWidth: outWidth, outHeight: outHeight))
    }
}
