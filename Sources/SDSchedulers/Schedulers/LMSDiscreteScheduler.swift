// Matches diffusers/schedulers/scheduling_lms_discrete.py (LMSDiscreteScheduler, order 4),
// the linear multistep sampler of Karras et al. 2022 / k-diffusion in sigma space:
//     d_i = (x_i - x̂_0(x_i, σ_i)) / σ_i,     x̂_0 = x - σ ε  (eps) or the v/sample forms
//     x_{i+1} = x_i + Σ_{k<order} c_k d_{i-k},   c_k = ∫_{σ_i}^{σ_{i+1}} Π_{j≠k} (τ - σ_{i-j}) / (σ_{i-k} - σ_{i-j}) dτ
// with order = min(i + 1, 4). diffusers integrates the Lagrange basis with scipy's quad;
// the integrand is a polynomial of degree <= 3, so 3-point Gauss–Legendre is exact.
// The model sees x / sqrt(σ² + 1).

/// diffusers' LMSDiscreteScheduler: linear multistep in σ space.
public struct LMSDiscreteScheduler: Scheduler, Sendable {
    /// Timesteps fed to the UNet, in order; one model call per entry.
    public let timesteps: [Float]
    /// σ_0 ... σ_{n-1}, 0 (float32).
    public let sigmas: [Float]
    /// Standard deviation of the initial noise, from the σ schedule (diffusers' `init_noise_sigma`).
    public let initNoiseSigma: Float

    private let prediction: PredictionType
    private let order = 4
    private var derivatives: [[Float]] = []
    private var stepsTaken = 0

    /// Builds the schedule for `steps` inference steps from `config`; throws `SchedulerError` for an
    /// invalid step count or an unsupported setting.
    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "LMSDiscreteScheduler"
        guard steps > 0, steps <= config.numTrainTimesteps else {
            throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: config.numTrainTimesteps)
        }
        prediction = try PredictionType(config, scheduler: name)
        // LMSDiscreteScheduler has no rescale_betas_zero_snr parameter: diffusers ignores the key.
        var unrescaled = config
        unrescaled.rescaleBetasZeroSnr = false
        let table = try TrainingNoiseSchedule(config: unrescaled, scheduler: name, clampTerminalAlpha: false).sigmas
        let schedule = try SigmaSchedule(config: config, steps: steps, table: table, scheduler: name, karras: config.useKarrasSigmas)
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

    /// The first step is `index`; its order is still min(index + 1, 4) with as many
    /// derivatives as have been taken, as diffusers zips them.
    public mutating func setBeginIndex(_ index: Int) {
        precondition(derivatives.isEmpty && index >= 0 && index < timesteps.count)
        stepsTaken = index
    }

    /// One denoising step: the sample at the next timestep, from the model output at `stepIndex`.
    /// Keeps history, so steps must be taken in order.
    public mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float] {
        precondition(stepIndex == stepsTaken, "LMSDiscreteScheduler: steps must be taken in order (expected \(stepsTaken), got \(stepIndex))")
        let sigma = sigmas[stepIndex]
        let predictedOriginal = sigmaSpaceOriginalSample(prediction, sigma: sigma, sample: sample, modelOutput: modelOutput)
        derivatives.append(elementwise(sample, predictedOriginal) { ($0 - $1) / sigma })
        if derivatives.count > order { derivatives.removeFirst() }

        let currentOrder = min(stepIndex + 1, order)
        let coefficients = (0..<currentOrder).map { Float(lmsCoefficient(order: currentOrder, index: stepIndex, term: $0)) }
        // Python's sum(): 0 + c0 d_i + c1 d_{i-1} + ..., then added to the sample.
        var update = [Float](repeating: 0, count: sample.count)
        for (k, derivative) in derivatives.reversed().prefix(currentOrder).enumerated() {
            let c = coefficients[k]
            update = elementwise(update, derivative) { $0 + c * $1 }
        }
        stepsTaken += 1
        return elementwise(sample, update) { $0 + $1 }
    }

    /// ∫ over [σ_i, σ_{i+1}] of the Lagrange basis polynomial for node σ_{i-term}.
    func lmsCoefficient(order: Int, index i: Int, term: Int) -> Double {
        let node = Double(sigmas[i - term])
        func basis(_ tau: Double) -> Double {
            var product = 1.0
            for k in 0..<order where k != term {
                let other = Double(sigmas[i - k])
                product *= (tau - other) / (node - other)
            }
            return product
        }
        let a = Double(sigmas[i]), b = Double(sigmas[i + 1])
        let mid = 0.5 * (a + b), half = 0.5 * (b - a)
        let offset = 0.7745966692414834     // sqrt(3/5): 3-point Gauss–Legendre, weights 5/9, 8/9
        return half * (5.0 / 9.0 * basis(mid - half * offset) + 8.0 / 9.0 * basis(mid) + 5.0 / 9.0 * basis(mid + half * offset))
    }
}
