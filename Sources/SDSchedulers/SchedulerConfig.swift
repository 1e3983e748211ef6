// The scheduler settings of a model, i.e. its diffusers scheduler/scheduler_config.json.
//
// diffusers builds any scheduler class from any stored config (`Class.from_config`): keys the
// class reads are taken from the file, keys absent from the file take that class's own
// default. (diffusers 0.42 remembers which values were defaults, so even
// `Euler.from_config(pipe.scheduler.config)` falls back to Euler's defaults, not PNDM's.)
// So: build the config from the file's keys starting at `diffusersDefaults`, and a field whose
// default differs between classes is optional here, `nil` meaning "absent, use the class's
// default".
//
//  JSON key                 field                 type       default when absent
//  num_train_timesteps      numTrainTimesteps     Int        1000
//  beta_start               betaStart             Double     0.0001
//  beta_end                 betaEnd               Double     0.02
//  beta_schedule            betaSchedule          String     "linear"  (also "scaled_linear", "squaredcos_cap_v2")
//  trained_betas            trainedBetas          [Double]?  nil (overrides the three above)
//  prediction_type          predictionType        String     "epsilon" (also "v_prediction", "sample")
//  steps_offset             stepsOffset           Int        0
//  timestep_spacing         timestepSpacing       String?    PNDM, DDIM: "leading"; LMS, Euler, Euler a, DPM: "linspace"
//  set_alpha_to_one         setAlphaToOne         Bool?      PNDM: false; DDIM: true
//  skip_prk_steps           skipPrkSteps          Bool       false (PNDM)
//  clip_sample              clipSample            Bool       true  (DDIM)
//  clip_sample_range        clipSampleRange       Double     1.0   (DDIM)
//  thresholding             thresholding          Bool       false (DDIM, DPM; true is unsupported)
//  rescale_betas_zero_snr   rescaleBetasZeroSnr   Bool       false (DDIM, Euler, Euler a, DPM)
//  use_karras_sigmas        useKarrasSigmas       Bool       false (LMS, Euler, DPM; set by the kind in makeScheduler)
//  final_sigmas_type        finalSigmasType       String     "zero" (Euler, DPM; also "sigma_min")
//  interpolation_type       interpolationType     String     "linear" (Euler; only "linear" supported)
//  timestep_type            timestepType          String     "discrete" (Euler; only "discrete" supported)
//  solver_order             solverOrder           Int        2 (DPM; 1...3)
//  algorithm_type           algorithmType         String     "dpmsolver++" (DPM; only "dpmsolver++" supported)
//  solver_type              solverType            String     "midpoint" (DPM; also "heun")
//  lower_order_final        lowerOrderFinal       Bool       true  (DPM)
//  euler_at_final           eulerAtFinal          Bool       false (DPM)
//  lambda_min_clipped       lambdaMinClipped      Double     -infinity (DPM)
//  original_inference_steps originalInferenceSteps Int       50    (LCM)
//  timestep_scaling         timestepScaling       Double     10.0  (LCM)
//  _class_name              className             String?    nil   (which class the model ships; see SchedulerKind(modelConfig:))
//
// LCMScheduler is the one class whose defaults for keys shared with the others differ
// (scaled_linear 0.00085–0.012, clip_sample false); `storedKeys` records which keys the file
// had so that it can tell "absent" from "set to the common default".
// Other keys are not read (see `knownKeys`), except that `unsupportedSigmaSettings` records
// sigma-schedule options diffusers has and the runtime lacks ("use_exponential_sigmas",
// "sigma_min", ...), which the model's own scheduler refuses when its class would use them.
// Unsupported values are reported by the scheduler initialisers, not here.

