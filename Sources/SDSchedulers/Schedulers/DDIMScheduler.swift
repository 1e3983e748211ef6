// Matches diffusers/schedulers/scheduling_ddim.py (DDIMScheduler) with eta = 0, Song et al.
// 2021, "Denoising Diffusion Implicit Models", eq. (12) with σ_t = 0:
//     x̂_0    = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)                     (clipped if clip_sample)
//     x_{t'} = sqrt(ᾱ_t') x̂_0 + sqrt(1 - ᾱ_t') ε,      t' = t - num_train_timesteps / steps
// with ᾱ_t' = ᾱ_0 (or 1 with set_alpha_to_one) past the end. v-prediction (Salimans & Ho
// 2022): x̂_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v, ε = sqrt(ᾱ_t) v + sqrt(1 - ᾱ_t) x_t.

/// diffusers' DDIMScheduler (Song et al. 2020), deterministic (η = 0).
public struct DDIMScheduler: Scheduler, Sendable {
    /// Timesteps fed to the UNet, in order; one model call per entry.
    public let timesteps: [Float]
    /// Standard deviation of the initial noise: 1 for this scheduler.
    public let initNoiseSigma: Float = 1

    private let alphasCumprod: [Float]
    private let finalAlphaCumprod: Float
    private let prediction: PredictionType
    private let clipRange: Float?
    private let stepRatio: Int
    private let integerTimesteps: [Int]

    /// Builds the schedule for `steps` inference steps from `config`; throws `SchedulerError` for an
    /// invalid step count or an unsupported setting.
    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "DDIMScheduler"
        guard steps > 0, steps <= config.numTrainTimesteps else {
            throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: config.numTrainTimesteps)
        }
        if config.thresholding { throw SchedulerError.unsupported(scheduler: name, setting: "thresholding", value: "true") }
        prediction = try PredictionType(config, scheduler: name)
        alphasCumprod = try TrainingNoiseSchedule(config: config, scheduler: name, clampTerminalAlpha: false).alphasCumprod
        finalAlphaCumprod = (config.setAlphaToOne ?? true) ? 1 : alphasCumprod[0]
        clipRange = config.clipSample ? Float(config.clipSampleRange) : nil
        let train = config.numTrainTimesteps
        let ratio = train / steps
        stepRatio = ratio
        switch try TimestepSpacing(config, default: .leading, scheduler: name) {
        case .linspace:
            integerTimesteps = numpyLinspace(0, Double(train - 1), count: steps).reversed().map { Int($0.rounded(.toNearestOrEven)) }
        case .leading:
            integerTimesteps = (0..<steps).reversed().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            integerTimesteps = numpyArange(Double(train), 0, step: -(Double(train) / Double(steps)))
                .map { Int($0.rounded(.toNearestOrEven)) - 1 }
        }
        if let bad = integerTimesteps.first(where: { $0 < 0 || $0 >= train }) {
            throw SchedulerError.invalidSchedule(scheduler: name, reason: "timestep \(bad) outside 0..<\(train) (steps_offset \(config.stepsOffset), \(steps) steps)")
        }
        timesteps = integerTimesteps.map { Float($0) }
    }

    /// The UNet input: the sample unchanged (this scheduler does not scale it).
    public func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float] { sample }

    /// `original` noised to the level at `stepIndex`: sqrt(ᾱ_t) x + sqrt(1 − ᾱ_t) n.
    public func addNoise(original: [Float], noise: [Float], stepIndex: Int) -> [Float] {
        alphaSpaceNoised(original, noise, alphaCumprod: alphasCumprod[integerTimesteps[stepIndex]])
    }

    /// One denoising step: the sample at the next timestep, from the model output at `stepIndex`.
    public mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float] {
        let timestep = integerTimesteps[stepIndex]
        let previous = timestep - stepRatio
        let alphaT = alphasCumprod[timestep]
        let alphaPrev = previous >= 0 ? alphasCumprod[previous] : finalAlphaCumprod
        let betaT = 1 - alphaT
        let rootAlpha = alphaT.squareRoot(), rootBeta = betaT.squareRoot()

        var predictedOriginal: [Float]
        let predictedEpsilon: [Float]
        switch prediction {
        case .epsilon:
            predictedOriginal = elementwise(sample, modelOutput) { (($0 - rootBeta * $1) / rootAlpha) }
            predictedEpsilon = modelOutput
        case .sample:
            predictedOriginal = modelOutput
            predictedEpsilon = elementwise(sample, modelOutput) { ($0 - rootAlpha * $1) / rootBeta }
        case .vPrediction:
            predictedOriginal = elementwise(sample, modelOutput) { rootAlpha * $0 - rootBeta * $1 }
            predictedEpsilon = elementwise(modelOutput, sample) { rootAlpha * $0 + rootBeta * $1 }
        }
        if let range = clipRange {
            predictedOriginal = elementwise(predictedOriginal) { min(max($0, -range), range) }
        }
        let directionScale = (1 - alphaPrev - 0).squareRoot()   // σ_t = 0 for eta = 0
        let rootAlphaPrev = alphaPrev.squareRoot()
        return elementwise(predictedOriginal, predictedEpsilon) { x0, eps in rootAlphaPrev * x0 + directionScale * eps }
    }
}
