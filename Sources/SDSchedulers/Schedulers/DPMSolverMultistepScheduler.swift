// Matches diffusers/schedulers/scheduling_dpmsolver_multistep.py (DPMSolverMultistepScheduler,
// algorithm_type "dpmsolver++"), Lu et al. 2022, "DPM-Solver++", Algorithm 2 (multistep, data
// prediction). With α_t = 1/sqrt(σ²+1), σ_t = σ α_t, λ = log α_t - log σ_t, h = λ_t - λ_s0
// and D0 = x̂_0 at s0 (the converted model output):
//   order 1:  x_t = (σ_t/σ_s0) x - α_t (e^{-h} - 1) D0                       (DDIM step)
//   order 2:  D1 = (m0 - m1) h / (λ_s0 - λ_s1);
//             midpoint: x_t = (σ_t/σ_s0) x - α_t (e^{-h} - 1) D0 - ½ α_t (e^{-h} - 1) D1
//             heun:     ...                                      + α_t ((e^{-h} - 1)/h + 1) D1
//   order 3:  adds the second difference D2 (see `thirdOrderUpdate`).
// The first step is order 1 (no history); with lower_order_final the last step is order 1 and
// for fewer than 15 steps the second-to-last is at most order 2. Optional Karras sigmas
// (Karras et al. 2022, rho 7) with timesteps rounded from sigma. The model input is unscaled.

/// diffusers' DPMSolverMultistepScheduler (DPM-Solver++ multistep; `dpm++2m`, with Karras σ `dpm++2m-karras`).
public struct DPMSolverMultistepScheduler: Scheduler, Sendable {
    /// Timesteps fed to the UNet, in order; one model call per entry.
    public let timesteps: [Float]
    /// σ for each timestep, then 0 (final_sigmas_type "zero") or the table's σ_min.
    public let sigmas: [Float]
    /// Standard deviation of the initial noise: 1 for this scheduler.
    public let initNoiseSigma: Float = 1

    private let prediction: PredictionType
    private let solverOrder: Int
    private let heun: Bool
    private let lowerOrderFinal: Bool
    private let eulerAtFinal: Bool
    private let finalSigmaIsZero: Bool

    private var modelOutputs: [[Float]] = []     // x̂_0 history, newest last, at most solverOrder
    private var lowerOrderCount = 0
    private var stepsTaken = 0

    /// Builds the schedule for `steps` inference steps from `config`; throws `SchedulerError` for an
    /// invalid step count or an unsupported setting.
    public init(config: SchedulerConfig, steps: Int) throws {
        let name = "DPMSolverMultistepScheduler"
        guard steps > 0, steps <= config.numTrainTimesteps else {
            throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: config.numTrainTimesteps)
        }
        guard config.algorithmType == "dpmsolver++" || config.algorithmType == "deis" else {
            throw SchedulerError.unsupported(scheduler: name, setting: "algorithm_type", value: config.algorithmType)
        }
        guard (1...3).contains(config.solverOrder) else {
            throw SchedulerError.unsupported(scheduler: name, setting: "solver_order", value: "\(config.solverOrder)")
        }
        switch config.solverType {
        case "midpoint", "logrho", "bh1", "bh2": heun = false   // diffusers maps the last three to midpoint
        case "heun": heun = true
        default: throw SchedulerError.unsupported(scheduler: name, setting: "solver_type", value: config.solverType)
        }
        if config.thresholding { throw SchedulerError.unsupported(scheduler: name, setting: "thresholding", value: "true") }
        switch config.finalSigmasType {
        case "zero": finalSigmaIsZero = true
        case "sigma_min": finalSigmaIsZero = false
        default: throw SchedulerError.unsupported(scheduler: name, setting: "final_sigmas_type", value: config.finalSigmasType)
        }
        prediction = try PredictionType(config, scheduler: name)
        solverOrder = config.solverOrder
        lowerOrderFinal = config.lowerOrderFinal
        eulerAtFinal = config.eulerAtFinal

        let alphasCumprod = try TrainingNoiseSchedule(config: config, scheduler: name, clampTerminalAlpha: true).alphasCumprod
        let table = alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
        let train = config.numTrainTimesteps

        // lambda_min_clipped: drop the low-SNR end where λ(t) < the clip (cosine schedules).
        let lambdas = alphasCumprod.map { ElementaryMath.log($0.squareRoot()) - ElementaryMath.log((1 - $0).squareRoot()) }
        let clippedCount = lambdas.reversed().prefix { $0 < Float(config.lambdaMinClipped) }.count
        let lastTimestep = train - clippedCount

