import Glibc

/// Plain scalar implementations of every kernel: the definition the fast kernels are
/// tested against. Layout conventions (shared with `Kernels`):
/// activations are channel-major, `[C, B·H·W]` for images (channels, then batch, then
/// pixels) and `[C, B·T]` for token sequences; weights are `WeightMatrix` `[N, K]`.
public enum ReferenceKernels {
    /// y[n, p] = Σ_k w[n, k]·x[k, p] + bias[n] + residual[n, p].
    /// x: [K, P], y: [N, P]. `residual` may alias `y`.
    public static func linear(_ w: WeightMatrix, input x: UnsafePointer<Float>, columns: Int,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                              output y: UnsafeMutablePointer<Float>) {
        for n in 0..<w.rows {
            for p in 0..<columns {
                var acc: Double = 0
                for k in 0..<w.cols { acc += Double(w.element(n, k)) * Double(x[k * columns + p]) }
                var v = Float(acc)
                if let bias { v += bias[n] }
                if let residual { v += residual[n * columns + p] }
                y[n * columns + p] = v
            }
        }
    }

    /// 2-D convolution, square kernel, zero padding. w: [Cout, Cin·k·k] (PyTorch order
    /// ic, ky, kx); x: [Cin, B, H, W]; y: [Cout, B, Ho, Wo] with
    /// Ho = (H + 2·padding − k) / stride + 1.
    public static func conv2d(_ w: WeightMatrix, kernelSize k: Int, stride: Int, padding: Int,
                              input x: UnsafePointer<Float>, channels cin: Int, batch: Int,
                              height: Int, width: Int,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                              output y: UnsafeMutablePointer<Float>) {
        let ho = (height + 2 * padding - k) / stride + 1
        let wo = (width + 2 * padding - k) / stride + 1
        precondition(w.cols == cin * k * k)
        for oc in 0..<w.rows {
            for b in 0..<batch {
                for oy in 0..<ho {
                    for ox in 0..<wo {
                        var acc: Double = 0
                        for ic in 0..<cin {
                            for ky in 0..<k {
                                let iy = oy * stride + ky - padding
                                if iy < 0 || iy >= height { continue }
                                for kx in 0..<k {
                                    let ix = ox * stride + kx - padding
                                    if ix < 0 || ix >= width { continue }
                                    let xv = x[((ic * batch + b) * height + iy) * width + ix]
                                    acc += Double(w.element(oc, (ic * k + ky) * k + kx)) * Double(xv)
                                }
                            }
                        }
                        let o = ((oc * batch + b) * ho + oy) * wo + ox
                        var v = Float(acc)
                        if let bias { v += bias[oc] }
                        if let residual { v += residual[o] }
                        y[o] = v
                    }
                }
            }
        }
    }

    /// GroupNorm over x: [C, B, P], statistics per (batch, group); optional SiLU after.
    public static func groupNorm(_ x: UnsafePointer<Float>, channels: Int, batch: Int, pixels: Int,
                                 groups: Int, eps: Float, gamma: UnsafePointer<Float>,
                                 beta: UnsafePointer<Float>, silu: Bool,
                                 output y: UnsafeMutablePointer<Float>) {
        let perGroup = channels / groups
        for b in 0..<batch {
            for g in 0..<groups {
                var sum: Double = 0, sumSq: Double = 0
                for c in g * perGroup..<(g + 1) * perGroup {
                    for p in 0..<pixels {
                        let v = Double(x[(c * batch + b) * pixels + p])
                        sum += v
                        sumSq += v * v
                    }
                }
                let count = Double(perGroup * pixels)
                let mean = sum / count
                let variance = max(sumSq / count - mean * mean, 0)
                let inv = 1 / (variance + Double(eps)).squareRoot()
                for c in g * perGroup..<(g + 1) * perGroup {
                    for p in 0..<pixels {
                        let i = (c * batch + b) * pixels + p
                        var v = Float((Double(x[i]) - mean) * inv) * gamma[c] + beta[c]
                        if silu { v = v / (1 + expf(-v)) }
                        y[i] = v
                    }
                }
            }
        }
    }

