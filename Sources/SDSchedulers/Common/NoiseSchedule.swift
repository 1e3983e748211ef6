// The training noise schedule of every diffusers scheduler constructor (betas -> alphas ->
// alphas_cumprod -> sigmas, float32 like the torch tensors), and the sigma-space schedules
// built from it (Karras, sigma -> timestep).
//
// The tables match torch bit for bit except where torch takes a float32 square root: on
// x86_64 that is MKL's vsSqrt, within an ulp but not always correctly rounded, while ours is
// the exact IEEE one. Sigmas therefore agree to the last bit or so (tests: 1e-6).

/// betas, alphas and alphas_cumprod as the diffusers constructors build them in float32.
struct TrainingNoiseSchedule {
    let alphasCumprod: [Float]
    static let maxTrainTimesteps = 100_000

    /// `clampTerminalAlpha`: Euler, Euler a and DPM set alphas_cumprod[-1] = 2^-24 after a
    /// zero-SNR rescale so that the first sigma stays finite; DDIM does not.
    init(config: SchedulerConfig, scheduler: String, clampTerminalAlpha: Bool) throws {
        let n = config.numTrainTimesteps
        guard n >= 2 else { throw SchedulerError.invalidSchedule(scheduler: scheduler, reason: "num_train_timesteps must be at least 2") }
        // The tables are allocated with n entries: refuse sizes no model uses (SD: 1000).
        guard n <= Self.maxTrainTimesteps else {
            throw SchedulerError.invalidSchedule(scheduler: scheduler, reason: "num_train_timesteps = \(n) is larger than the supported \(Self.maxTrainTimesteps)")
        }
        var betas: [Float]
        if let trained = config.trainedBetas {
            guard trained.count >= 2 else { throw SchedulerError.invalidSchedule(scheduler: scheduler, reason: "trained_betas needs at least 2 values") }
            // Timesteps are indices into this table: a table of another length than
            // num_train_timesteps would be indexed out of range (diffusers fails the same way).
            guard trained.count == n else {
                throw SchedulerError.invalidSchedule(scheduler: scheduler, reason: "trained_betas has \(trained.count) values but num_train_timesteps is \(n)")
            }
            betas = trained.map { Float($0) }
        } else {
            switch config.betaSchedule {
            case "linear":
                betas = torchLinspace(config.betaStart, config.betaEnd, count: n)
            case "scaled_linear":
                betas = torchLinspace(config.betaStart.squareRoot(), config.betaEnd.squareRoot(), count: n).map { $0 * $0 }
            case "squaredcos_cap_v2":
                betas = Self.cosineBetas(count: n)
            default:
                throw SchedulerError.unsupported(scheduler: scheduler, setting: "beta_schedule", value: config.betaSchedule)
            }
        }
        // Each beta is the fraction of noise a training step adds: outside (0, 1) the
        // alphas are negative or the sigmas infinite, and every table built from them is NaN
        // (found by fuzzing the config: beta_start 5 trapped converting a NaN timestep).
        if let bad = betas.first(where: { !($0 > 0 && $0 < 1) }) {
            throw SchedulerError.invalidSchedule(scheduler: scheduler, reason: "betas must lie between 0 and 1 (found \(bad))")
        }
        if config.rescaleBetasZeroSnr {
            betas = Self.rescaledToZeroTerminalSNR(betas)
            guard betas.allSatisfy({ $0.isFinite }) else {
                throw SchedulerError.invalidSchedule(scheduler: scheduler, reason: "rescale_betas_zero_snr needs betas that change the signal level")
            }
        }
        var cumprod = torchCumprod(betas.map { 1 - $0 })
        if config.rescaleBetasZeroSnr && clampTerminalAlpha { cumprod[cumprod.count - 1] = 0x1p-24 }
        // Large betas over many timesteps drive alphā to 0 in float32 before the end: the
        // sigmas there are infinite and every table built from them is NaN (found by
        // fuzzing: beta_start 0.04 at 5657 timesteps trapped the Karras DPM schedule). Only
        // the zero-SNR schedule may end at exactly 0, where the scheduler expects it.
        let checked = config.rescaleBetasZeroSnr ? cumprod.dropLast() : cumprod[...]
        guard checked.allSatisfy({ $0 > 0 && ((1 - $0) / $0).isFinite }) else {
            throw SchedulerError.invalidSchedule(scheduler: scheduler,
                reason: "the betas leave no signal before the last of the \(n) timesteps (alphas_cumprod reaches 0)")
        }
        // A first beta below float32's resolution at 1 leaves alphā_0 = 1: sigma 0, whose log
        // is −inf (found by fuzzing: beta_start 1e-22 trapped the Karras DPM schedule
        // converting a NaN timestep). alphā only falls after it, so the first is enough.
        guard cumprod[0] < 1 else {
            throw SchedulerError.invalidSchedule(scheduler: scheduler,
                reason: "the first timestep adds no noise (beta \(betas[0]) rounds alphas_cumprod to 1)")
        }
        alphasCumprod = cumprod
    }

