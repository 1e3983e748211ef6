// Matches diffusers/schedulers/scheduling_euler_ancestral_discrete.py
// (EulerAncestralDiscreteScheduler), k-diffusion's sample_euler_ancestral with eta = 1:
//     σ_up   = sqrt(σ_{i+1}² (σ_i² - σ_{i+1}²) / σ_i²),   σ_down = sqrt(σ_{i+1}² - σ_up²)
//     d = (x_i - x̂_0) / σ_i,    x_{i+1} = x_i + (σ_down - σ_i) d + σ_up z,   z ~ N(0, I)
// z is one torch.randn of the sample's size per step (also the last, where σ_up = 0), drawn
// from the caller's generator, so a seed reproduces diffusers' picture.

/// diffusers' EulerAncestralDiscreteScheduler (Euler a): an Euler step plus fresh noise each step.
public struct EulerAncestralDiscreteScheduler: Scheduler, Sendable {
    /// Timesteps fed to the UNet, in order; one model call per entry.
    public let timesteps: [Float]
    /// σ_0 ... σ_{n-1}, 0 (float32).
    public let sigmas: [Float]
    /// Standard deviation of the initial noise, from the σ schedule (diffusers' `init_noise_sigma`).
    public let initNoiseSigma: Float

    private let prediction: PredictionType

    /// Builds the schedule for `steps` inference steps from `config`; throws `SchedulerError` for an
    /// invalid step count or an unsupported setting.
    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "EulerAncestralDiscreteScheduler"
        guard steps > 0, steps <= config.numTrainTimesteps else {
            throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: config.numTrainTimesteps)
        }
        prediction = try PredictionType(config, scheduler: name, allowSample: false)
        let table = try TrainingNoiseSchedule(config: config, scheduler: name, clampTerminalAlpha: true).sigmas
        let schedule = try SigmaSchedule(config: config, steps: steps, table: table, scheduler: name, karras: false)
        timesteps = schedule.timesteps
        sigmas = schedule.sigmas.map { Float($0) } + [0]
        initNoiseSigma = schedule.initNoiseSigma(sigmas)
    }

    /// The UNet input: the sample divided by sqrt(σ² + 1) at `stepIndex`.
    public func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float] { scaledBySigma(sample, sigmas[stepIndex]) }

    /// `original` noised to the level at `stepIndex`: x + σ n.
    public func addNoise(original: [Float], noise: [Float], stepIndex: Int) -> [Float] {
        sigmaSpaceNoised(original, noise, sigma: sigmas[stepIndex])
    }

    /// One denoising step: the sample at the next timestep, from the model output at `stepIndex`.
    /// Draws the step's noise from `generator`.
    public mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float] {
        let sigma = sigmas[stepIndex]
        let predictedOriginal = sigmaSpaceOriginalSample(prediction, sigma: sigma, sample: sample, modelOutput: modelOutput)
        let sigmaTo = sigmas[stepIndex + 1]
        let sigmaUp = (sigmaTo * sigmaTo * (sigma * sigma - sigmaTo * sigmaTo) / (sigma * sigma)).squareRoot()
        let sigmaDown = (sigmaTo * sigmaTo - sigmaUp * sigmaUp).squareRoot()
        let dt = sigmaDown - sigma
        let derivative = elementwise(sample, predictedOriginal) { ($0 - $1) / sigma }
        let deterministic = elementwise(sample, derivative) { $0 + $1 * dt }
        let noise = generator.randn(count: modelOutput.count)
        return elementwise(deterministic, noise) { $0 + $1 * sigmaUp }
    }
}