/// A model's scheduler settings (diffusers' scheduler_config.json); keys and defaults are listed at the top of this file.
public struct SchedulerConfig: Equatable, Sendable {
    /// Diffusion steps the model was trained with (`num_train_timesteps`, default 1000).
    public var numTrainTimesteps: Int
    /// The first β of the noise schedule (`beta_start`, default 0.0001).
    public var betaStart: Double
    /// The last β of the noise schedule (`beta_end`, default 0.02).
    public var betaEnd: Double
    /// How β goes from start to end (`beta_schedule`): "linear", "scaled_linear" or "squaredcos_cap_v2".
    public var betaSchedule: String
    /// Explicit β values (`trained_betas`); when set they override the start, end and schedule.
    public var trainedBetas: [Double]?
    /// What the model predicts (`prediction_type`): "epsilon", "v_prediction" or "sample".
    public var predictionType: String
    /// Added to every timestep (`steps_offset`, default 0).
    public var stepsOffset: Int
    /// How timesteps are spread (`timestep_spacing`: "leading", "linspace", "trailing"); nil: the class default.
    public var timestepSpacing: String?
    /// Whether ᾱ past the last step is 1 (`set_alpha_to_one`); nil: the class default (PNDM false, DDIM true).
    public var setAlphaToOne: Bool?
    /// PNDM: skip the Runge–Kutta warm-up steps (`skip_prk_steps`, default false).
    public var skipPrkSteps: Bool
    /// DDIM: clip the predicted original sample (`clip_sample`, default true).
    public var clipSample: Bool
    /// DDIM: the clipping bound for `clipSample` (`clip_sample_range`, default 1).
    public var clipSampleRange: Double
    /// Dynamic thresholding (`thresholding`, default false; true is unsupported).
    public var thresholding: Bool
    /// Rescale β to zero terminal SNR (`rescale_betas_zero_snr`, default false).
    public var rescaleBetasZeroSnr: Bool
    /// Use Karras et al. σ spacing (`use_karras_sigmas`, default false).
    public var useKarrasSigmas: Bool
    /// The σ after the last step (`final_sigmas_type`): "zero" (default) or "sigma_min".
    public var finalSigmasType: String
    /// Euler: σ interpolation (`interpolation_type`); only "linear" is supported.
    public var interpolationType: String
    /// Euler: timestep type (`timestep_type`); only "discrete" is supported.
    public var timestepType: String
    /// DPM-Solver order (`solver_order`, 1–3, default 2).
    public var solverOrder: Int
    /// DPM-Solver algorithm (`algorithm_type`); only "dpmsolver++" is supported.
    public var algorithmType: String
    /// DPM-Solver second-order update (`solver_type`): "midpoint" (default) or "heun".
    public var solverType: String
    /// DPM-Solver: lower the order for the last steps (`lower_order_final`, default true).
    public var lowerOrderFinal: Bool
    /// DPM-Solver: take a first-order last step (`euler_at_final`, default false).
    public var eulerAtFinal: Bool
    /// DPM-Solver: clip λ(t) below this (`lambda_min_clipped`, default −∞).
    public var lambdaMinClipped: Double
    /// LCM: the step count the timestep grid is drawn from (`original_inference_steps`, default 50).
    public var originalInferenceSteps: Int
    /// LCM: scales the timestep in the boundary conditions (`timestep_scaling`, default 10).
    public var timestepScaling: Double
    /// The stored `_class_name` (e.g. "EulerDiscreteScheduler"), nil when the file has none.
    public var className: String?
    /// The known keys the stored config had with a non-null value (empty for
    /// `diffusersDefaults`); classes whose defaults differ from `diffusersDefaults` consult it.
    public var storedKeys: Set<String>
    /// Sigma-schedule settings diffusers has and the runtime does not, as stored when set
    /// (`use_exponential_sigmas`, `use_beta_sigmas`, `use_lu_lambdas`, `use_flow_sigmas`
    /// true; `sigma_min`, `sigma_max` not null): `makeModelScheduler` refuses the ones its
    /// class would use instead of running another schedule. Not among `knownKeys`.
    public var unsupportedSigmaSettings: [String: String] = [:]

    /// The keys `unsupportedSigmaSettings` records.
    public static let unsupportedSigmaKeys: Set<String> = [
        "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "sigma_min", "sigma_max",
    ]

    /// Stable Diffusion 1.x's scheduler_config.json (PNDMScheduler: scaled_linear 0.00085–0.012,
    /// steps_offset 1, skip_prk_steps, set_alpha_to_one false, clip_sample false); keys that
    /// file does not have keep their diffusers defaults (`timestepSpacing` nil).
    public init() {
        self = .diffusersDefaults
        betaStart = 0.00085
        betaEnd = 0.012
        betaSchedule = "scaled_linear"
        stepsOffset = 1
        setAlphaToOne = false
        skipPrkSteps = true
        clipSample = false
        className = "PNDMScheduler"
        storedKeys = ["_class_name", "beta_end", "beta_schedule", "beta_start", "num_train_timesteps",
                      "set_alpha_to_one", "skip_prk_steps", "steps_offset", "clip_sample"]
    }

    private init(numTrainTimesteps: Int) {
        self.numTrainTimesteps = numTrainTimesteps
        betaStart = 0.0001
        betaEnd = 0.02
        betaSchedule = "linear"
        trainedBetas = nil
        predictionType = "epsilon"
        stepsOffset = 0
        timestepSpacing = nil
        setAlphaToOne = nil
        skipPrkSteps = false
        clipSample = true
        clipSampleRange = 1.0
        thresholding = false
        rescaleBetasZeroSnr = false
        useKarrasSigmas = false
        finalSigmasType = "zero"
        interpolationType = "linear"
        timestepType = "discrete"
        solverOrder = 2
        algorithmType = "dpmsolver++"
        solverType = "midpoint"
        lowerOrderFinal = true
        eulerAtFinal = false
        lambdaMinClipped = -.infinity
        originalInferenceSteps = 50
        timestepScaling = 10
        className = nil
        storedKeys = []
    }

    /// Whether the stored config set `key` (a JSON key); false for keys set only in code.
    public func has(_ key: String) -> Bool { storedKeys.contains(key) }

