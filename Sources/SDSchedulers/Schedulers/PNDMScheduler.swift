// Matches diffusers/schedulers/scheduling_pndm.py (PNDMScheduler), Liu et al. 2022, "Pseudo
// Numerical Methods for Diffusion Models on Manifolds".
//
// Transfer from t to t' = t - δ (eq. 9), with ᾱ = alphas_cumprod and ε the noise estimate:
//     x_t' = sqrt(ᾱ_t'/ᾱ_t) x_t - (ᾱ_t' - ᾱ_t) ε / (ᾱ_t sqrt(1 - ᾱ_t') + sqrt(ᾱ_t (1 - ᾱ_t) ᾱ_t'))
// PLMS (skip_prk_steps, as SD configs set it) feeds it the linear multistep combination
//     ε' = (55 ε_0 - 59 ε_-1 + 37 ε_-2 - 9 ε_-3) / 24,
// warming up with ε_0, (3 ε_0 - ε_-1)/2 and (23 ε_0 - 16 ε_-1 + 5 ε_-2)/12. Its first step
// is Heun-like: the model is called twice at the first timestep pair (one extra call), the
// second step returns from the first step's sample using the mean of both outputs.
// Without skip_prk_steps the first 3 transfers are Runge–Kutta (4 calls each, weights
// 1/6, 1/3, 1/3, 1/6) and PLMS continues from there.

/// diffusers' PNDMScheduler (PLMS, optionally with Runge–Kutta warm-up steps).
public struct PNDMScheduler: Scheduler, Sendable {
    /// Timesteps fed to the UNet, in order; one model call per entry.
    public let timesteps: [Float]
    /// Standard deviation of the initial noise: 1 for this scheduler.
    public let initNoiseSigma: Float = 1

    private let alphasCumprod: [Float]
    private let finalAlphaCumprod: Float
    private let prediction: PredictionType
    private let stepRatio: Int                 // num_train_timesteps // steps
    private let integerTimesteps: [Int]
    private let prkStepCount: Int

    // History: ets (past model outputs), the RK accumulator and the sample a step started from.
    private var ets: [[Float]] = []
    private var counter = 0
    /// Where the loop starts (img2img): step `beginIndex + counter` is the counter-th call.
    private var beginIndex = 0
    private var runningModelOutput: [Float]? = nil
    private var startSample: [Float]? = nil

