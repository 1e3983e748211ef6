/// The vector layer under every fast kernel. Kernels are written once against `NativeF32`
/// (and its same-width companions below) using `NativeF32.scalarCount` for every size, so
/// switching the typealiases switches the width; nothing else is architecture-specific.
///
/// Why concrete typealiases rather than generic kernels over a vector protocol: Swift only
/// specialises a generic function where its body is visible, i.e. in the same file unless
/// the whole module is compiled at once (-wmo). SwiftPM debug builds compile file by file,
/// so generic kernels calling generic helpers in other files ran unspecialised there
/// (witness-table calls per lane, ~1000× slower than release). Concrete code has no such
/// cliff; -wmo release builds inline the helpers either way.
///
/// Codegen notes (checked with `swiftc -emit-assembly`, -O, -target-cpu haswell):
/// `+ - * /`, `addingProduct`, `init(repeating:)`, Float16/Int8 → Float conversions,
/// `evenHalf` and `unsafeBitCast` compile to single vector instructions. `SIMDMask`
/// compares, `replacing(with:where:)`, `pointwiseMin/Max`, `squareRoot()` and Float → Int
/// conversion do NOT (per-lane loops or calls), so the helpers below build masks from sign
/// bits (vblendvps / andps) and max/min from lane loops that LLVM turns into vmaxps/vminps.

#if arch(x86_64) && SDKERNELS_AVX512
/// One zmm register, for builds with `-target-cpu znver4` (or skylake-avx512) and
/// `-D SDKERNELS_AVX512`: 32 architectural registers. Such a binary needs AVX-512F.
public typealias NativeF32 = SIMD16<Float>
typealias NativeI32 = SIMD16<Int32>
typealias NativeU32 = SIMD16<UInt32>
typealias NativeF16 = SIMD16<Float16>
typealias NativeI8 = SIMD16<Int8>
typealias NativeF32Pair = SIMD32<Float>
typealias NativeF32Quad = SIMD64<Float>
#elseif arch(x86_64) || arch(arm64)
/// x86_64: one ymm register (AVX2 + FMA + F16C via `-target-cpu haswell`), 16 registers.
/// arm64: two NEON q registers per value; with 32 q registers the 6 × 2-vector GEMM tile
/// (24 q accumulators) still fits, and per-k overhead halves versus SIMD4.
public typealias NativeF32 = SIMD8<Float>
typealias NativeI32 = SIMD8<Int32>
typealias NativeU32 = SIMD8<UInt32>
typealias NativeF16 = SIMD8<Float16>
typealias NativeI8 = SIMD8<Int8>
typealias NativeF32Pair = SIMD16<Float>
typealias NativeF32Quad = SIMD32<Float>
#else
/// Other architectures: one 4-lane float vector.
public typealias NativeF32 = SIMD4<Float>
typealias NativeI32 = SIMD4<Int32>
typealias NativeU32 = SIMD4<UInt32>
typealias NativeF16 = SIMD4<Float16>
typealias NativeI8 = SIMD4<Int8>
typealias NativeF32Pair = SIMD8<Float>
typealias NativeF32Quad = SIMD16<Float>
#endif

extension NativeF32 {
    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Self {
        UnsafeRawPointer(p).loadUnaligned(as: Self.self)
    }

    @inline(__always) static func load(_ p: UnsafeMutablePointer<Float>) -> Self {
        UnsafeRawPointer(p).loadUnaligned(as: Self.self)
    }