    /// The config as diffusers' StableDiffusionPipeline uses it (SD 1.x/2.x text-to-image,
    /// img2img and inpainting; SDXL's pipelines do not do this). Its constructor rewrites an
    /// "outdated" scheduler config: `steps_offset` other than 1 becomes 1 and `clip_sample`
    /// true becomes false. It edits the values but not diffusers' record of which keys were
    /// defaults, so for the model's own scheduler (`modelScheduler`) both always apply (every
    /// class has steps_offset; DDIM's absent clip_sample defaults to true and is rewritten),
    /// while a scheduler built from that config with a named class
    /// (`Class.from_config(pipe.scheduler.config)`) gets them only for keys the file had:
    /// absent keys fall back to that class's defaults (steps_offset 0, DDIM's clip_sample true).
    public func adjustedAsStableDiffusionPipeline(modelScheduler: Bool) -> SchedulerConfig {
        var config = self
        if modelScheduler || has("steps_offset") { config.stepsOffset = 1 }
        if modelScheduler || has("clip_sample") { config.clipSample = false }
        return config
    }

    /// What diffusers uses for a key that the stored config does not have.
    public static let diffusersDefaults = SchedulerConfig(numTrainTimesteps: 1000)

    /// A value read from scheduler_config.json.
    public enum Value: Equatable, Sendable {
        case null
        case bool(Bool)
        case int(Int)
        case double(Double)
        case string(String)
        case doubles([Double])
    }

    /// The JSON keys this type reads.
    public static let knownKeys: Set<String> = [
        "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
        "prediction_type", "steps_offset", "timestep_spacing", "set_alpha_to_one", "skip_prk_steps",
        "clip_sample", "clip_sample_range", "thresholding", "rescale_betas_zero_snr",
        "use_karras_sigmas", "final_sigmas_type", "interpolation_type", "timestep_type",
        "solver_order", "algorithm_type", "solver_type", "lower_order_final", "euler_at_final",
        "lambda_min_clipped", "original_inference_steps", "timestep_scaling", "_class_name",
    ]

    /// Builds the config from the stored keys; absent keys keep `diffusersDefaults`, unknown
    /// keys are ignored (as diffusers does), a `null` value counts as absent.
    /// Throws `SchedulerError.invalidConfigValue` when a known key has the wrong type.
    public init(diffusersConfig values: [String: Value]) throws {
        self = .diffusersDefaults
        for (key, value) in values.sorted(by: { $0.key < $1.key }) where value != .null {
            try set(key, value)
            if Self.knownKeys.contains(key) { storedKeys.insert(key) }
            if Self.unsupportedSigmaKeys.contains(key), value != .bool(false) {
                switch value {
                case .bool(let b): unsupportedSigmaSettings[key] = "\(b)"
                case .int(let v): unsupportedSigmaSettings[key] = "\(v)"
                case .double(let v): unsupportedSigmaSettings[key] = "\(v)"
                default: unsupportedSigmaSettings[key] = "\(value)"
                }
            }
        }
    }

    private mutating func set(_ key: String, _ value: Value) throws {
        func bad() -> SchedulerError { .invalidConfigValue(key: key, value: "\(value)") }
        func int() throws -> Int {
            switch value {
            case .int(let v): return v
            case .double(let v) where v.rounded() == v && abs(v) < 1e15: return Int(v)
            default: throw bad()
            }
        }
        func double() throws -> Double {
            switch value {
            case .double(let v): return v
            case .int(let v): return Double(v)
            case .string(let s) where s == "-inf" || s == "-Infinity": return -.infinity
            default: throw bad()
            }
        }
        func bool() throws -> Bool {
            guard case .bool(let v) = value else { throw bad() }
            return v
        }
        func string() throws -> String {
            guard case .string(let v) = value else { throw bad() }
            return v
        }
        switch key {
        case "num_train_timesteps": numTrainTimesteps = try int()
        case "beta_start": betaStart = try double()
        case "beta_end": betaEnd = try double()
        case "beta_schedule": betaSchedule = try string()
        case "trained_betas":
            switch value {
            case .doubles(let v): trainedBetas = v
            default: throw bad()
            }
        case "prediction_type": predictionType = try string()
        case "steps_offset": stepsOffset = try int()
        case "timestep_spacing": timestepSpacing = try string()
        case "set_alpha_to_one": setAlphaToOne = try bool()
        case "skip_prk_steps": skipPrkSteps = try bool()
        case "clip_sample": clipSample = try bool()
        case "clip_sample_range": clipSampleRange = try double()
        case "thresholding": thresholding = try bool()
        case "rescale_betas_zero_snr": rescaleBetasZeroSnr = try bool()
        case "use_karras_sigmas": useKarrasSigmas = try bool()
        case "final_sigmas_type": finalSigmasType = try string()
        case "interpolation_type": interpolationType = try string()
        case "timestep_type": timestepType = try string()
        case "solver_order": solverOrder = try int()
        case "algorithm_type": algorithmType = try string()
        case "solver_type": solverType = try string()
        case "lower_order_final": lowerOrderFinal = try bool()
        case "euler_at_final": eulerAtFinal = try bool()
        case "lambda_min_clipped": lambdaMinClipped = try double()
        case "original_inference_steps": originalInferenceSteps = try int()
        case "timestep_scaling": timestepScaling = try double()
        case "_class_name": className = try string()
        default: break
        }
    }
}
