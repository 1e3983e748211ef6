import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Opt-in measurements for the CLI (`pocketsd bench`) and for tuning: GFLOP/s of each hot
/// kernel on a given shape (median of `repeats` after one warm-up run) and the machine's
/// FMA peak to compare them with. Inputs are random; nothing here is asserted in tests.
public enum KernelBenchmark {
    typealias V = NativeF32

    /// One timed measurement: wall-clock median and spread over the repeats, plus the rate
    /// per CPU-second of the process (robust when other processes share the cores; equal
    /// to `gflops / threads` on an idle machine with perfectly balanced parts).
    public struct Result: Sendable, CustomStringConvertible {
        /// Billions of floating-point operations per wall-clock second, at the median time.
        public let gflops: Double
        /// Median wall-clock time of one run, seconds.
        public let medianSeconds: Double
        /// Fastest run, seconds.
        public let minSeconds: Double
        /// Slowest run, seconds.
        public let maxSeconds: Double
        /// GFLOP per second of the process's CPU time (all threads), at the median CPU time.
        public let gflopsPerCPUSecond: Double
        /// One line: GFLOP/s, median, min and max in ms, and GFLOP per CPU-second.
        public var description: String {
            "\(format(gflops, 1)) GFLOP/s (median \(format(medianSeconds * 1e3, 3)) ms, "
                + "min \(format(minSeconds * 1e3, 3)), max \(format(maxSeconds * 1e3, 3)); "
                + "\(format(gflopsPerCPUSecond, 1)) per CPU-second)"
        }
    }

    /// FMA throughput with everything in registers, all pool threads busy: the ceiling for
    /// the kernels (GFLOP/s summed over threads; 1 FMA = 2 FLOP). Each thread is timed by
    /// its own CPU clock and the best of several runs is kept, so that other processes
    /// sharing the cores do not lower the ceiling.
    /// Measured with the widest vectors the CPU has (`peakLanes`), whatever variant runs,
    /// so that "% of peak" is against the true peak of the widest FMA unit.
    public static func measurePeakGFLOPS(pool: ThreadPool) -> Double {
        let iterations = 2_000_000
        let flopsPerThread = Double(iterations * 12 * peakLanes * 2)
        let perThread = UnsafeMutablePointer<Double>.allocate(capacity: pool.threads)
        perThread.initialize(repeating: 0, count: pool.threads)
        let sink = UnsafeMutablePointer<Float>.allocate(capacity: pool.threads)
        defer { perThread.deallocate(); sink.deallocate() }
        for _ in 0..<8 {
            pool.run(parts: pool.threads) { part in
                let t0 = threadCPUSeconds()
                sink[part] = widestFMALoop(iterations: iterations)
                perThread[part] = max(perThread[part], flopsPerThread / (threadCPUSeconds() - t0) / 1e9)
            }
        }
        var total = 0.0
        for i in 0..<pool.threads { total += perThread[i] }
        return total
    }

    /// f32 lanes of the widest FMA vectors this CPU runs: 16 (zmm), 8 (ymm), else the
    /// build's `NativeF32` width.
    public static var peakLanes: Int {
        let f = KernelVariant.cpuFeatures
        if f & UInt32(PD_CPU_AVX512) != 0 { return 16 }
        if f & UInt32(PD_CPU_AVX2_FMA) != 0 { return 8 }
        return V.scalarCount
    }

    static func widestFMALoop(iterations: Int) -> Float {
        let f = KernelVariant.cpuFeatures
        if f & UInt32(PD_CPU_AVX512) != 0 { return pd_fma_loop_avx512(iterations) }
        if f & UInt32(PD_CPU_AVX2_FMA) != 0 { return pd_fma_loop_avx2(iterations) }
        return fmaLoop(iterations: iterations)
    }

    @inline(never)
    static func fmaLoop(iterations: Int) -> Float {
        // 12 independent chains: enough to cover FMA latency × pipes on current cores.
        let m = V(repeating: 0.999_999), d = V(repeating: 1e-7)
        var a0 = V(repeating: 1), a1 = V(repeating: 2), a2 = V(repeating: 3), a3 = V(repeating: 4)
        var a4 = V(repeating: 5), a5 = V(repeating: 6), a6 = V(repeating: 7), a7 = V(repeating: 8)
        var a8 = V(repeating: 9), a9 = V(repeating: 10), a10 = V(repeating: 11), a11 = V(repeating: 12)
        for _ in 0..<iterations {
            a0 = d.addingProduct(a0, m); a1 = d.addingProduct(a1, m); a2 = d.addingProduct(a2, m)
            a3 = d.addingProduct(a3, m); a4 = d.addingProduct(a4, m); a5 = d.addingProduct(a5, m)
            a6 = d.addingProduct(a6, m); a7 = d.addingProduct(a7, m); a8 = d.addingProduct(a8, m)
            a9 = d.addingProduct(a9, m); a10 = d.addingProduct(a10, m); a11 = d.addingProduct(a11, m)
        }
        let s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11
        return s.sum()
    }

