// Matches PyTorch's CPU generator: torch.Generator("cpu").manual_seed(seed) followed by
// torch.randn(n, generator=g, dtype=torch.float32) (c10/core/CPUGeneratorImpl.cpp,
// ATen/core/MT19937RNGEngine.h, ATen/native/cpu/DistributionTemplates.h).
//
//  * The engine is the standard MT19937 seeded with the low 32 bits of the seed.
//  * n >= 16 (the latents): fill all n floats with uniforms u = (r & (2^24-1)) 2^-24, then
//    Box–Muller over blocks of 16 in place, pairing element j with j + 8:
//        z_j = sqrt(-2 log(1 - u_j)) cos(2 pi u_{j+8}),   z_{j+8} = ... sin(...),
//    in float with avx_mathfun's log/sincos (AVXMathfun.swift). When n % 16 != 0 the last
//    16 values are drawn again (16 fresh uniforms) and recomputed, overwriting the overlap.
//  * n < 16: each element is a double-precision Box–Muller sample from two 53-bit uniforms
//    (u1, u2): r = sqrt(-2 log1p(-u2)), z = r cos(2 pi u1); r sin(2 pi u1) is cached and is
//    the next element, even across calls (but not across an n >= 16 call, which ignores it).
//
// The x86_64 build of torch (AVX2/AVX512) is the reference; torch's own arm64 build uses
// libm for the n >= 16 path and differs from it in the last bits.

/// torch's CPU random generator (MT19937), reproducing `torch.randn`'s draws for a seed.
public struct TorchGenerator: Sendable {
    /// The seed given to `init`, as torch reports it from `initial_seed()`.
    public let seed: UInt64

    private var state: [UInt32]           // MT19937 state, 624 words
    private var stateIndex: Int
    private var cachedNormal: Double?     // torch's next_double_normal_sample
    /// With several seeds: one generator per image (see `init(seeds:)`).
    private var perImage: [TorchGenerator] = []

    /// One generator per image, as diffusers draws with `generator=[g0, g1, …]`: every
    /// `randn` splits its count evenly over the images and draws each image's share from
    /// that image's own generator. Image i's noise is then what a run of that image alone
    /// with `seeds[i]` draws (AUTOMATIC1111's seed, seed + 1, … convention).
    public init(seeds: [UInt64]) {
        precondition(!seeds.isEmpty, "TorchGenerator: no seeds")
        self.init(seed: seeds[0])
        if seeds.count > 1 { perImage = seeds.map { TorchGenerator(seed: $0) } }
    }

    /// One generator seeded like `torch.Generator().manual_seed(seed)`.
    public init(seed: UInt64) {
        self.seed = seed
        var words = [UInt32](repeating: 0, count: 624)
        words[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            let previous = words[i - 1]
            words[i] = 1_812_433_253 &* (previous ^ (previous >> 30)) &+ UInt32(i)
        }
        state = words
        stateIndex = 624
        cachedNormal = nil
    }

    /// `count` samples from the first image's generator alone (the only one with one seed):
    /// diffusers' inpainting encodes its single init image with `generator[0]` of a list.
    public mutating func randnFromFirstImage(count: Int) -> [Float] {
        perImage.isEmpty ? randn(count: count) : perImage[0].randn(count: count)
    }

    /// `count` samples of N(0, 1) exactly as torch.randn(count) draws them from this generator.
    public mutating func randn(count: Int) -> [Float] {
        precondition(count >= 0, "randn: negative count \(count)")
        if !perImage.isEmpty {
            precondition(count % perImage.count == 0, "randn: \(count) values do not split over \(perImage.count) images")
            let share = count / perImage.count
            var data: [Float] = []
            data.reserveCapacity(count)
            for i in perImage.indices { data += perImage[i].randn(count: share) }
            return data
        }
        if count < 16 {
            return (0..<count).map { _ in Float(nextNormalDouble()) }
        }
        var data = [Float](repeating: 0, count: count)
        for i in 0..<count { data[i] = nextUniformFloat() }
        var blockStart = 0
        while blockStart < count - 15 {
            Self.boxMuller16(&data, at: blockStart)
            blockStart += 16
        }
        if count % 16 != 0 {
            let tail = count - 16
            for i in tail..<count { data[i] = nextUniformFloat() }
            Self.boxMuller16(&data, at: tail)
        }
        return data
    }

    // MARK: - MT19937

    mutating func nextUInt32() -> UInt32 {
        if stateIndex >= 624 { twist() }
        var y = state[stateIndex]
        stateIndex += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    private mutating func twist() {
        state.withUnsafeMutableBufferPointer { s in
            for k in 0..<624 {
                let y = (s[k] & 0x8000_0000) | (s[(k + 1) % 624] & 0x7FFF_FFFF)
                var next = s[(k + 397) % 624] ^ (y >> 1)
                if y & 1 != 0 { next ^= 0x9908_B0DF }
                s[k] = next
            }
        }
        stateIndex = 0
    }

    // MARK: - Distributions

    /// uniform_real_distribution<float>(0, 1): 24 random bits of one draw.
    private mutating func nextUniformFloat() -> Float {
        Float(nextUInt32() & 0xFF_FFFF) * (1.0 / 16_777_216.0)
    }

    /// uniform_real_distribution<double>(0, 1): 53 bits of random64() = (first << 32) | second.
    private mutating func nextUniformDouble() -> Double {
        let high = UInt64(nextUInt32())
        let low = UInt64(nextUInt32())
        return Double(((high << 32) | low) & ((1 << 53) - 1)) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// normal_distribution<double>(0, 1) with torch's one-sample cache.
    private mutating func nextNormalDouble() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = nextUniformDouble()
        let u2 = nextUniformDouble()
        let radius = (-2.0 * ElementaryMath.log(1.0 - u2)).squareRoot()   // 1 - u2 is exact: log1p(-u2)
        let theta = 2.0 * Double.pi * u1
        let (sine, cosine) = ElementaryMath.sinCos(theta)
        cachedNormal = radius * sine + 0          // transformation::normal: x * std + mean
        return radius * cosine + 0
    }

    /// normal_fill_16_AVX2: data[i ..< i+16] holds uniforms, becomes normals (mean 0, std 1).
    private static func boxMuller16(_ data: inout [Float], at start: Int) {
        let twoPi = Float(2.0 * Double.pi)
        for j in start..<(start + 8) {
            let u1 = 1 - data[j]                       // [0, 1) -> (0, 1] for the log
            let radius = (-2 * AVXMathfun.log(u1)).squareRoot()
            let (sine, cosine) = AVXMathfun.sinCos(twoPi * data[j + 8])
            // torch stores fma(n, std, mean) = n * 1 + 0, which turns -0 into +0.
            data[j] = radius * cosine + 0
            data[j + 8] = radius * sine + 0
        }
    }
}
