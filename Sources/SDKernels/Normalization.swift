import CKernels

/// GroupNorm and LayerNorm. Both use two passes for the statistics (mean, then the mean
/// squared deviation) so that large means do not cancel the variance in Float; partial
/// sums are Float vectors over short chunks, added up in Double. Under every kernel variant
/// but `portable` the loops over the data run their C builds (bitwise the same).
enum Normalization {
    typealias V = NativeF32

    /// Elements per Float partial sum before it is added into the Double total.
    static let chunk = 512

    /// x, y: [C, B, P]; statistics per (batch, group) over C/groups channels × P pixels.
    static func groupNorm(_ x: UnsafePointer<Float>, channels: Int, batch: Int,
                          pixels: Int, groups: Int, eps: Float, gamma: UnsafePointer<Float>,
                          beta: UnsafePointer<Float>, silu: Bool,
                          output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        precondition(channels % groups == 0, "channels must divide into groups")
        let perGroup = channels / groups
        let build = Kernels.variant.vectorMath
        pool.parallelFor(batch * groups) { task in
            let b = task / groups, g = task - b * groups
            let firstChannel = g * perGroup
            @inline(__always) func row(_ c: Int) -> Int { ((firstChannel + c) * batch + b) * pixels }
            // Sums of x − x₀ (first element of the group) keep Float partials small when
            // the activations carry a large common offset.
            let shift = x[row(0)]
            var total: Double = 0
            for c in 0..<perGroup { total += sum(x + row(c), count: pixels, shift: shift, build: build) }
            let count = Double(perGroup * pixels)
            let mean = Float(Double(shift) + total / count)
            var squares: Double = 0
            for c in 0..<perGroup {
                squares += sumOfSquares(x + row(c), count: pixels, around: mean, build: build)
            }
            let inv = Float(1 / (squares / count + Double(eps)).squareRoot())
            for c in 0..<perGroup {
                normalize(x + row(c), mean: mean, scale: inv * gamma[firstChannel + c],
                          beta: beta[firstChannel + c], silu: silu, count: pixels, output: y + row(c), build: build)
            }
        }
    }

    /// x, y: [C, P]; each column normalised over its C channels. Vectorised along P: a
    /// work item is a block of 2V columns whose statistics are vectors.
    static func layerNorm(_ x: UnsafePointer<Float>, channels: Int, columns: Int,
                          eps: Float, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                          output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let lanes = V.scalarCount, w = 2 * lanes
        let blocks = (columns + w - 1) / w
        let fullBlocks = columns / w
        let invCount = V(repeating: 1 / Float(channels))
        let build = Kernels.variant.vectorMath
        pool.parallelRanges(blocks) { range in
            var next = range.lowerBound
            for block in range where block >= next {
                let p = block * w
                next = block + 1
                if block >= fullBlocks {
                    for column in p..<columns { layerNormColumn(x, column: column, columns: columns, channels: channels,
                eps: eps, gamma: gamma, beta: beta, output: y) }
                    continue
                }
                switch build {
                case .avx512:
                    // Up to four blocks per call (each row then reads 256 bytes of one page).
                    let n = min(4, min(range.upperBound, fullBlocks) - block)
                    pd_layer_norm_blocks16_avx512(x + p, columns, Int32(channels), Int32(n), eps, gamma, beta, y + p)
                    next = block + n
                    continue
                case .avx2:
                    pd_layer_norm_columns16_avx2(x + p, columns, Int32(channels), eps, gamma, beta, y + p)
                    continue
                case .swift: break
                }
                // Shifted by channel 0's values, as in groupNorm.
                let shift0 = V.load(x + p), shift1 = V.load(x + p + lanes)
                var s0 = V(), s1 = V()
                for c in 1..<max(channels, 1) {
                    s0 += V.load(x + c * columns + p) - shift0
                    s1 += V.load(x + c * columns + p + lanes) - shift1
                }
                let mean0 = shift0 + s0 * invCount, mean1 = shift1 + s1 * invCount
                var q0 = V(), q1 = V()
                for c in 0..<channels {
                    let d0 = V.load(x + c * columns + p) - mean0, d1 = V.load(x + c * columns + p + lanes) - mean1
                    q0 = q0.addingProduct(d0, d0)
                    q1 = q1.addingProduct(d1, d1)
                }
                var inv0 = q0 * invCount, inv1 = q1 * invCount
                for i in 0..<lanes {
                    inv0[i] = 1 / (inv0[i] + eps).squareRoot()
                    inv1[i] = 1 / (inv1[i] + eps).squareRoot()
                }
                for c in 0..<channels {
                    let g = V(repeating: gamma[c]), bias = V(repeating: beta[c])
                    let a0 = (V.load(x + c * columns + p) - mean0) * inv0
                    let a1 = (V.load(x + c * columns + p + lanes) - mean1) * inv1
                    bias.addingProduct(a0, g).store(y + c * columns + p)
                    bias.addingProduct(a1, g).store(y + c * columns + p + lanes)
                }
            }
        }
    }