    /// Builds the schedule for `steps` inference steps from `config`; throws `SchedulerError` for an
    /// invalid step count or an unsupported setting.
    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "PNDMScheduler"
        guard steps > 0, steps <= config.numTrainTimesteps else {
            throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: config.numTrainTimesteps)
        }
        prediction = try PredictionType(config, scheduler: name, allowSample: false)
        // PNDMScheduler has no rescale_betas_zero_snr parameter: diffusers ignores the key.
        var unrescaled = config
        unrescaled.rescaleBetasZeroSnr = false
        alphasCumprod = try TrainingNoiseSchedule(config: unrescaled, scheduler: name, clampTerminalAlpha: false).alphasCumprod
        finalAlphaCumprod = (config.setAlphaToOne ?? false) ? 1 : alphasCumprod[0]

        let train = config.numTrainTimesteps
        let ratio = train / steps
        stepRatio = ratio

        // Ascending base timesteps (PNDM's _timesteps).
        let base: [Int]
        switch try TimestepSpacing(config, default: .leading, scheduler: name) {
        case .linspace:
            base = numpyLinspace(0, Double(train - 1), count: steps).map { Int($0.rounded(.toNearestOrEven)) }
        case .leading:
            base = (0..<steps).map { $0 * ratio + config.stepsOffset }
        case .trailing:
            base = numpyArange(Double(train), 0, step: -(Double(train) / Double(steps)))
                .map { Int($0.rounded(.toNearestOrEven)) - 1 }.reversed()
        }

        var prk: [Int] = []
        let plms: [Int]
        if config.skipPrkSteps {
            // [:-1] + [-2:-1] + [-1:], reversed: the second-to-last timestep is repeated.
            var joined = Array(base.dropLast())
            if base.count >= 2 { joined.append(base[base.count - 2]) }
            joined.append(base[base.count - 1])
            plms = joined.reversed()
        } else {
            guard base.count >= 4 else {
                throw SchedulerError.invalidSchedule(scheduler: name, reason: "skip_prk_steps = false needs at least 4 steps, got \(steps)")
            }
            // Each of the last 4 base timesteps and its midpoint, expanded to the RK call pattern.
            let half = train / steps / 2
            var pairs: [Int] = []
            for t in base.suffix(4) { pairs += [t, t + half] }
            var repeated: [Int] = []
            for t in pairs.dropLast() { repeated += [t, t] }
            prk = Array(repeated.dropFirst().dropLast()).reversed()
            plms = Array(base.dropLast(3)).reversed()
        }
        prkStepCount = prk.count
        integerTimesteps = prk + plms
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

    /// diffusers' PNDMScheduler has no begin index: img2img passes it the cut timesteps and
    /// its counter (warm-up) starts at 0 there. Here the counter does the same and `stepIndex`
    /// keeps indexing the full schedule.
    public mutating func setBeginIndex(_ index: Int) {
        precondition(counter == 0 && index >= 0 && index < timesteps.count)
        beginIndex = index
    }

    /// One denoising step: the sample at the next timestep, from the model output at `stepIndex`.
    /// Keeps history, so steps must be taken in order.
    public mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float] {
        precondition(stepIndex == beginIndex + counter, "PNDMScheduler: steps must be taken in order (expected \(beginIndex + counter), got \(stepIndex))")
        let timestep = integerTimesteps[stepIndex]
        let result = counter < prkStepCount
            ? stepPRK(modelOutput, timestep: timestep, sample: sample)
            : stepPLMS(modelOutput, timestep: timestep, sample: sample)
        counter += 1
        return result
    }

    private mutating func stepPRK(_ modelOutput: [Float], timestep: Int, sample: [Float]) -> [Float] {
        let previous = timestep - (counter % 2 == 1 ? 0 : stepRatio / 2)
        let start = integerTimesteps[counter / 4 * 4]
        var output = modelOutput
        switch counter % 4 {
        case 0:
            runningModelOutput = elementwise(modelOutput) { Float(1.0 / 6.0) * $0 }
            ets.append(modelOutput)
            startSample = sample
        case 1, 2:
            runningModelOutput = elementwise(runningModelOutput!, modelOutput) { $0 + Float(1.0 / 3.0) * $1 }
        default:
            output = elementwise(runningModelOutput!, modelOutput) { $0 + Float(1.0 / 6.0) * $1 }
            runningModelOutput = nil
        }
        return previousSample(startSample ?? sample, timestep: start, previous: previous, modelOutput: output)
    }

    private mutating func stepPLMS(_ modelOutput: [Float], timestep: Int, sample: [Float]) -> [Float] {
        var timestep = timestep
        var previous = timestep - stepRatio
        var sample = sample
        if counter != 1 {
            ets = Array(ets.suffix(3)) + [modelOutput]
        } else {
            // Second call at the same timestep: go back to where the first step started.
            previous = timestep
            timestep += stepRatio
        }
        let e = ets
        let output: [Float]
        if e.count == 1 && counter == 0 {
            output = modelOutput
            startSample = sample
        } else if e.count == 1 && counter == 1 {
            output = elementwise(modelOutput, e[0]) { ($0 + $1) / 2 }
            sample = startSample!
            startSample = nil
        } else if e.count == 2 {
            output = elementwise(e[1], e[0]) { (3 * $0 - $1) / 2 }
        } else if e.count == 3 {
            output = (0..<sample.count).map { i in (23 * e[2][i] - 16 * e[1][i] + 5 * e[0][i]) / 12 }
        } else {
            output = (0..<sample.count).map { i in
                Float(1.0 / 24.0) * (55 * e[3][i] - 59 * e[2][i] + 37 * e[1][i] - 9 * e[0][i])
            }
        }
        return previousSample(sample, timestep: timestep, previous: previous, modelOutput: output)
    }

    /// Eq. (9) of the paper; v-prediction is first turned into ε = sqrt(ᾱ) v + sqrt(1 - ᾱ) x.
    private func previousSample(_ sample: [Float], timestep: Int, previous: Int, modelOutput: [Float]) -> [Float] {
        let alphaT = alphasCumprod[timestep]
        let alphaPrev = previous >= 0 ? alphasCumprod[previous] : finalAlphaCumprod
        let betaT = 1 - alphaT
        let betaPrev = 1 - alphaPrev
        var epsilon = modelOutput
        if prediction == .vPrediction {
            let a = alphaT.squareRoot(), b = betaT.squareRoot()
            epsilon = elementwise(modelOutput, sample) { a * $0 + b * $1 }
        }
        let sampleCoefficient = (alphaPrev / alphaT).squareRoot()
        let denominator = alphaT * betaPrev.squareRoot() + (alphaT * betaT * alphaPrev).squareRoot()
        let difference = alphaPrev - alphaT
        return elementwise(sample, epsilon) { x, eps in sampleCoefficient * x - difference * eps / denominator }
    }
}
