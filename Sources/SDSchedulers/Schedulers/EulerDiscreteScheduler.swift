// Matches diffusers/schedulers/scheduling_euler_discrete.py (EulerDiscreteScheduler, s_churn = 0),
// Karras et al. 2022, Algorithm 2 without churn: one Euler step of the probability-flow ODE
//     d = (x_i - x̂_0(x_i, σ_i)) / σ_i,     x_{i+1} = x_i + (σ_{i+1} - σ_i) d
// with x̂_0 as in LMSDiscreteScheduler.swift; the model sees x / sqrt(σ² + 1).

/// diffusers' EulerDiscreteScheduler: Euler steps in σ space.
public struct EulerDiscreteScheduler: Scheduler, Sendable {
    /// Timesteps fed to the UNet, in order; one model call per entry.
    public let timesteps: [Float]
    /// σ_0 ... σ_{n-1}, then 0 (final_sigmas_type "zero") or σ_min of the table ("sigma_min").
    public let sigmas: [Float]
    /// Standard deviation of the initial noise, from the σ schedule (diffusers' `init_noise_sigma`).
    public let initNoiseSigma: Float

    private let prediction: PredictionType

    /// Builds the schedule for `steps` inference steps from `config`; throws `SchedulerError` for an
    /// invalid step count or an unsupported setting.
    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "EulerDiscreteScheduler"
        guard steps > 0, steps <= config.numTrainTimesteps else {
            throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: config.numTrainTimesteps)
        }
        guard config.interpolationType == "linear" else {
            throw SchedulerError.unsupported(scheduler: name, setting: "interpolation_type", value: config.interpolationType)
        }
        guard config.timestepType == "discrete" else {
            throw SchedulerError.unsupported(scheduler: name, setting: "timestep_type", value: config.timestepType)
        }
        prediction = try PredictionType(config, scheduler: name)
        let table = try TrainingNoiseSchedule(config: config, scheduler: name, clampTerminalAlpha: true).sigmas
        let schedule = try SigmaSchedule(config: config, steps: steps, table: table, scheduler: name, karras: config.useKarrasSigmas)
        let last: Float
        switch config.finalSigmasType {
        case "zero": last = 0
        case "sigma_min": last = table[0]
        default: throw SchedulerError.unsupported(scheduler: name, setting: "final_sigmas_type", value: config.finalSigmasType)
        }
        timesteps = schedule.timesteps
        sigmas = schedule.sigmas.map { Float($0) } + [last]
        initNoiseSigma = schedule.initNoiseSigma(sigmas)
    }

    /// The UNet input: the sample divided by sqrt(σ² + 1) at `stepIndex`.
    public func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float] { scaledBySigma(sample, sigmas[stepIndex]) }

    /// `original` noised to the level at `stepIndex`: x + σ n.
    public func addNoise(original: [Float], noise: [Float], stepIndex: Int) -> [Float] {
        sigmaSpaceNoised(original, noise, sigma: sigmas[stepIndex])
    }

    /// One denoising step: the sample at the next timestep, from the model output at `stepIndex`.
    public mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float] {
        let sigma = sigmas[stepIndex]
        let predictedOriginal = sigmaSpaceOriginalSample(prediction, sigma: sigma, sample: sample, modelOutput: modelOutput)
        let dt = sigmas[stepIndex + 1] - sigma
        let derivative = elementwise(sample, predictedOriginal) { ($0 - $1) / sigma }
        return elementwise(sample, derivative) { $0 + $1 * dt }
    }
}
