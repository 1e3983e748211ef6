// The sampler interface the pipeline drives, one conforming type per diffusers class:
//
//     latents = noise * initNoiseSigma
//     for (i, t) in timesteps.enumerated() {
//         eps = unet(scaleModelInput(latents, stepIndex: i), t)
//         latents = step(modelOutput: eps, stepIndex: i, sample: latents, generator: &g)
//     }
//
// Samples are flat Float arrays in the model's layout ([B, C, H, W]); every operation is
// elementwise, so the shape never matters except for the count of noise draws.

public protocol Scheduler {
    /// Values fed to the UNet, in order; one model call per entry.
    var timesteps: [Float] { get }
    /// Standard deviation of the initial noise; the pipeline multiplies the noise by it.
    var initNoiseSigma: Float { get }
    /// The UNet input at `stepIndex` (sigma schedulers divide by sqrt(sigma^2 + 1)).
    func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float]
    /// The sample one step further along. Multistep schedulers keep history, so steps must be
    /// taken in order 0, 1, 2, ...; `generator` is used only by ancestral samplers.
    mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float]
}

/// The samplers offered to users, named like the CLI flag; `displayName` is AUTOMATIC1111's
/// name for the same sampler (written into PNG metadata).
public enum SchedulerKind: String, CaseIterable, Sendable {
    case pndm
    case ddim
    case lms
    case euler
    case eulerAncestral = "euler-a"
    case dpmpp2m = "dpm++2m"
    case dpmpp2mKarras = "dpm++2m-karras"

    public var displayName: String {
        switch self {
        case .pndm: return "PNDM"
        case .ddim: return "DDIM"
        case .lms: return "LMS"
        case .euler: return "Euler"
        case .eulerAncestral: return "Euler a"
        case .dpmpp2m: return "DPM++ 2M"
        case .dpmpp2mKarras: return "DPM++ 2M Karras"
        }
    }

    /// The diffusers class behind this kind.
    public var diffusersClassName: String {
        switch self {
        case .pndm: return "PNDMScheduler"
        case .ddim: return "DDIMScheduler"
        case .lms: return "LMSDiscreteScheduler"
        case .euler: return "EulerDiscreteScheduler"
        case .eulerAncestral: return "EulerAncestralDiscreteScheduler"
        case .dpmpp2m, .dpmpp2mKarras: return "DPMSolverMultistepScheduler"
        }
    }
}

public enum SchedulerError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidStepCount(steps: Int, numTrainTimesteps: Int)
    case invalidConfigValue(key: String, value: String)
    case unsupported(scheduler: String, setting: String, value: String)
    case invalidSchedule(scheduler: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidStepCount(steps, train):
            return "invalid number of inference steps \(steps): must be between 1 and num_train_timesteps (\(train))"
        case let .invalidConfigValue(key, value):
            return "scheduler config key \"\(key)\" has a value of the wrong type: \(value)"
        case let .unsupported(scheduler, setting, value):
            return "\(scheduler): \(setting) = \(value) is not supported"
        case let .invalidSchedule(scheduler, reason):
            return "\(scheduler): \(reason)"
        }
    }
}

/// Builds the scheduler for `kind` from the model's scheduler config, set up for `steps`
/// inference steps. The kind fixes what its AUTOMATIC1111 name implies: DPM++ 2M is
/// dpmsolver++ of order 2 (Karras sigmas only for the Karras kind), and LMS and Euler use the
/// plain sigma schedule; every other setting comes from `config`.
public func makeScheduler(_ kind: SchedulerKind, config: SchedulerConfig, steps: Int) throws -> any Scheduler {
    guard steps > 0, steps <= config.numTrainTimesteps else {
        throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: config.numTrainTimesteps)
    }
    var config = config
    switch kind {
    case .pndm:
        return try PNDMScheduler(config: config, steps: steps)
    case .ddim:
        return try DDIMScheduler(config: config, steps: steps)
    case .lms:
        config.useKarrasSigmas = false
        return try LMSDiscreteScheduler(config: config, steps: steps)
    case .euler:
        config.useKarrasSigmas = false
        return try EulerDiscreteScheduler(config: config, steps: steps)
    case .eulerAncestral:
        return try EulerAncestralDiscreteScheduler(config: config, steps: steps)
    case .dpmpp2m, .dpmpp2mKarras:
        config.algorithmType = "dpmsolver++"
        config.solverOrder = 2
        config.useKarrasSigmas = kind == .dpmpp2mKarras
        return try DPMSolverMultistepScheduler(config: config, steps: steps)
    }
}
