// Matches diffusers/schedulers/scheduling_lcm.py (LCMScheduler), Luo et al. 2023, "Latent
// Consistency Models", multistep consistency sampling (Algorithm 1 there):
//     x̂_0 from the model output as in DDIM (eps, v or sample; clipped if clip_sample)
//     denoised = c_out(t) x̂_0 + c_skip(t) x_t,   with s = t · timestep_scaling, σ_data = 0.5:
//         c_skip = σ_data² / (s² + σ_data²),   c_out = s / sqrt(s² + σ_data²)
//     x_{t'} = sqrt(ᾱ_t') denoised + sqrt(1 - ᾱ_t') z,   z ~ N(0, I), t' the next timestep;
//     the last step returns `denoised` and draws nothing (so one step draws nothing at all).
// Timesteps: the distillation schedule k·i - 1 (i = 1 … original_inference_steps,
// k = num_train_timesteps // original_inference_steps), reversed, of which `steps` are taken
// at indices floor(j · len / steps). timestep_spacing and steps_offset are stored by diffusers
// but not used by this class. The model input is unscaled, the initial noise σ is 1.

/// diffusers' LCMScheduler for latent consistency models, adding fresh noise between steps.
public struct LCMScheduler: Scheduler, Sendable {
    /// Timesteps fed to the UNet, in order; one model call per entry.
    public let timesteps: [Float]
    /// Standard deviation of the initial noise: 1 for this scheduler.
    public let initNoiseSigma: Float = 1

    private let alphasCumprod: [Float]
    private let integerTimesteps: [Int]
    private let prediction: PredictionType
    private let clipRange: Float?
    private let timestepScaling: Float

    /// Builds the schedule for `steps` inference steps from `config`; throws `SchedulerError` for an
    /// invalid step count or an unsupported setting.
    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "LCMScheduler"
        let train = config.numTrainTimesteps
        guard steps > 0, steps <= train else {
            throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: train)
        }
        if config.thresholding { throw SchedulerError.unsupported(scheduler: name, setting: "thresholding", value: "true") }
        // LCM's own defaults for the keys it shares with the other classes (see SchedulerConfig).
        var config = config
        if !config.has("beta_start") { config.betaStart = 0.00085 }
        if !config.has("beta_end") { config.betaEnd = 0.012 }
        if !config.has("beta_schedule") { config.betaSchedule = "scaled_linear" }
        if !config.has("clip_sample") { config.clipSample = false }

        let original = config.originalInferenceSteps
        guard original >= 1, original <= train else {
            throw SchedulerError.invalidSchedule(scheduler: name, reason: "original_inference_steps = \(original) must be between 1 and num_train_timesteps (\(train))")
        }
        // diffusers raises a ValueError here too: the schedule is a subset of the original one.
        guard steps <= original else {
            throw SchedulerError.invalidSchedule(scheduler: name, reason: "\(steps) inference steps is more than original_inference_steps (\(original)): LCM takes its steps from that \(original)-step schedule; use at most \(original) steps")
        }
        prediction = try PredictionType(config, scheduler: name)
        alphasCumprod = try TrainingNoiseSchedule(config: config, scheduler: name, clampTerminalAlpha: false).alphasCumprod
        clipRange = config.clipSample ? Float(config.clipSampleRange) : nil
        timestepScaling = Float(config.timestepScaling)

        let k = train / original
        let origin = (1...original).reversed().map { $0 * k - 1 }
        // np.floor(np.linspace(0, len, steps, endpoint=False)): j * (len / steps) in double.
        let spacing = Double(origin.count) / Double(steps)
        integerTimesteps = (0..<steps).map { origin[Int((Double($0) * spacing).rounded(.down))] }
        timesteps = integerTimesteps.map { Float($0) }
    }

    /// The UNet input: the sample unchanged (this scheduler does not scale it).
    public func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float] { sample }

    /// (c_skip, c_out) in float32, as diffusers computes them from the int64 timestep tensor.
    public func boundaryScalings(timestep: Int) -> (skip: Float, out: Float) {
        let scaled = Float(timestep) * timestepScaling
        let sigmaDataSquared: Float = 0.25
        let denominator = scaled * scaled + sigmaDataSquared
        return (sigmaDataSquared / denominator, scaled / denominator.squareRoot())
    }

    /// One denoising step: the sample at the next timestep, from the model output at `stepIndex`.
    /// Draws the step's noise from `generator`.
    public mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float] {
        let timestep = integerTimesteps[stepIndex]
        let isLast = stepIndex == integerTimesteps.count - 1
        let alphaT = alphasCumprod[timestep]
        let betaT = 1 - alphaT
        let rootAlpha = alphaT.squareRoot(), rootBeta = betaT.squareRoot()
        var predictedOriginal: [Float]
        switch prediction {
        case .epsilon: predictedOriginal = elementwise(sample, modelOutput) { ($0 - rootBeta * $1) / rootAlpha }
        case .sample: predictedOriginal = modelOutput
        case .vPrediction: predictedOriginal = elementwise(sample, modelOutput) { rootAlpha * $0 - rootBeta * $1 }
        }
        if let range = clipRange {
            predictedOriginal = elementwise(predictedOriginal) { min(max($0, -range), range) }
        }
        let (cSkip, cOut) = boundaryScalings(timestep: timestep)
        let denoised = elementwise(predictedOriginal, sample) { cOut * $0 + cSkip * $1 }
        if isLast { return denoised }
        let alphaPrev = alphasCumprod[integerTimesteps[stepIndex + 1]]
        let rootAlphaPrev = alphaPrev.squareRoot(), rootBetaPrev = (1 - alphaPrev).squareRoot()
        let noise = generator.randn(count: modelOutput.count)
        return elementwise(denoised, noise) { rootAlphaPrev * $0 + rootBetaPrev * $1 }
    }

    /// `original` noised to the level at `stepIndex`: sqrt(ᾱ_t) x + sqrt(1 − ᾱ_t) n.
    public func addNoise(original: [Float], noise: [Float], stepIndex: Int) -> [Float] {
        alphaSpaceNoised(original, noise, alphaCumprod: alphasCumprod[integerTimesteps[stepIndex]])
    }
}