    @inline(__always) func store(_ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: self, as: Self.self)
    }

    /// Lanes from `scalarCount` consecutive Float16 values (vcvtph2ps with F16C).
    @inline(__always) static func loadHalf(_ p: UnsafeRawPointer) -> Self {
        Self(p.loadUnaligned(as: NativeF16.self))
    }

    /// Lanes from `scalarCount` consecutive Int8 values (vpmovsxbd + vcvtdq2ps).
    @inline(__always) static func loadInt8(_ p: UnsafeRawPointer) -> Self {
        Self(p.loadUnaligned(as: NativeI8.self))
    }

    /// Lanes p[0], p[2], …, p[2·(scalarCount − 1)], reading 2·scalarCount floats: a
    /// stride-2 gather as one double-width load and a shuffle.
    @inline(__always) static func loadEven(_ p: UnsafePointer<Float>) -> Self {
        UnsafeRawPointer(p).loadUnaligned(as: NativeF32Pair.self).evenHalf
    }

    /// Lanes p[0], p[4], …, p[4·(scalarCount − 1)], reading 4·scalarCount floats.
    @inline(__always) static func loadEvery4(_ p: UnsafePointer<Float>) -> Self {
        UnsafeRawPointer(p).loadUnaligned(as: NativeF32Quad.self).evenHalf.evenHalf
    }

    @inline(__always) static func vmax(_ a: Self, _ b: Self) -> Self {
        var r = a
        for i in 0..<scalarCount { r[i] = a[i] > b[i] ? a[i] : b[i] }
        return r
    }

    @inline(__always) static func vmin(_ a: Self, _ b: Self) -> Self {
        var r = a
        for i in 0..<scalarCount { r[i] = a[i] < b[i] ? a[i] : b[i] }
        return r
    }

    @inline(__always) var bits: NativeI32 { unsafeBitCast(self, to: NativeI32.self) }
    @inline(__always) init(bits: NativeI32) { self = unsafeBitCast(bits, to: Self.self) }

    /// All-ones lanes where the sign bit is set (x < 0 for the differences used below,
    /// which are never −0: x − y is +0 when x = y).
    @inline(__always) var signMask: NativeI32 { bits &>> NativeI32(repeating: 31) }

    /// `b` in the lanes where `mask` is all ones, `a` elsewhere (vblendvps / bsl).
    @inline(__always) static func blend(_ a: Self, _ b: Self, where mask: NativeI32) -> Self {
        Self(bits: (a.bits & ~mask) | (b.bits & mask))
    }

    /// Lanes i with `limit[i] < threshold` set to `value`.
    @inline(__always) static func select(_ a: Self, lanesBelow threshold: Float, of limit: Self, value: Float) -> Self {
        blend(a, Self(repeating: value), where: (limit - Self(repeating: threshold)).signMask)
    }

    /// Lanes i with lo ≤ index[i] < hi kept, the others zero.
    @inline(__always) func keeping(index: Self, from lo: Float, below hi: Float) -> Self {
        let inside = ~(index - Self(repeating: lo)).signMask & (index - Self(repeating: hi)).signMask
        return Self(bits: bits & inside)
    }

    @inline(__always) var magnitude: Self { Self(bits: bits & NativeI32(repeating: 0x7FFF_FFFF)) }

    /// 0, 1, 2, … as Float lanes.
    @inline(__always) static var laneIndex: Self {
        var r = Self()
        for i in 0..<scalarCount { r[i] = Float(i) }
        return r
    }
}

/// Vectorised transcendental functions used by the epilogues (softmax, SiLU, GELU).
enum VectorMath {
    typealias V = NativeF32

    /// eˣ, relative error ≈ 2e-7 on the clamped range; inputs below −87.3 give ≈1e-38,
    /// inputs above 88.3 saturate at ≈2^127·e^0.35 (callers never reach it).
    /// Range reduction x = n·ln2 + r, |r| ≤ ln2/2, eʳ by a degree-6 Taylor polynomial,
    /// 2ⁿ built in the exponent bits.
    @inline(__always)
    static func exp(_ x: V) -> V {
        let x = V.vmin(V.vmax(x, V(repeating: -87.33)), V(repeating: 88.3))
        // Adding 1.5·2²³ rounds x·log2(e) to an integer that sits in the low mantissa bits.
        let magic = V(repeating: 12_582_912)
        let t = magic.addingProduct(x, V(repeating: 1.442_695_04))
        let n = t - magic
        var r = x.addingProduct(n, V(repeating: -0.693_145_75))          // ln2 high part
        r = r.addingProduct(n, V(repeating: -1.428_606_8e-6))           // ln2 low part
        return expPolynomial(r) * twoToThe(t)
    }

    /// 2ˣ with the same polynomial (the range reduction is then exact: x − n). Softmax uses
    /// it with log2(e) folded into the query scale.
    @inline(__always)
    static func exp2(_ x: V) -> V {
        let x = V.vmin(V.vmax(x, V(repeating: -126)), V(repeating: 127))
        let magic = V(repeating: 12_582_912)
        let t = x + magic
        let r = (x - (t - magic)) * V(repeating: 0.693_147_18)
        return expPolynomial(r) * twoToThe(t)
    }

