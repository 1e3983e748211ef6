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

/// A diffusion sampler: the timestep schedule and the update from one sample to the next.
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
    /// diffusers' `add_noise(original, noise, timesteps[stepIndex])` as img2img calls it after
    /// `set_begin_index(stepIndex)`: the original noised to the level the loop has at
    /// `stepIndex` (x + σ n for σ-space classes, sqrt(ᾱ_t) x + sqrt(1 - ᾱ_t) n for the others).
    func addNoise(original: [Float], noise: [Float], stepIndex: Int) -> [Float]
    /// diffusers' `set_begin_index`: the loop starts at `timesteps[index]` instead of the first
    /// (img2img cuts the schedule by strength). Call once, before the first `step`; the first
    /// step is then `stepIndex: index`. Multistep schedulers start their history there.
    mutating func setBeginIndex(_ index: Int)
}

extension Scheduler {
    /// Schedulers whose steps depend only on `stepIndex` need nothing.
    public mutating func setBeginIndex(_ index: Int) {}
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
    case lcm

    /// AUTOMATIC1111's name for the sampler, as written into PNG metadata.
    public var displayName: String {
        switch self {
        case .pndm: return "PNDM"
        case .ddim: return "DDIM"
        case .lms: return "LMS"
        case .euler: return "Euler"
        case .eulerAncestral: return "Euler a"
        case .dpmpp2m: return "DPM++ 2M"
        case .dpmpp2mKarras: return "DPM++ 2M Karras"
        case .lcm: return "LCM"
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
        case .lcm: return "LCMScheduler"
        }
    }

    /// The diffusers scheduler classes a model may name in its `_class_name`.
    public static let supportedClassNames: [String] = [
        "PNDMScheduler", "DDIMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "LCMScheduler",
    ]

    /// The kind of the scheduler a model ships (its stored `_class_name`): what the pipeline
    /// uses when the user names none. DPMSolverMultistepScheduler is the Karras kind when the
    /// config sets use_karras_sigmas. A config without `_class_name` is taken as PNDM, the
    /// scheduler of the SD 1.x checkpoints that have no scheduler folder; a class outside
    /// `supportedClassNames` is an error naming the supported ones.
    /// (The kind is the name; `makeModelScheduler` builds the class with every stored key.)
    public init(modelConfig config: SchedulerConfig) throws {
        let name = config.className ?? "PNDMScheduler"
        switch name {
        case "PNDMScheduler": self = .pndm
        case "DDIMScheduler": self = .ddim
        case "LMSDiscreteScheduler": self = .lms
        case "EulerDiscreteScheduler": self = .euler
        case "EulerAncestralDiscreteScheduler": self = .eulerAncestral
        case "DPMSolverMultistepScheduler": self = config.useKarrasSigmas ? .dpmpp2mKarras : .dpmpp2m
        case "LCMScheduler": self = .lcm
        default: throw SchedulerError.unknownClass(name: name, supported: Self.supportedClassNames)
        }
    }
}

/// Why a scheduler could not be built from a config and step count.
public enum SchedulerError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidStepCount(steps: Int, numTrainTimesteps: Int)
    case invalidConfigValue(key: String, value: String)
    case unsupported(scheduler: String, setting: String, value: String)
    case invalidSchedule(scheduler: String, reason: String)
    case unknownClass(name: String, supported: [String])

    /// A readable explanation of the error.
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
        case let .unknownClass(name, supported):
            return "the model's scheduler class \(name) is not supported; choose a scheduler explicitly (supported classes: \(supported.joined(separator: ", ")))"
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
    case .lcm:
        return try LCMScheduler(config: config, steps: steps)
    }
}

/// The model's own scheduler: the class its stored `_class_name` names (see
/// `SchedulerKind(modelConfig:)`), built from every stored key, nothing forced, exactly as
/// diffusers' pipeline would use it (e.g. a DPM config with solver_order 3 stays order 3,
/// an Euler config with use_karras_sigmas keeps Karras sigmas).
public func makeModelScheduler(config: SchedulerConfig, steps: Int) throws -> any Scheduler {
    let kind = try SchedulerKind(modelConfig: config)
    guard steps > 0, steps <= config.numTrainTimesteps else {
        throw SchedulerError.invalidStepCount(steps: steps, numTrainTimesteps: config.numTrainTimesteps)
    }
    // Sigma-schedule settings of the class that the runtime does not implement: refused in
    // one line. (A named kind fixes its sigma schedule, plain or Karras, so `makeScheduler`
    // ignores them as it does a stored use_karras_sigmas.) Karras sigmas take sigma_min and
    // sigma_max from the config in Euler and DPM.
    let sigmaKinds = ["use_exponential_sigmas", "use_beta_sigmas"]
    let karrasRange = config.useKarrasSigmas ? ["sigma_min", "sigma_max"] : []
    let used: [String]
    switch kind {
    case .lms: used = sigmaKinds
    case .euler: used = sigmaKinds + karrasRange
    case .dpmpp2m, .dpmpp2mKarras: used = sigmaKinds + ["use_lu_lambdas", "use_flow_sigmas"] + karrasRange
    default: used = []
    }
    if let key = used.first(where: { config.unsupportedSigmaSettings[$0] != nil }) {
        throw SchedulerError.unsupported(scheduler: config.className ?? kind.rawValue, setting: key,
                                         value: config.unsupportedSigmaSettings[key]!)
    }
    switch kind {
    case .pndm: return try PNDMScheduler(config: config, steps: steps)
    case .ddim: return try DDIMScheduler(config: config, steps: steps)
    case .lms: return try LMSDiscreteScheduler(config: config, steps: steps)
    case .euler: return try EulerDiscreteScheduler(config: config, steps: steps)
    case .eulerAncestral: return try EulerAncestralDiscreteScheduler(config: config, steps: steps)
    case .dpmpp2m, .dpmpp2mKarras: return try DPMSolverMultistepScheduler(config: config, steps: steps)
    case .lcm: return try LCMScheduler(config: config, steps: steps)
    }
}