    /// sigma_t = sqrt((1 - alphā_t) / alphā_t), ascending in t (float32).
    var sigmas: [Float] { alphasCumprod.map { ((1 - $0) / $0).squareRoot() } }

    /// betas_for_alpha_bar with alphā(t) = cos^2((t + 0.008) / 1.008 * pi/2), in double.
    static func cosineBetas(count n: Int) -> [Float] {
        func alphaBar(_ t: Double) -> Double {
            let c = ElementaryMath.sinCos((t + 0.008) / 1.008 * Double.pi / 2).cos
            return c * c
        }
        return (0..<n).map { i in
            let t1 = Double(i) / Double(n), t2 = Double(i + 1) / Double(n)
            return Float(min(1 - alphaBar(t2) / alphaBar(t1), 0.999))
        }
    }

    /// rescale_zero_terminal_snr (Lin et al. 2023, Algorithm 1), in float32 like diffusers:
    /// shift sqrt(alphā) so its last value is 0, scale so the first is unchanged.
    static func rescaledToZeroTerminalSNR(_ betas: [Float]) -> [Float] {
        var root = torchCumprod(betas.map { 1 - $0 }).map { $0.squareRoot() }
        let first = root[0], last = root[root.count - 1]
        let scale = first / (first - last)
        root = root.map { ($0 - last) * scale }
        let alphaBar = root.map { $0 * $0 }
        var alphas = [alphaBar[0]]
        for i in 1..<alphaBar.count { alphas.append(alphaBar[i] / alphaBar[i - 1]) }
        return alphas.map { 1 - $0 }
    }
}

// MARK: - Sigma schedules shared by LMS, Euler and DPM

/// _convert_to_karras (Karras et al. 2022, eq. 5, rho = 7):
/// sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
func karrasSigmas(sigmaMin: Double, sigmaMax: Double, count: Int) -> [Double] {
    let rho = 7.0
    let minInvRho = ElementaryMath.pow(sigmaMin, 1 / rho)
    let maxInvRho = ElementaryMath.pow(sigmaMax, 1 / rho)
    return numpyLinspace(0, 1, count: count).map { ramp in
        ElementaryMath.pow(maxInvRho + ramp * (minInvRho - maxInvRho), rho)
    }
}

/// _sigma_to_t: the (fractional) training timestep whose log sigma is `sigma`'s, by linear
/// interpolation in log sigma. `logSigmas` is float32 log of the float32 table, as numpy has it.
func sigmaToTimestep(_ sigma: Double, logSigmas: [Float]) -> Double {
    let logSigma = ElementaryMath.log(max(sigma, 1e-10))
    // argmax(cumsum(logSigma - logSigmas >= 0)), clipped to count - 2
    var running = 0, best = 0, lowIndex = 0
    for (i, value) in logSigmas.enumerated() {
        if logSigma - Double(value) >= 0 { running += 1 }
        if running > best { best = running; lowIndex = i }
    }
    lowIndex = min(lowIndex, logSigmas.count - 2)
    let low = Double(logSigmas[lowIndex]), high = Double(logSigmas[lowIndex + 1])
    let w = min(max((low - logSigma) / (low - high), 0), 1)
    return (1 - w) * Double(lowIndex) + w * Double(lowIndex + 1)
}
