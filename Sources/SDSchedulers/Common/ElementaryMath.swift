// Double-precision log, exp, sin/cos and pow, written out here so that the schedulers and
// the RNG need no libm: the same inputs give the same bits on x86_64 and arm64, Linux and
// macOS. Accuracy is about one ulp, which after rounding to Float is indistinguishable from
// glibc's results except in rare double-rounding cases.

enum ElementaryMath {
    // ln 2 split so that k * ln2Hi is exact for |k| < 2^20 (ln2Hi has 32 significant bits).
    static let ln2Hi = Double(bitPattern: 0x3FE6_2E42_FEE0_0000)
    static let ln2Lo = Double(bitPattern: 0x3DEA_39EF_3579_3C76)
    // pi/2 in three pieces; the first two have trailing zero bits so k * piece is exact for small k.
    static let halfPi1 = Double(bitPattern: 0x3FF9_21FB_5440_0000)
    static let halfPi2 = Double(bitPattern: 0x3DD0_B461_1A60_0000)
    static let halfPi3 = Double(bitPattern: 0x3BA3_198A_2E03_7073)

    /// Natural logarithm. log(m * 2^e) = e ln2 + log1p(f) with m in (sqrt(1/2), sqrt(2)],
    /// log1p(f) = 2 atanh(s), s = f / (2 + f), summed as f - (f^2/2 - s (f^2/2 + T(s^2))).
    static func log(_ x: Double) -> Double {
        if x.isNaN || x < 0 { return .nan }
        if x == 0 { return -.infinity }
        if x.isInfinite { return x }
        var m = x.significand            // [1, 2), also for subnormal x
        var e = Double(x.exponent)
        if m > 1.4142135623730951 { m *= 0.5; e += 1 }
        let f = m - 1
        let s = f / (2 + f)
        let z = s * s
        // T = 2 (z/3 + z^2/5 + ... + z^12/25); z <= 0.0295 so the next term is below 2^-60.
        var t = 2.0 / 25.0
        var k = 23.0
        while k >= 3 { t = 2.0 / k + z * t; k -= 2 }
        t *= z
        let halfSquare = 0.5 * f * f
        let log1pf = f - (halfSquare - s * (halfSquare + t))
        return e * ln2Hi + (log1pf + e * ln2Lo)
    }

    /// e^x = 2^k e^r with r = x - k ln2, |r| <= ln2/2, e^r by its Taylor series to r^14.
    static func exp(_ x: Double) -> Double {
        if x.isNaN { return x }
        if x > 709.782712893384 { return .infinity }
        if x < -745.1332191019412 { return 0 }
        let k = (x * 1.4426950408889634).rounded(.toNearestOrEven)
        let r = (x - k * ln2Hi) - k * ln2Lo
        var p = 1.0
        var n = 14.0
        while n >= 1 { p = 1 + r * p / n; n -= 1 }
        // Split the scaling so that results near the subnormal range stay exact.
        let ki = Int(k)
        if ki < -1000 {
            return Double(sign: .plus, exponent: ki + 1000, significand: p) * Double(sign: .plus, exponent: -1000, significand: 1)
        }
        return Double(sign: .plus, exponent: ki, significand: p)
    }

    // sin r = r + r z P(z), P = -1/3! + z/5! - ... + z^7/17!;  cos r = 1 - z/2 + z^2 Q(z),
    // Q = 1/4! - z/6! + ... - z^7/18!.  Built once from exact factorials.
    private static let (sinSeries, cosSeries): ([Double], [Double]) = {
        var factorial = 1.0
        var sinTerms: [Double] = []
        var cosTerms: [Double] = []
        for n in 1...18 {
            factorial *= Double(n)
            if n >= 3, n % 2 == 1 { sinTerms.append((sinTerms.count % 2 == 0 ? -1 : 1) / factorial) }
            if n >= 4, n % 2 == 0 { cosTerms.append((cosTerms.count % 2 == 0 ? 1 : -1) / factorial) }
        }
        return (sinTerms, cosTerms)
    }()

    /// sin and cos together; reduction by k pi/2 (Cody–Waite, exact for |x| up to ~1e5),
    /// then the Taylor series on |r| <= pi/4 (to r^17 for sin, r^18 for cos).
    static func sinCos(_ x: Double) -> (sin: Double, cos: Double) {
        if !x.isFinite { return (.nan, .nan) }
        let k = (x * 0.6366197723675814).rounded(.toNearestOrEven)
        let r = ((x - k * halfPi1) - k * halfPi2) - k * halfPi3
        let z = r * r
        var p = 0.0
        var q = 0.0
        for i in stride(from: 7, through: 0, by: -1) {
            p = sinSeries[i] + z * p
            q = cosSeries[i] + z * q
        }
        let sinR = r + r * z * p
        // The 1 - z/2 part of cos is summed with its rounding error.
        let halfZ = 0.5 * z
        let w = 1 - halfZ
        let cosR = w + (((1 - w) - halfZ) + z * z * q)
        switch Int(k) & 3 {
        case 0: return (sinR, cosR)
        case 1: return (cosR, -sinR)
        case 2: return (-sinR, -cosR)
        default: return (-cosR, sinR)
        }
    }

    /// x^y for x > 0 (the only use: Karras sigma schedules).
    static func pow(_ x: Double, _ y: Double) -> Double {
        if x == 1 || y == 0 { return 1 }
        return exp(y * log(x))
    }

    static func log(_ x: Float) -> Float { Float(log(Double(x))) }
    static func exp(_ x: Float) -> Float { Float(exp(Double(x))) }
}