    /// Empty-region cost of `pool` in seconds (median over `regions` calls).
    public static func poolOverhead(pool: ThreadPool, regions: Int = 2000) -> Double {
        var times: [Double] = []
        times.reserveCapacity(regions)
        let sink = UnsafeMutablePointer<Int>.allocate(capacity: pool.threads)
        defer { sink.deallocate() }
        for i in 0..<regions {
            let t0 = monotonicSeconds()
            pool.run(parts: pool.threads) { part in sink[part] = i }
            times.append(monotonicSeconds() - t0)
        }
        times.sort()
        return times[times.count / 2]
    }

    /// Median GFLOP/s of `Kernels.linear` y[N, P] = W[N, K] · x[K, P] with `type` weights.
    public static func gemmGFLOPS(n: Int, k: Int, p: Int, type: WeightType, pool: ThreadPool,
                                  repeats: Int = 5) -> Double {
        gemm(n: n, k: k, p: p, type: type, pool: pool, repeats: repeats).gflops
    }

    /// Median GFLOP/s of `Kernels.conv2d` 3×3, padding 1, batch 1.
    public static func conv3x3GFLOPS(inChannels cin: Int, outChannels cout: Int, height: Int, width: Int,
                                     stride: Int = 1, type: WeightType = .f32, pool: ThreadPool,
                                     repeats: Int = 5) -> Double {
        conv3x3(inChannels: cin, outChannels: cout, height: height, width: width, stride: stride, type: type,
                pool: pool, repeats: repeats).gflops
    }

    /// Median GFLOP/s of `Kernels.attention`, batch 1.
    public static func attentionGFLOPS(heads: Int, headDim d: Int, queryTokens tq: Int, keyTokens tk: Int,
                                       causal: Bool = false, pool: ThreadPool, repeats: Int = 5) -> Double {
        attention(heads: heads, headDim: d, queryTokens: tq, keyTokens: tk, causal: causal, pool: pool,
                  repeats: repeats).gflops
    }

    /// `Kernels.linear` y[N, P] = W[N, K] · x[K, P] with `type` weights: median and spread.
    public static func gemm(n: Int, k: Int, p: Int, type: WeightType, pool: ThreadPool,
                            repeats: Int = 5) -> Result {
        let weights = RandomWeights(rows: n, cols: k, type: type)
        let x = randomBuffer(k * p), y = UnsafeMutablePointer<Float>.allocate(capacity: n * p)
        defer { x.deallocate(); y.deallocate() }
        return time(flops: 2 * Double(n) * Double(k) * Double(p), repeats: repeats) {
            Kernels.linear(weights.matrix, input: x, columns: p, bias: nil, residual: nil, output: y, pool: pool)
        }
    }

    /// `Kernels.conv2d` 3×3, padding 1, batch 1: [cin, h, w] → [cout, h/stride, w/stride].
    /// `algorithm` is set as `Kernels.convAlgorithm` for the measurement; FLOPs are the
    /// direct conv's (2·Cout·Cin·9 per output), so Winograd reports an effective rate.
    public static func conv3x3(inChannels cin: Int, outChannels cout: Int, height: Int, width: Int,
                               stride: Int = 1, type: WeightType = .f32, pool: ThreadPool,
                               repeats: Int = 5, algorithm: Kernels.ConvAlgorithm = .automatic) -> Result {
        let saved = Kernels.convAlgorithm
        Kernels.convAlgorithm = algorithm
        defer { Kernels.convAlgorithm = saved }
        let weights = RandomWeights(rows: cout, cols: cin * 9, type: type)
        let ho = (height + 2 - 3) / stride + 1, wo = (width + 2 - 3) / stride + 1
        let x = randomBuffer(cin * height * width), y = UnsafeMutablePointer<Float>.allocate(capacity: cout * ho * wo)
        defer { x.deallocate(); y.deallocate() }
        return time(flops: 2 * Double(cout) * Double(cin * 9) * Double(ho * wo), repeats: repeats) {
            Kernels.conv2d(weights.matrix, kernelSize: 3, stride: stride, padding: 1, input: x, channels: cin,
                           batch: 1, height: height, width: width, bias: nil, residual: nil, output: y, pool: pool)
        }
    }

