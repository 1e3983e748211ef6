// Small pieces shared by the scheduler classes: timestep spacing, prediction types and the
// elementwise loops every update is made of.

enum TimestepSpacing: String {
    case leading, linspace, trailing

    init(_ config: SchedulerConfig, default fallback: TimestepSpacing, scheduler: String) throws {
        let name = config.timestepSpacing ?? fallback.rawValue
        guard let spacing = TimestepSpacing(rawValue: name) else {
            throw SchedulerError.unsupported(scheduler: scheduler, setting: "timestep_spacing", value: name)
        }
        self = spacing
    }
}

/// The float timesteps of LMS, Euler and Euler a (descending, float32).
func sigmaSchedulerTimesteps(_ spacing: TimestepSpacing, steps: Int, config: SchedulerConfig) -> [Float] {
    let train = config.numTrainTimesteps
    switch spacing {
    case .linspace:
        return numpyLinspace(0, Double(train - 1), count: steps).reversed().map { Float($0) }
    case .leading:
        let ratio = train / steps
        return (0..<steps).reversed().map { Float(Double($0 * ratio)) + Float(config.stepsOffset) }
    case .trailing:
        return numpyArange(Double(train), 0, step: -(Double(train) / Double(steps)))
            .map { Float($0.rounded(.toNearestOrEven)) - 1 }
    }
}

/// Prediction types every class understands; `sample` where the class allows it.
enum PredictionType: String {
    case epsilon
    case vPrediction = "v_prediction"
    case sample

    init(_ config: SchedulerConfig, scheduler: String, allowSample: Bool = true) throws {
        guard let type = PredictionType(rawValue: config.predictionType), type != .sample || allowSample else {
            throw SchedulerError.unsupported(scheduler: scheduler, setting: "prediction_type", value: config.predictionType)
        }
        self = type
    }
}

/// Elementwise helpers: every scheduler update is a few scalar-vector operations.
@inline(__always)
func elementwise(_ a: [Float], _ body: (Float) -> Float) -> [Float] {
    [Float](unsafeUninitializedCapacity: a.count) { out, initialized in
        a.withUnsafeBufferPointer { pa in
            for i in 0..<pa.count { out[i] = body(pa[i]) }
        }
        initialized = a.count
    }
}

@inline(__always)
func elementwise(_ a: [Float], _ b: [Float], _ body: (Float, Float) -> Float) -> [Float] {
    precondition(a.count == b.count, "scheduler: sample and model output differ in size (\(a.count) vs \(b.count))")
    return [Float](unsafeUninitializedCapacity: a.count) { out, initialized in
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                for i in 0..<pa.count { out[i] = body(pa[i], pb[i]) }
            }
        }
        initialized = a.count
    }
}

/// x̂_0 from the model output in sigma space (Karras et al. 2022, Table 1 preconditioning):
/// eps: x - σ ε;  v: -σ/sqrt(σ²+1) v + x/(σ²+1);  sample: the output itself.
func sigmaSpaceOriginalSample(_ prediction: PredictionType, sigma: Float, sample: [Float], modelOutput: [Float]) -> [Float] {
    switch prediction {
    case .epsilon:
        return elementwise(sample, modelOutput) { $0 - sigma * $1 }
    case .vPrediction:
        let cOut = -sigma / (sigma * sigma + 1).squareRoot()
        let cSkipDenominator = sigma * sigma + 1
        return elementwise(modelOutput, sample) { $0 * cOut + $1 / cSkipDenominator }
    case .sample:
        return modelOutput
    }
}

/// The σ-space schedule shared by Euler, Euler ancestral and LMS: timesteps spaced as the
/// config says, σ(t) interpolated from the training table (or Karras-spaced with the
/// timesteps mapped back), and the initial noise scale diffusers derives from them.
struct SigmaSchedule {
    let timesteps: [Float]
    /// σ_0 … σ_{n-1} in float64, before the caller appends the final σ.
    let sigmas: [Double]
    let spacing: TimestepSpacing

    init(config: SchedulerConfig, steps: Int, table: [Float], scheduler name: String, karras: Bool) throws {
        spacing = try TimestepSpacing(config, default: .linspace, scheduler: name)
        var times = sigmaSchedulerTimesteps(spacing, steps: steps, config: config)
        var schedule = times.map { numpyInterp(Double($0), table: table) }
        if karras {
            schedule = karrasSigmas(sigmaMin: schedule[schedule.count - 1], sigmaMax: schedule[0], count: steps)
            let logTable = table.map { ElementaryMath.log($0) }
            times = schedule.map { Float(sigmaToTimestep($0, logSigmas: logTable)) }
        }
        timesteps = times
        sigmas = schedule
    }

    /// diffusers: max σ, or sqrt(max σ² + 1) with "leading" spacing.
    func initNoiseSigma(_ sigmas: [Float]) -> Float {
        let maxSigma = sigmas.max()!
        return spacing == .leading ? (maxSigma * maxSigma + 1).squareRoot() : maxSigma
    }
}

/// The model input of σ-space schedulers: x / sqrt(σ² + 1).
func scaledBySigma(_ sample: [Float], _ sigma: Float) -> [Float] {
    let scale = (sigma * sigma + 1).squareRoot()
    return elementwise(sample) { $0 / scale }
}

// MARK: - add_noise

/// DDPM-style forward process (DDIM, PNDM, LCM): sqrt(ᾱ) x + sqrt(1 - ᾱ) n, the two products
/// rounded separately as torch computes them.
func alphaSpaceNoised(_ original: [Float], _ noise: [Float], alphaCumprod: Float) -> [Float] {
    let a = alphaCumprod.squareRoot(), b = (1 - alphaCumprod).squareRoot()
    return elementwise(original, noise) { x, n in
        let signal = a * x, scaledNoise = b * n
        return signal + scaledNoise
    }
}

/// σ-space forward process (LMS, Euler, Euler a): x + n σ.
func sigmaSpaceNoised(_ original: [Float], _ noise: [Float], sigma: Float) -> [Float] {
    elementwise(original, noise) { x, n in
        let scaledNoise = n * sigma
        return x + scaledNoise
    }
}