        var times: [Int]
        switch try TimestepSpacing(config, default: .linspace, scheduler: name) {
        case .linspace:
            times = numpyLinspace(0, Double(lastTimestep - 1), count: steps + 1).reversed().dropLast()
                .map { Int($0.rounded(.toNearestOrEven)) }
        case .leading:
            let ratio = lastTimestep / (steps + 1)
            times = (1...steps).reversed().map { $0 * ratio + config.stepsOffset }
        case .trailing:
            times = numpyArange(Double(lastTimestep), 0, step: -(Double(train) / Double(steps)))
                .map { Int($0.rounded(.toNearestOrEven)) - 1 }
        }

        var schedule: [Double]
        if config.useKarrasSigmas {
            schedule = karrasSigmas(sigmaMin: Double(table[0]), sigmaMax: Double(table[train - 1]), count: steps)
            let logTable = table.map { ElementaryMath.log($0) }
            // diffusers rounds the fractional timesteps, except for the cosine schedule where
            // the int64 cast truncates them.
            let rounds = config.betaSchedule != "squaredcos_cap_v2"
            times = schedule.map { sigma in
                let t = sigmaToTimestep(sigma, logSigmas: logTable)
                return Int(rounds ? t.rounded(.toNearestOrEven) : t)
            }
        } else {
            schedule = times.map { numpyInterp(Double($0), table: table) }
        }
        timesteps = times.map { Float($0) }
        sigmas = schedule.map { Float($0) } + [finalSigmaIsZero ? 0 : table[0]]
    }

    /// The UNet input: the sample unchanged (this scheduler does not scale it).
    public func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float] { sample }

    /// α_t x + σ_t n with α_t = 1/sqrt(σ² + 1), σ_t = σ α_t (diffusers' _sigma_to_alpha_sigma_t).
    public func addNoise(original: [Float], noise: [Float], stepIndex: Int) -> [Float] {
        let (alpha, sigma) = Self.alphaSigma(sigmas[stepIndex])
        return elementwise(original, noise) { x, n in
            let signal = alpha * x, scaledNoise = sigma * n
            return signal + scaledNoise
        }
    }

    /// The first step is `index`; the solver order still warms up from first order
    /// (diffusers' lower_order_nums counts steps taken, not the index).
    public mutating func setBeginIndex(_ index: Int) {
        precondition(modelOutputs.isEmpty && index >= 0 && index < timesteps.count)
        stepsTaken = index
    }

    /// One denoising step: the sample at the next timestep, from the model output at `stepIndex`.
    /// Keeps history, so steps must be taken in order.
    public mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float] {
        precondition(stepIndex == stepsTaken, "DPMSolverMultistepScheduler: steps must be taken in order (expected \(stepsTaken), got \(stepIndex))")
        let count = timesteps.count
        let useFirstOrderAtEnd = stepIndex == count - 1
            && (eulerAtFinal || (lowerOrderFinal && count < 15) || finalSigmaIsZero)
        let useSecondOrderAtEnd = stepIndex == count - 2 && lowerOrderFinal && count < 15

        modelOutputs.append(dataPrediction(modelOutput, sample: sample, sigma: sigmas[stepIndex]))
        if modelOutputs.count > solverOrder { modelOutputs.removeFirst() }

        let result: [Float]
        if solverOrder == 1 || lowerOrderCount < 1 || useFirstOrderAtEnd {
            result = firstOrderUpdate(sample, index: stepIndex)
        } else if solverOrder == 2 || lowerOrderCount < 2 || useSecondOrderAtEnd {
            result = secondOrderUpdate(sample, index: stepIndex)
        } else {
            result = thirdOrderUpdate(sample, index: stepIndex)
        }
        if lowerOrderCount < solverOrder { lowerOrderCount += 1 }
        stepsTaken += 1
        return result
    }

    /// x̂_0: eps (x - σ_t ε)/α_t, v α_t x - σ_t v, or the output itself.
    private func dataPrediction(_ output: [Float], sample: [Float], sigma: Float) -> [Float] {
        let (alpha, sigmaT) = Self.alphaSigma(sigma)
        switch prediction {
        case .epsilon: return elementwise(sample, output) { ($0 - sigmaT * $1) / alpha }
        case .vPrediction: return elementwise(sample, output) { alpha * $0 - sigmaT * $1 }
        case .sample: return output
        }
    }

    private static func alphaSigma(_ sigma: Float) -> (alpha: Float, sigma: Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    private static func lambda(_ alpha: Float, _ sigma: Float) -> Float {
        ElementaryMath.log(alpha) - ElementaryMath.log(sigma)
    }

    private func firstOrderUpdate(_ sample: [Float], index i: Int) -> [Float] {
        let (alphaT, sigmaT) = Self.alphaSigma(sigmas[i + 1])
        let (alphaS, sigmaS) = Self.alphaSigma(sigmas[i])
        let h = Self.lambda(alphaT, sigmaT) - Self.lambda(alphaS, sigmaS)
        let sampleScale = sigmaT / sigmaS
        let d0Scale = alphaT * (ElementaryMath.exp(-h) - 1)
        return elementwise(sample, modelOutputs[modelOutputs.count - 1]) { sampleScale * $0 - d0Scale * $1 }
    }

    private func secondOrderUpdate(_ sample: [Float], index i: Int) -> [Float] {
        let (alphaT, sigmaT) = Self.alphaSigma(sigmas[i + 1])
        let (alphaS0, sigmaS0) = Self.alphaSigma(sigmas[i])
        let (alphaS1, sigmaS1) = Self.alphaSigma(sigmas[i - 1])
        let lambdaT = Self.lambda(alphaT, sigmaT)
        let lambdaS0 = Self.lambda(alphaS0, sigmaS0)
        let lambdaS1 = Self.lambda(alphaS1, sigmaS1)
        let m0 = modelOutputs[modelOutputs.count - 1], m1 = modelOutputs[modelOutputs.count - 2]
        let h = lambdaT - lambdaS0, h0 = lambdaS0 - lambdaS1
        let r0 = h0 / h
        let inverseR0 = 1 / r0
        let d1 = elementwise(m0, m1) { inverseR0 * ($0 - $1) }
        let sampleScale = sigmaT / sigmaS0
        let expMinusOne = ElementaryMath.exp(-h) - 1
        let d0Scale = alphaT * expMinusOne
        let partial = elementwise(sample, m0) { sampleScale * $0 - d0Scale * $1 }
        if heun {
            let d1Scale = alphaT * (expMinusOne / h + 1)
            return elementwise(partial, d1) { $0 + d1Scale * $1 }
        }
        let d1Scale = 0.5 * (alphaT * expMinusOne)
        return elementwise(partial, d1) { $0 - d1Scale * $1 }
    }

    /// Order 3: with r0 = h0/h, r1 = h1/h, D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1,
    /// D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0 + r1):
    /// x_t = (σ_t/σ_s0) x - α_t (e^{-h} - 1) D0 + α_t ((e^{-h} - 1)/h + 1) D1
    ///       - α_t ((e^{-h} - 1 + h)/h² - ½) D2.
    private func thirdOrderUpdate(_ sample: [Float], index i: Int) -> [Float] {
        let (alphaT, sigmaT) = Self.alphaSigma(sigmas[i + 1])
        let (alphaS0, sigmaS0) = Self.alphaSigma(sigmas[i])
        let (alphaS1, sigmaS1) = Self.alphaSigma(sigmas[i - 1])
        let (alphaS2, sigmaS2) = Self.alphaSigma(sigmas[i - 2])
        let lambdaT = Self.lambda(alphaT, sigmaT)
        let lambdaS0 = Self.lambda(alphaS0, sigmaS0)
        let lambdaS1 = Self.lambda(alphaS1, sigmaS1)
        let lambdaS2 = Self.lambda(alphaS2, sigmaS2)
        let k = modelOutputs.count
        let m0 = modelOutputs[k - 1], m1 = modelOutputs[k - 2], m2 = modelOutputs[k - 3]
        let h = lambdaT - lambdaS0, h0 = lambdaS0 - lambdaS1, h1 = lambdaS1 - lambdaS2
        let r0 = h0 / h, r1 = h1 / h
        let inverseR0 = 1 / r0, inverseR1 = 1 / r1
        let d10 = elementwise(m0, m1) { inverseR0 * ($0 - $1) }
        let d11 = elementwise(m1, m2) { inverseR1 * ($0 - $1) }
        let blend = r0 / (r0 + r1), inverseSum = 1 / (r0 + r1)
        let d1 = elementwise(d10, d11) { $0 + blend * ($0 - $1) }
        let d2 = elementwise(d10, d11) { inverseSum * ($0 - $1) }
        let sampleScale = sigmaT / sigmaS0
        let expMinusOne = ElementaryMath.exp(-h) - 1
        let d0Scale = alphaT * expMinusOne
        let d1Scale = alphaT * (expMinusOne / h + 1)
        let d2Scale = alphaT * ((ElementaryMath.exp(-h) - 1 + h) / (h * h) - 0.5)
        let partial = elementwise(sample, m0) { sampleScale * $0 - d0Scale * $1 }
        let withD1 = elementwise(partial, d1) { $0 + d1Scale * $1 }
        return elementwise(withD1, d2) { $0 - d2Scale * $1 }
    }
}