    /// `Kernels.attention`, batch 1, counting the two products (4·Tq·Tk·d per head; causal
    /// counts the full square too).
    public static func attention(heads: Int, headDim d: Int, queryTokens tq: Int, keyTokens tk: Int,
                                 causal: Bool = false, pool: ThreadPool, repeats: Int = 5) -> Result {
        let q = randomBuffer(heads * d * tq), k = randomBuffer(heads * d * tk), v = randomBuffer(heads * d * tk)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: heads * d * tq)
        defer { q.deallocate(); k.deallocate(); v.deallocate(); y.deallocate() }
        return time(flops: 4 * Double(heads) * Double(d) * Double(tq) * Double(tk), repeats: repeats) {
            Kernels.attention(query: q, key: k, value: v, heads: heads, headDim: d, batch: 1, queryTokens: tq,
                              keyTokens: tk, causal: causal, output: y, pool: pool)
        }
    }

    /// A markdown table of the Stable Diffusion 1.5 shapes against the peak.
    public static func standardReport(pool: ThreadPool, repeats: Int = 5) -> String {
        let peak = measurePeakGFLOPS(pool: pool), corePeak = peak / Double(pool.threads)
        var lines = ["threads: \(pool.threads), FMA peak: \(format(peak, 1)) GFLOP/s", "",
                     "| kernel | shape | GFLOP/s | % of peak | median ms | GFLOP/s per CPU-s | % of 1-core peak |",
                     "|---|---|---|---|---|---|---|"]
        func row(_ name: String, _ shape: String, _ r: Result) {
            lines.append("| \(name) | \(shape) | \(format(r.gflops, 1)) | \(format(100 * r.gflops / peak, 0)) | "
                         + "\(format(r.medianSeconds * 1e3, 2)) | \(format(r.gflopsPerCPUSecond, 1)) | "
                         + "\(format(100 * r.gflopsPerCPUSecond / corePeak, 0)) |")
        }
        for type in [WeightType.f32, .f16, .q8] {
            row("linear \(type)", "320×320, P=4096", gemm(n: 320, k: 320, p: 4096, type: type, pool: pool, repeats: repeats))
            row("linear \(type)", "1280×1280, P=256", gemm(n: 1280, k: 1280, p: 256, type: type, pool: pool, repeats: repeats))
            row("linear \(type)", "5120×1280, P=1024", gemm(n: 5120, k: 1280, p: 1024, type: type, pool: pool, repeats: repeats))
            row("linear \(type)", "768×768, P=77", gemm(n: 768, k: 768, p: 77, type: type, pool: pool, repeats: repeats))
        }
        // Winograd rows: effective GFLOP/s (direct-conv FLOPs / time), f16 weights as shipped.
        for (c, h) in [(320, 64), (640, 32), (1280, 16), (1280, 8), (512, 64), (128, 256)] {
            let n = h >= 256 ? max(1, repeats / 2) : repeats
            for algorithm in [Kernels.ConvAlgorithm.direct, .winograd] {
                row("conv3x3 f16 \(algorithm)", "\(c)→\(c), \(h)×\(h)",
                    conv3x3(inChannels: c, outChannels: c, height: h, width: h, type: .f16, pool: pool, repeats: n,
                            algorithm: algorithm))
            }
        }
        row("conv3x3 s2", "320→320, 64×64", conv3x3(inChannels: 320, outChannels: 320, height: 64, width: 64, stride: 2, pool: pool, repeats: repeats))
        row("attention", "8×40, T=4096", attention(heads: 8, headDim: 40, queryTokens: 4096, keyTokens: 4096, pool: pool, repeats: max(1, repeats / 2)))
        row("attention", "8×40, Tq=4096, Tk=77", attention(heads: 8, headDim: 40, queryTokens: 4096, keyTokens: 77, pool: pool, repeats: repeats))
        row("attention", "8×80, T=1024", attention(heads: 8, headDim: 80, queryTokens: 1024, keyTokens: 1024, pool: pool, repeats: repeats))
        row("attention (VAE)", "1×512, T=4096", attention(heads: 1, headDim: 512, queryTokens: 4096, keyTokens: 4096, pool: pool, repeats: max(1, repeats / 2)))
        row("attention", "8×160, T=64", attention(heads: 8, headDim: 160, queryTokens: 64, keyTokens: 64, pool: pool, repeats: repeats))
        row("attention causal", "12×64, T=77", attention(heads: 12, headDim: 64, queryTokens: 77, keyTokens: 77, causal: true, pool: pool, repeats: repeats))
        return lines.joined(separator: "\n")
    }

    // MARK: tuning (internal; non-generic so that callers outside the module still get
    // the NativeF32 specialisation)

    static func linear(_ w: WeightMatrix, input x: UnsafePointer<Float>, columns: Int,
                       output y: UnsafeMutablePointer<Float>, pool: ThreadPool, blocking: Gemm.Blocking) {
        Gemm.linear(w, input: x, columns: columns, bias: nil, residual: nil, output: y, pool: pool,
                    blocking: blocking)
    }

    static func conv2d(_ w: WeightMatrix, geometry: Conv.Geometry, input x: UnsafePointer<Float>,
                       output y: UnsafeMutablePointer<Float>, pool: ThreadPool, blocking: Gemm.Blocking) {
        Conv.conv2d(w, geometry: geometry, input: x, bias: nil, residual: nil, output: y, pool: pool,
                    blocking: blocking)
    }

    // MARK: helpers

    static func time(flops: Double, repeats: Int, _ body: () -> Void) -> Result {
        body() // warm-up: page faults, scratch growth
        var times: [Double] = [], cpuTimes: [Double] = []
        for _ in 0..<max(1, repeats) {
            let c0 = processCPUSeconds(), t0 = monotonicSeconds()
            body()
            times.append(monotonicSeconds() - t0)
            cpuTimes.append(processCPUSeconds() - c0)
        }
        times.sort()
        cpuTimes.sort()
        let median = times[times.count / 2]
        return Result(gflops: flops / median / 1e9, medianSeconds: median, minSeconds: times.first!,
                      maxSeconds: times.last!, gflopsPerCPUSecond: flops / cpuTimes[cpuTimes.count / 2] / 1e9)
    }

    static func threadCPUSeconds() -> Double { clockSeconds(CLOCK_THREAD_CPUTIME_ID) }
    static func processCPUSeconds() -> Double { clockSeconds(CLOCK_PROCESS_CPUTIME_ID) }

    static func clockSeconds(_ clock: clockid_t) -> Double {
        var t = timespec()
        clock_gettime(clock, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    static func monotonicSeconds() -> Double { clockSeconds(CLOCK_MONOTONIC) }

    /// Uniform in [−1, 1) from a fixed-seed xorshift (benchmarks need no quality).
    static func randomBuffer(_ count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> UnsafeMutablePointer<Float> {
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        var state = seed
        for i in 0..<count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            buffer[i] = Float(Int64(bitPattern: state >> 40) - (1 << 23)) / Float(1 << 23)
        }
        return buffer
    }

    /// Owns random weights of any type and the `WeightMatrix` viewing them.
    final class RandomWeights {
        let matrix: WeightMatrix
        private let storage: UnsafeMutableRawPointer
        private let scales: UnsafeMutablePointer<Float>?

        init(rows: Int, cols: Int, type: WeightType) {
            let values = randomBuffer(rows * cols)
            defer { values.deallocate() }
            for i in 0..<rows * cols { values[i] *= 0.05 }
            switch type {
            case .f32:
                let copy = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
                copy.initialize(from: values, count: rows * cols)
                storage = UnsafeMutableRawPointer(copy)
                scales = nil
            case .f16:
                let h = UnsafeMutablePointer<Float16>.allocate(capacity: rows * cols)
                Quantization.floatToHalf(values, count: rows * cols, output: h)
                storage = UnsafeMutableRawPointer(h)
                scales = nil
            case .q8:
                let q = UnsafeMutablePointer<Int8>.allocate(capacity: rows * cols)
                let s = UnsafeMutablePointer<Float>.allocate(capacity: rows)
                Quantization.quantizeRowsQ8(values, rows: rows, cols: cols, values: q, scales: s)
                storage = UnsafeMutableRawPointer(q)
                scales = s
            }
            matrix = WeightMatrix(type: type, rows: rows, cols: cols, data: UnsafeRawPointer(storage),
                                  scales: scales.map { UnsafePointer($0) })
        }

        deinit {
            storage.deallocate()
            scales?.deallocate()
        }
    }
}

/// Fixed-point text without Foundation.
func format(_ value: Double, _ decimals: Int) -> String {
    if !value.isFinite { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = Int(scaled / scale), fraction = Int(scaled - Double(whole) * scale)
    var text = (value < 0 ? "-" : "") + "\(whole)"
    if decimals > 0 {
        var digits = "\(fraction)"
        while digits.count < decimals { digits = "0" + digits }
        text += "." + digits
    }
    return text
}
