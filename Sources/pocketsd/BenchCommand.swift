import ArgumentParser
import Glibc
import SDFormat
import SDKernels
import SDModels
import SDPipeline

/// `pocketsd bench`: kernel GFLOP/s on the model's own shapes against the machine's FMA
/// peak, then the time and peak RSS of each pipeline phase (docs/BENCHMARKS.md).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure kernel GFLOP/s and per-phase time and memory with a .pdm model file.")

    @Option(name: .shortAndLong, help: "The model file (.pdm).")
    var model: String

    @Option(help: "Image width in pixels, a multiple of 8.")
    var width: Int = 512

    @Option(help: "Image height in pixels, a multiple of 8.")
    var height: Int = 512

    @Option(help: "Guided UNet steps (batch 2) to time; the first one also pages the weights in.")
    var steps: Int = 1

    @Option(help: "Timed repetitions per kernel, after one warm-up run.")
    var repeats: Int = 3

    @Option(help: threadsHelp)
    var threads: Int?

    @Option(help: ArgumentHelp(stringLiteral: PrecisionChoice.help))
    var precision: String = "auto"

    @Option(help: ArgumentHelp(stringLiteral: KernelVariant.help))
    var kernels: String?

    @Flag(help: "Skip the kernel table.")
    var skipKernels = false

    @Flag(help: "Skip the pipeline phases.")
    var skipPhases = false

    @Flag(help: "Also time each 3×3 convolution row as direct (implicit GEMM) and as Winograd, and a skip-connection conv of the UNet's decoder: the data behind the automatic choice.")
    var convAlgorithms = false

    @Flag(help: "Print the result as JSON on stdout.")
    var json = false

    func validate() throws {
        guard width > 0, height > 0, width % 8 == 0, height % 8 == 0 else {
            throw ValidationError("width and height must be positive multiples of 8 (got \(width)x\(height))")
        }
        guard width <= GenerationRequest.maxSide, height <= GenerationRequest.maxSide else {
            throw ValidationError("width and height must be at most \(GenerationRequest.maxSide)")
        }
        guard steps >= 1, steps <= 100 else { throw ValidationError("--steps must be between 1 and 100 (got \(steps))") }
        guard repeats >= 1, repeats <= 1000 else { throw ValidationError("--repeats must be between 1 and 1000 (got \(repeats))") }
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
        _ = try PrecisionChoice.parse(precision)
        if let kernels { _ = try KernelVariant.parseOption(kernels) }
    }

    struct KernelRow { let name: String, shape: String, result: KernelBenchmark.Result }
    struct PhaseRow { let name: String, runs: String, seconds: [Double], cpuSeconds: [Double], peakResident: Int }

    func run() throws {
        let openStart = now()
        let pipeline = try StableDiffusionPipeline(modelPath: model, threads: threads ?? ThreadPool.defaultThreadCount)
        if let kernels { Kernels.variant = try KernelVariant.parseOption(kernels) }  // before precision's auto
        try pipeline.usePrecision(option: precision)
        let openSeconds = now() - openStart
        let file = pipeline.file, pool = pipeline.pool
        let type = StableDiffusionPipeline.unetWeightType(file)
        let h = height / pipeline.vaeScaleFactor, w = width / pipeline.vaeScaleFactor
        let load = Self.loadAverage()

        var peak = 0.0
        var kernels: [KernelRow] = []
        if !skipKernels {
            Terminal.progress("measuring FMA peak…")
            peak = KernelBenchmark.measurePeakGFLOPS(pool: pool)
            for (name, shape, measure) in kernelCases(pipeline, type: type, h: h, w: w) {
                Terminal.progress("\(name) \(shape)…")
                kernels.append(KernelRow(name: name, shape: shape, result: measure()))
            }
        }
        let (phases, tiling) = skipPhases ? ([], nil) : try measurePhases(pipeline, h: h, w: w)
        Terminal.progress("")
        let peakResident = max(MemoryStats.current().peakResident, phases.map(\.peakResident).max() ?? 0)
        let weights = file.string("general.weights") ?? "\(type)"

        if json {
            Terminal.printJSON(.object([
                ("model", .string(model)), ("weights", .string(weights)), ("kernel_weight_type", .string("\(type)")),
                ("precision", .string(pipeline.precision.rawValue)), ("kernel_variant", .string(Kernels.variant.rawValue)),
                ("int8_kernel", .string(Kernels.variant.int8KernelName)),
                ("attention_products", .string(pipeline.precision.attention.rawValue)),
                ("cpu_model", KernelVariant.cpuModelName.map { .string($0) } ?? .null),
                ("cpu_features", .string(KernelVariant.featureNames)),
                ("fma_peak_lanes", .number(Double(KernelBenchmark.peakLanes))),
                ("width", .number(Double(width))), ("height", .number(Double(height))),
                ("threads", .number(Double(pool.threads))), ("load_average", .array(load.map { .number($0) })),
                ("open_seconds", .number(openSeconds)), ("fma_peak_gflops", .number(peak)),
                ("kernels", .array(kernels.map { k in
                    .object([("name", .string(k.name)), ("shape", .string(k.shape)), ("gflops", .number(k.result.gflops)),
                             ("percent_of_peak", .number(peak > 0 ? 100 * k.result.gflops / peak : 0)),
                             ("median_seconds", .number(k.result.medianSeconds)), ("min_seconds", .number(k.result.minSeconds)),
                             ("max_seconds", .number(k.result.maxSeconds)),
                             ("gflops_per_cpu_second", .number(k.result.gflopsPerCPUSecond))])
                })),
                ("phases", .array(phases.map { p in
                    let s = p.seconds.sorted()
                    return .object([("name", .string(p.name)), ("runs", .number(Double(s.count))),
                                    ("median_seconds", .number(s[s.count / 2])), ("min_seconds", .number(s.first!)),
                                    ("max_seconds", .number(s.last!)), ("median_cpu_seconds", .number(Self.median(p.cpuSeconds))),
                                    ("peak_rss_bytes", .number(Double(p.peakResident)))])
                })),
                ("peak_rss_bytes", .number(Double(peakResident))),
                ("vae_tiles_vs_whole", tiling.map { .object([("relative_rms", .number($0.relativeRMS)),
                                                             ("max_abs", .number($0.maxAbs))]) } ?? .null),
                ("load_average_end", .array(Self.loadAverage().map { .number($0) })),
            ]))
            return
        }
        print("pocketsd bench: \(model) (weights \(weights), kernels run \(type), precision \(pipeline.precision.rawValue)\(int8Details(pipeline.precision))), \(width)×\(height) (latent \(w)×\(h)), "
              + "\(pool.threads) threads, load average \(load.map { format($0, 2) }.joined(separator: " ")) at start")
        print("CPU: \(KernelVariant.cpuModelName ?? "unknown") (\(KernelVariant.featureNames)); kernels: \(Kernels.variant.rawValue)")
        if !skipKernels {
            print("\nFMA peak: \(format(peak, 1)) GFLOP/s (\(pool.threads) threads, \(KernelBenchmark.peakLanes)-wide FMA: the widest this CPU has). "
                  + "Kernels: median of \(repeats) after one warm-up.\n")
            print("| kernel | shape | GFLOP/s | % of peak | median ms | min ms | max ms | GFLOP/s per CPU-s |")
            print("|---|---|--:|--:|--:|--:|--:|--:|")
            for k in kernels {
                let r = k.result
                print("| \(k.name) | \(k.shape) | \(format(r.gflops, 1)) | \(format(100 * r.gflops / peak, 0)) | "
                      + "\(format(r.medianSeconds * 1e3, 1)) | \(format(r.minSeconds * 1e3, 1)) | \(format(r.maxSeconds * 1e3, 1)) | "
                      + "\(format(r.gflopsPerCPUSecond, 1)) |")
            }
        }
        print("\n| phase | runs | median s | min s | max s | CPU s (median) | peak RSS |")
        print("|---|---|--:|--:|--:|--:|--:|")
        print("| open model file | 1 | \(format(openSeconds, 3)) | | | | |")
        for p in phases {
            let s = p.seconds.sorted()
            print("| \(p.name) | \(p.runs) | \(format(s[s.count / 2], 2)) | \(format(s.first!, 2)) | \(format(s.last!, 2)) | "
                  + "\(format(Self.median(p.cpuSeconds), 2)) | \(formatBytes(p.peakResident)) |")
        }
        print("| whole process | | | | | | \(formatBytes(peakResident)) |")
        if let tiling {
            print("\nVAE decode in 160-px tiles vs in one piece (same latent, this model's weights): relative RMS "
                  + "\(format(tiling.relativeRMS, 4)), largest difference \(format(tiling.maxAbs, 3)) (image values in [-1, 1])")
        }
    }

    /// The SD shapes this model runs at this image size, from its configs.
    func kernelCases(_ p: StableDiffusionPipeline, type: WeightType, h: Int, w: Int)
        -> [(String, String, () -> KernelBenchmark.Result)] {
        let pool = p.pool, n = repeats, unet = p.unetConfig
        let ch = unet.blockOutChannels, last = ch.count - 1
        // Attention runs from the first level with cross-attention blocks (SDXL's first has none).
        let attentionLevel = unet.downBlockTypes.firstIndex(of: .crossAttnDownBlock2D) ?? 0
        let heads = unet.attentionHeads[attentionLevel], contextTokens = p.tokenizer.maxLength
        let tokens = h * w, attentionTokens = max(1, h >> attentionLevel) * max(1, w >> attentionLevel)
        let lowTokens = max(1, h >> last) * max(1, w >> last)
        var cases: [(String, String, () -> KernelBenchmark.Result)] = [
            ("linear", "\(ch[0])×\(ch[0]), P=\(tokens)",
             { KernelBenchmark.gemm(n: ch[0], k: ch[0], p: tokens, type: type, pool: pool, repeats: n) }),
            // GEGLU: FeedForward(mult 4) projects to 2 · 4c (value and gate halves).
            ("linear GEGLU proj", "\(8 * ch[0])×\(ch[0]), P=\(tokens)",
             { KernelBenchmark.gemm(n: 8 * ch[0], k: ch[0], p: tokens, type: type, pool: pool, repeats: n) }),
            ("linear (mid block)", "\(ch[last])×\(ch[last]), P=\(lowTokens)",
             { KernelBenchmark.gemm(n: ch[last], k: ch[last], p: lowTokens, type: type, pool: pool, repeats: n) }),
        ]
        // A 3×3 conv row as `conv2d` chooses; with --conv-algorithms also direct and Winograd.
        func conv(_ name: String, _ cin: Int, _ cout: Int, _ hl: Int, _ wl: Int) {
            let algorithms: [(String, Kernels.ConvAlgorithm)] =
                [("", .automatic)] + (convAlgorithms ? [(" direct", .direct), (" winograd", .winograd)] : [])
            for (suffix, algorithm) in algorithms {
                cases.append((name + suffix, "\(cin)→\(cout), \(wl)×\(hl)", {
                    KernelBenchmark.conv3x3(inChannels: cin, outChannels: cout, height: hl, width: wl, type: type,
                                            pool: pool, repeats: n, algorithm: algorithm)
                }))
            }
        }
        var seen: Set<Int> = []
        for (level, c) in ch.enumerated() where seen.insert(c).inserted {
            conv("conv3x3", c, c, max(1, h >> level), max(1, w >> level))
        }
        if convAlgorithms && last > 0 {
            // The decoder's first conv on the deepest skip concatenation it upsamples to.
            conv("conv3x3 (skip concat)", 2 * ch[last], ch[last], max(1, h >> (last - 1)), max(1, w >> (last - 1)))
        }
        // VAE decoder: widest block at latent size; the narrowest at half the image size
        // (its real plane is the full image: 4× these FLOPs at the same rate).
        let vaeWide = p.vaeConfig.blockOutChannels.last!, vaeNarrow = p.vaeConfig.blockOutChannels[0]
        let hh = max(1, height / 2), wh = max(1, width / 2)
        conv("VAE conv3x3", vaeWide, vaeWide, h, w)
        conv("VAE conv3x3", vaeNarrow, vaeNarrow, hh, wh)
        // TAESD's decoder, when the file carries one: its last level's convolutions at the
        // full image size (most of its work) and the level before at half.
        if p.hasTinyAutoencoder, let taesd = try? p.tinyAutoencoder() {
            let c = taesd.config.decoderBlockOutChannels.last!
            for (hl, wl) in [(height, width), (hh, wh)] { conv("TAESD conv3x3", c, c, hl, wl) }
        }
        let d = ch[attentionLevel] / heads
        cases.append(("attention self", "\(heads)×\(d), T=\(attentionTokens)", {
            KernelBenchmark.attention(heads: heads, headDim: d, queryTokens: attentionTokens, keyTokens: attentionTokens,
                                      pool: pool, repeats: n)
        }))
        cases.append(("attention cross", "\(heads)×\(d), Tq=\(attentionTokens), Tk=\(contextTokens)", {
            KernelBenchmark.attention(heads: heads, headDim: d, queryTokens: attentionTokens, keyTokens: contextTokens,
                                      pool: pool, repeats: n)
        }))
        return cases
    }

    /// How far `stream`'s tiled VAE decode is from the whole decode.
    struct TilingDifference { let relativeRMS: Double, maxAbs: Double }

    /// Text encoder (batch 2, median of 3 after a warm-up), `steps` guided UNet steps
    /// (batch 2; the first pages the weights in), one VAE decode in one piece (as `keep`
    /// runs it) and one in `stream`'s tiles. Each phase binds its component, reports its own
    /// peak RSS, and drops the weight pages afterwards.
    func measurePhases(_ p: StableDiffusionPipeline, h: Int, w: Int) throws -> ([PhaseRow], TilingDifference?) {
        let pool = p.pool
        var rows: [PhaseRow] = []
        // Each row's own peak, the process's peak left intact (see PhasePeaks).
        let peaks = PhasePeaks()
        defer { peaks.stop() }
        func release(_ name: String) {
            if let range = p.file.components.first(where: { $0.name == name })?.range { p.file.file.release(range) }
        }

        Terminal.progress("text encoder…")
        _ = peaks.take()
        let prompt = "a photograph of an astronaut riding a horse"
        // The UNet's context [negative "", prompt], and for SDXL its added conditions.
        let encode: () throws -> (context: [Float], added: UNetAddedConditions?)
        var textArena: ActivationArena?
        defer { textArena?.close() }
        if p.isSDXL {
            // Both encoders, the pooled projection and the size ids, as `generate` runs them
            // (each run binds the encoders and drops their pages after, as `generate` does).
            var request = GenerationRequest(prompts: [prompt], negativePrompts: [""])
            (request.width, request.height) = (width, height)
            encode = { let e = try p.encodePrompt(request); return (e.context, e.added) }
        } else {
            let text = try CLIPTextModel(config: p.textConfig, weights: p.file.component("text_encoder"))
            let ids = p.tokenizer.tokenize("") + p.tokenizer.tokenize(prompt)
            // Each phase runs in its planned activation arena, as `generate` does.
            let arena = try ActivationArena(plan: ActivationArena.plan { _ = try text.encode(ids: ids, batch: 2, pool: pool) })
            textArena = arena
            encode = { (try arena.run { try text.encode(ids: ids, batch: 2, pool: pool) }, nil) }
        }
        var (context, added) = try encode()
        var textTimes: [Double] = [], textCPU: [Double] = []
        for _ in 0..<3 {
            let t0 = now(), c0 = Self.cpuSeconds()
            (context, added) = try encode()
            textTimes.append(now() - t0)
            textCPU.append(Self.cpuSeconds() - c0)
        }
        let encoders = p.isSDXL ? "text encoders 1+2 (batch 2)" : "text encoder (batch 2)"
        rows.append(PhaseRow(name: encoders, runs: "3 after warm-up", seconds: textTimes, cpuSeconds: textCPU,
                             peakResident: peaks.take().peakResident))
        release("text_encoder")

        _ = peaks.take()
        let unet = try UNet2DConditionModel(config: p.unetConfig, weights: p.file.component("unet"))
        let plane = p.unetConfig.inChannels * h * w
        let latents = Self.noise(count: plane)
        var unetTimes: [Double] = [], unetCPU: [Double] = []
        func predict() -> [Float] {
            unet.predictNoise(sample: latents + latents, batch: 2, height: h, width: w, timestep: 981,
                              context: context, contextTokens: p.tokenizer.maxLength, added: added, pool: pool)
        }
        let unetArena = ActivationArena(plan: ActivationArena.plan { _ = predict() },
                                        idlePageEvents: p.memoryPlan.unetIdlePageEvents)
        defer { unetArena.close() }
        for step in 0..<steps {
            Terminal.progress("UNet step \(step + 1)/\(steps)…")
            let t0 = now(), c0 = Self.cpuSeconds()
            let prediction = unetArena.run(predict)
            var guided = [Float](repeating: 0, count: plane)
            for j in 0..<plane { guided[j] = prediction[j] + 7.5 * (prediction[plane + j] - prediction[j]) }
            unetTimes.append(now() - t0)
            unetCPU.append(Self.cpuSeconds() - c0)
            if !guided.allSatisfy({ $0.isFinite }) { throw FormatError(model, "the UNet produced non-finite values") }
        }
        rows.append(PhaseRow(name: "UNet step, guided (batch 2)", runs: steps == 1 ? "1 (cold pages)" : "\(steps), first cold",
                             seconds: unetTimes, cpuSeconds: unetCPU, peakResident: peaks.take().peakResident))
        release("unet")

        Terminal.progress("VAE decode…")
        _ = peaks.take()
        let vae = try AutoencoderKL(config: p.vaeConfig, weights: p.file.component("vae"))
        func decode(_ tiling: VAETiling?, name: String) throws -> [Float] {
            _ = peaks.take()
            let arena = ActivationArena(plan: ActivationArena.plan {
                _ = vae.decode(latents: latents, batch: 1, height: h, width: w, tiling: tiling, pool: pool)
            })
            defer { arena.close() }
            let t0 = now(), c0 = Self.cpuSeconds()
            let image = arena.run { vae.decode(latents: latents, batch: 1, height: h, width: w, tiling: tiling, pool: pool) }
            rows.append(PhaseRow(name: name, runs: "1", seconds: [now() - t0], cpuSeconds: [Self.cpuSeconds() - c0],
                                 peakResident: peaks.take().peakResident))
            if !image.allSatisfy({ $0.isFinite }) { throw FormatError(model, "the VAE produced non-finite values") }
            return image
        }
        let whole = try decode(nil, name: "VAE decode \(width)×\(height)")
        var difference: TilingDifference?
        if VAETiling.standard.applies(height: h, width: w, factor: p.vaeScaleFactor) {
            Terminal.progress("VAE decode in tiles…")
            let tiled = try decode(.standard, name: "VAE decode \(width)×\(height), 160-px tiles")
            var squares = 0.0, reference = 0.0, largest = 0.0
            for (a, b) in zip(tiled, whole) {
                let d = Double(a) - Double(b)
                squares += d * d
                reference += Double(b) * Double(b)
                largest = max(largest, abs(d))
            }
            difference = TilingDifference(relativeRMS: (squares / max(reference, 1e-30)).squareRoot(), maxAbs: largest)
        }
        release("vae")
        return (rows, difference)
    }

    /// Roughly unit-variance values from a fixed-seed xorshift: benchmark inputs only.
    static func noise(count: Int) -> [Float] {
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        return (0..<count).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(Int64(bitPattern: state >> 40) - (1 << 23)) / Float(1 << 23) * 1.7
        }
    }

    /// CPU time of all threads of the process: unlike wall time, barely inflated when other
    /// processes share the cores (the pool's idle workers sleep rather than spin).
    static func cpuSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    static func median(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.sorted()[values.count / 2] }

    static func loadAverage() -> [Double] {
        var values = [Double](repeating: 0, count: 3)
        return getloadavg(&values, 3) == 3 ? values : []
    }
}