    /// LayerNorm of each column of x: [C, P] over its C channels.
    public static func layerNorm(_ x: UnsafePointer<Float>, channels: Int, columns: Int, eps: Float,
                                 gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                 output y: UnsafeMutablePointer<Float>) {
        for p in 0..<columns {
            var sum: Double = 0, sumSq: Double = 0
            for c in 0..<channels {
                let v = Double(x[c * columns + p])
                sum += v
                sumSq += v * v
            }
            let mean = sum / Double(channels)
            let variance = max(sumSq / Double(channels) - mean * mean, 0)
            let inv = 1 / (variance + Double(eps)).squareRoot()
            for c in 0..<channels {
                let i = c * columns + p
                y[i] = Float((Double(x[i]) - mean) * inv) * gamma[c] + beta[c]
            }
        }
    }

    /// Scaled dot-product attention per batch item and head, softmax(q·kᵀ/√d)·v.
    /// q: [heads·d, B·Tq], k and v: [heads·d, B·Tk], y: [heads·d, B·Tq]. With `causal`,
    /// query i attends to keys 0...i only (CLIP's text encoder).
    public static func attention(query q: UnsafePointer<Float>, key k: UnsafePointer<Float>,
                                 value v: UnsafePointer<Float>, heads: Int, headDim d: Int,
                                 batch: Int, queryTokens tq: Int, keyTokens tk: Int, causal: Bool,
                                 output y: UnsafeMutablePointer<Float>) {
        let scale = 1 / Double(d).squareRoot()
        let qCols = batch * tq, kCols = batch * tk
        var scores = [Double](repeating: 0, count: tk)
        for b in 0..<batch {
            for h in 0..<heads {
                for i in 0..<tq {
                    let limit = causal ? min(i + 1, tk) : tk
                    var maxScore = -Double.infinity
                    for j in 0..<limit {
                        var s: Double = 0
                        for e in 0..<d {
                            s += Double(q[(h * d + e) * qCols + b * tq + i]) * Double(k[(h * d + e) * kCols + b * tk + j])
                        }
                        scores[j] = s * scale
                        maxScore = max(maxScore, scores[j])
                    }
                    var total: Double = 0
                    for j in 0..<limit {
                        scores[j] = exp(scores[j] - maxScore)
                        total += scores[j]
                    }
                    for e in 0..<d {
                        var acc: Double = 0
                        for j in 0..<limit { acc += scores[j] * Double(v[(h * d + e) * kCols + b * tk + j]) }
                        y[(h * d + e) * qCols + b * tq + i] = Float(acc / total)
                    }
                }
            }
        }
    }

    /// GEGLU: x: [2F, P] holds the projection's two halves (value rows 0..<F, gate rows
    /// F..<2F); y: [F, P] = value · gelu(gate) with the exact (erf) GELU.
    public static func geglu(_ x: UnsafePointer<Float>, features: Int, columns: Int,
                             output y: UnsafeMutablePointer<Float>) {
        for i in 0..<features * columns {
            y[i] = x[i] * gelu(x[features * columns + i])
        }
    }

    /// Exact GELU: 0.5 v (1 + erf(v / √2)).
    @inline(__always) public static func gelu(_ v: Float) -> Float { 0.5 * v * (1 + erff(v * 0.70710678118654752)) }
    /// QuickGELU (CLIP's): v · sigmoid(1.702 v).
    @inline(__always) public static func quickGelu(_ v: Float) -> Float { v / (1 + expf(-1.702 * v)) }
    /// SiLU (swish): v · sigmoid(v).
    @inline(__always) public static func silu(_ v: Float) -> Float { v / (1 + expf(-v)) }

    /// Nearest-neighbour 2× up-sampling: x: [C·B, H, W] → y: [C·B, 2H, 2W].
    public static func upsampleNearest2x(_ x: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                                         output y: UnsafeMutablePointer<Float>) {
        for c in 0..<planes {
            for oy in 0..<2 * height {
                for ox in 0..<2 * width {
                    y[(c * 2 * height + oy) * 2 * width + ox] = x[(c * height + oy / 2) * width + ox / 2]
                }
            }
        }
    }
}