    /// The scalar tail of `layerNorm` (fewer than 2V columns left).
    static func layerNormColumn(_ x: UnsafePointer<Float>, column p: Int, columns: Int, channels: Int, eps: Float,
                                gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                output y: UnsafeMutablePointer<Float>) {
        let shift = x[p]
        var s: Float = 0
        for c in 0..<channels { s += x[c * columns + p] - shift }
        let mean = shift + s / Float(channels)
        var q: Float = 0
        for c in 0..<channels {
            let d = x[c * columns + p] - mean
            q += d * d
        }
        let inv = 1 / (q / Float(channels) + eps).squareRoot()
        for c in 0..<channels { y[c * columns + p] = (x[c * columns + p] - mean) * inv * gamma[c] + beta[c] }
    }

    /// Σ (x[i] − shift).
    @inline(__always)
    static func sum(_ x: UnsafePointer<Float>, count: Int, shift: Float, build: KernelVariant.VectorMathBuild) -> Double {
        switch build {
        case .avx512: return pd_sum_shifted_avx512(x, count, shift, chunk)
        case .avx2: return pd_sum_shifted_avx2(x, count, shift, chunk)
        case .swift: break
        }
        var total: Double = 0
        var start = 0
        while start < count {
            let end = min(count, start + chunk)
            var a0 = V(), a1 = V()
            let s = V(repeating: shift)
            var i = start
            while i + 2 * V.scalarCount <= end {
                a0 += V.load(x + i) - s
                a1 += V.load(x + i + V.scalarCount) - s
                i += 2 * V.scalarCount
            }
            var partial = (a0 + a1).sum()
            while i < end {
                partial += x[i] - shift
                i += 1
            }
            total += Double(partial)
            start = end
        }
        return total
    }

    @inline(__always)
    static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int, around mean: Float, build: KernelVariant.VectorMathBuild) -> Double {
        switch build {
        case .avx512: return pd_sum_of_squares_avx512(x, count, mean, chunk)
        case .avx2: return pd_sum_of_squares_avx2(x, count, mean, chunk)
        case .swift: break
        }
        var total: Double = 0
        let m = V(repeating: mean)
        var start = 0
        while start < count {
            let end = min(count, start + chunk)
            var a0 = V(), a1 = V()
            var i = start
            while i + 2 * V.scalarCount <= end {
                let d0 = V.load(x + i) - m, d1 = V.load(x + i + V.scalarCount) - m
                a0 = a0.addingProduct(d0, d0)
                a1 = a1.addingProduct(d1, d1)
                i += 2 * V.scalarCount
            }
            var partial = (a0 + a1).sum()
            while i < end {
                let d = x[i] - mean
                partial += d * d
                i += 1
            }
            total += Double(partial)
            start = end
        }
        return total
    }

    /// y = (x − mean)·scale + beta, then SiLU if asked. (Not x·a + b with b folded: that
    /// cancels when the mean is large.)
    @inline(__always)
    static func normalize(_ x: UnsafePointer<Float>, mean: Float, scale: Float, beta: Float,
                          silu: Bool, count: Int, output y: UnsafeMutablePointer<Float>, build: KernelVariant.VectorMathBuild) {
        switch build {
        case .avx512: return pd_normalize_avx512(x, mean, scale, beta, silu ? 1 : 0, count, y)
        case .avx2: return pd_normalize_avx2(x, mean, scale, beta, silu ? 1 : 0, count, y)
        case .swift: break
        }
        let m = V(repeating: mean), a = V(repeating: scale), b = V(repeating: beta)
        var i = 0
        if silu {
            while i + V.scalarCount <= count {
                VectorMath.silu(b.addingProduct(V.load(x + i) - m, a)).store(y + i)
                i += V.scalarCount
            }
        } else {
            while i + V.scalarCount <= count {
                b.addingProduct(V.load(x + i) - m, a).store(y + i)
                i += V.scalarCount
            }
        }
        if i < count {
            // Tail through the same vector code, so every element sees the same SiLU.
            var t = V()
            for j in 0..<(count - i) { t[j] = x[i + j] }
            var r = b.addingProduct(t - m, a)
            if silu { r = VectorMath.silu(r) }
            for j in 0..<(count - i) { y[i + j] = r[j] }
        }
    }
}