    /// 2ˣ for x ≤ 0 within 4.2e-5 relative (degree-4 Taylor for eʳ): the probabilities of the
    /// bf16 attention, which are rounded to 8 significant bits (4e-3) right after.
    @inline(__always)
    static func exp2NonPositiveBF16(_ x: V) -> V {
        let x = V.vmax(x, V(repeating: -126))
        let magic = V(repeating: 12_582_912)
        let t = x + magic
        let r = (x - (t - magic)) * V(repeating: 0.693_147_18)
        var p = V(repeating: 1.0 / 24)
        p = V(repeating: 1.0 / 6).addingProduct(p, r)
        p = V(repeating: 0.5).addingProduct(p, r)
        p = V(repeating: 1).addingProduct(p, r)
        return V(repeating: 1).addingProduct(p, r) * twoToThe(t)
    }

    /// eʳ for |r| ≤ ln2/2: Taylor to r⁶ (truncation < 1.3e-7 relative).
    @inline(__always)
    static func expPolynomial(_ r: V) -> V {
        var p = V(repeating: 1.0 / 720)
        p = V(repeating: 1.0 / 120).addingProduct(p, r)
        p = V(repeating: 1.0 / 24).addingProduct(p, r)
        p = V(repeating: 1.0 / 6).addingProduct(p, r)
        p = V(repeating: 0.5).addingProduct(p, r)
        p = V(repeating: 1).addingProduct(p, r)
        return V(repeating: 1).addingProduct(p, r)
    }

    /// 2ⁿ for t = n + 1.5·2²³ (n an integer in [−126, 127] held in t's low mantissa bits).
    @inline(__always)
    static func twoToThe(_ t: V) -> V {
        V(bits: (t.bits &+ NativeI32(repeating: 127)) &<< NativeI32(repeating: 23))
    }

    /// x·σ(x).
    @inline(__always)
    static func silu(_ x: V) -> V {
        x / (V(repeating: 1) + exp(-x))
    }

    /// x·σ(1.702·x), CLIP's quick GELU.
    @inline(__always)
    static func quickGelu(_ x: V) -> V {
        x / (V(repeating: 1) + exp(x * V(repeating: -1.702)))
    }

    /// erf(x), absolute error < 2e-7 everywhere, relative < 1e-6 for |x| < 0.5:
    /// a Taylor series near 0 (where the relative error matters), Abramowitz & Stegun
    /// 7.1.26 (|ε| ≤ 1.5e-7) elsewhere; both are computed and the lanes picked.
    @inline(__always)
    static func erf(_ x: V) -> V {
        let ax = x.magnitude
        // A&S 7.1.26: erf(a) = 1 − (a1·t + … + a5·t⁵)·e^(−a²), t = 1 / (1 + p·a).
        let t = V(repeating: 1) / V(repeating: 1).addingProduct(ax, V(repeating: 0.327_591_1))
        var q = V(repeating: 1.061_405_429)
        q = V(repeating: -1.453_152_027).addingProduct(q, t)
        q = V(repeating: 1.421_413_741).addingProduct(q, t)
        q = V(repeating: -0.284_496_736).addingProduct(q, t)
        q = V(repeating: 0.254_829_592).addingProduct(q, t)
        let far = V(repeating: 1) - q * t * exp(-(ax * ax))
        // Taylor: 2/√π · Σ (−1)ⁿ x^(2n+1) / (n!(2n+1)), through x¹⁵ (error < 1e-9 at 0.5).
        let x2 = x * x
        var s = V(repeating: -1.0 / 75_600)
        s = V(repeating: 1.0 / 9_360).addingProduct(s, x2)
        s = V(repeating: -1.0 / 1_320).addingProduct(s, x2)
        s = V(repeating: 1.0 / 216).addingProduct(s, x2)
        s = V(repeating: -1.0 / 42).addingProduct(s, x2)
        s = V(repeating: 1.0 / 10).addingProduct(s, x2)
        s = V(repeating: -1.0 / 3).addingProduct(s, x2)
        s = V(repeating: 1).addingProduct(s, x2)
        let near = s * x * V(repeating: 1.128_379_167)
        // far carries the sign of x; near where |x| < 0.5.
        let signedFar = V(bits: far.bits | (x.bits & NativeI32(repeating: Int32(bitPattern: 0x8000_0000))))
        return V.blend(signedFar, near, where: (ax - V(repeating: 0.5)).signMask)
    }

    /// Exact (erf) GELU: ½x(1 + erf(x/√2)).
    @inline(__always)
    static func gelu(_ x: V) -> V {
        V(repeating: 0.5) * x * (V(repeating: 1) + erf(x * V(repeating: 0.707_106_781)))
    }
}
