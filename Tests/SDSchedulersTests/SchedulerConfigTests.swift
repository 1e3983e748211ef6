import XCTest
import SDSchedulers

final class SchedulerConfigTests: XCTestCase {
    /// runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json as a parser would give it.
    let sd15File: [String: SchedulerConfig.Value] = [
        "_class_name": .string("PNDMScheduler"), "_diffusers_version": .string("0.6.0"),
        "beta_end": .double(0.012), "beta_schedule": .string("scaled_linear"), "beta_start": .double(0.00085),
        "num_train_timesteps": .int(1000), "set_alpha_to_one": .bool(false), "skip_prk_steps": .bool(true),
        "steps_offset": .int(1), "trained_betas": .null, "clip_sample": .bool(false),
    ]

    func testDefaultInitIsStableDiffusion15() throws {
        let config = SchedulerConfig()
        XCTAssertEqual(config, try SchedulerConfig(diffusersConfig: sd15File))
        XCTAssertEqual(config.numTrainTimesteps, 1000)
        XCTAssertEqual(config.betaStart, 0.00085)
        XCTAssertEqual(config.betaEnd, 0.012)
        XCTAssertEqual(config.betaSchedule, "scaled_linear")
        XCTAssertEqual(config.stepsOffset, 1)
        XCTAssertEqual(config.setAlphaToOne, false)
        XCTAssertEqual(config.skipPrkSteps, true)
        XCTAssertEqual(config.clipSample, false)
        XCTAssertEqual(config.predictionType, "epsilon")
        XCTAssertNil(config.timestepSpacing, "absent from the SD 1.5 file: each class uses its own default")
        XCTAssertNil(config.trainedBetas)
    }

    func testAbsentKeysTakeDiffusersDefaults() throws {
        let config = try SchedulerConfig(diffusersConfig: ["prediction_type": .string("v_prediction")])
        var expected = SchedulerConfig.diffusersDefaults
        expected.predictionType = "v_prediction"
        expected.storedKeys = ["prediction_type"]
        XCTAssertEqual(config, expected)
        XCTAssertEqual(expected.betaSchedule, "linear")
        XCTAssertEqual(expected.betaStart, 0.0001)
        XCTAssertEqual(expected.stepsOffset, 0)
        XCTAssertNil(expected.setAlphaToOne)
        XCTAssertEqual(expected.clipSample, true)
        XCTAssertEqual(expected.lambdaMinClipped, -.infinity)
    }

    func testValueTypesAreCheckedAndUnknownKeysIgnored() throws {
        let config = try SchedulerConfig(diffusersConfig: [
            "num_train_timesteps": .double(500), "beta_start": .int(0), "trained_betas": .doubles([0.1, 0.2]),
            "timestep_spacing": .string("trailing"), "use_exponential_sigmas": .bool(true), "lambda_min_clipped": .string("-inf"),
        ])
        XCTAssertEqual(config.numTrainTimesteps, 500)
        XCTAssertEqual(config.betaStart, 0)
        XCTAssertEqual(config.trainedBetas, [0.1, 0.2])
        XCTAssertEqual(config.timestepSpacing, "trailing")
        XCTAssertFalse(SchedulerConfig.knownKeys.contains("use_exponential_sigmas"))
        XCTAssertThrowsError(try SchedulerConfig(diffusersConfig: ["steps_offset": .string("1")])) { error in
            XCTAssertEqual(error as? SchedulerError, .invalidConfigValue(key: "steps_offset", value: "string(\"1\")"))
        }
        XCTAssertThrowsError(try SchedulerConfig(diffusersConfig: ["num_train_timesteps": .double(999.5)]))
        XCTAssertThrowsError(try SchedulerConfig(diffusersConfig: ["clip_sample": .int(0)]))
    }

    func testKindsNamesAndClasses() throws {
        XCTAssertEqual(SchedulerKind.allCases.map(\.rawValue), ["pndm", "ddim", "lms", "euler", "euler-a", "dpm++2m", "dpm++2m-karras", "lcm"])
        XCTAssertEqual(SchedulerKind.allCases.map(\.displayName), ["PNDM", "DDIM", "LMS", "Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "LCM"])
        let expected: [SchedulerKind: any Scheduler.Type] = [
            .pndm: PNDMScheduler.self, .ddim: DDIMScheduler.self, .lms: LMSDiscreteScheduler.self,
            .euler: EulerDiscreteScheduler.self, .eulerAncestral: EulerAncestralDiscreteScheduler.self,
            .dpmpp2m: DPMSolverMultistepScheduler.self, .dpmpp2mKarras: DPMSolverMultistepScheduler.self,
            .lcm: LCMScheduler.self,
        ]
        for kind in SchedulerKind.allCases {
            let scheduler = try makeScheduler(kind, config: SchedulerConfig(), steps: 20)
            XCTAssertTrue(type(of: scheduler) == expected[kind]!, "\(kind)")
            XCTAssertEqual(String(describing: type(of: scheduler)), kind.diffusersClassName)
            // PNDM's PLMS warm-up calls the model once more than the step count.
            XCTAssertEqual(scheduler.timesteps.count, kind == .pndm ? 21 : 20, "\(kind)")
        }
    }

    func testKarrasKindDiffersFromPlainDPM() throws {
        let plain = try makeScheduler(.dpmpp2m, config: SchedulerConfig(), steps: 10) as! DPMSolverMultistepScheduler
        let karras = try makeScheduler(.dpmpp2mKarras, config: SchedulerConfig(), steps: 10) as! DPMSolverMultistepScheduler
        XCTAssertNotEqual(plain.sigmas, karras.sigmas)
        XCTAssertEqual(karras.sigmas.first!, plain.sigmas.first!, accuracy: 1e-5 * plain.sigmas.first!)
        // The plain kind ignores use_karras_sigmas from the file; the Karras kind sets it.
        var config = SchedulerConfig()
        config.useKarrasSigmas = true
        let forcedPlain = try makeScheduler(.dpmpp2m, config: config, steps: 10) as! DPMSolverMultistepScheduler
        XCTAssertEqual(forcedPlain.sigmas, plain.sigmas)
    }

    func testStepCountIsValidated() {
        for steps in [0, -3, 1001] {
            for kind in SchedulerKind.allCases {
                XCTAssertThrowsError(try makeScheduler(kind, config: SchedulerConfig(), steps: steps)) { error in
                    XCTAssertEqual(error as? SchedulerError, .invalidStepCount(steps: steps, numTrainTimesteps: 1000))
                    XCTAssertTrue("\(error)".contains("between 1 and num_train_timesteps (1000)"), "\(error)")
                }
            }
        }
        XCTAssertNoThrow(try makeScheduler(.euler, config: SchedulerConfig(), steps: 1000))
    }

    func testUnsupportedSettingsThrowClearErrors() {
        func check(_ kind: SchedulerKind, _ edit: (inout SchedulerConfig) -> Void, steps: Int = 10, mentions: String,
                   line: UInt = #line) {
            var config = SchedulerConfig()
            edit(&config)
            XCTAssertThrowsError(try makeScheduler(kind, config: config, steps: steps), line: line) { error in
                XCTAssertTrue("\(error)".contains(mentions), "\(error)", line: line)
            }
        }
        check(.ddim, { $0.betaSchedule = "sigmoid" }, mentions: "beta_schedule = sigmoid")
        check(.euler, { $0.timestepSpacing = "uniform" }, mentions: "timestep_spacing = uniform")
        check(.pndm, { $0.predictionType = "sample" }, mentions: "prediction_type = sample")
        check(.eulerAncestral, { $0.predictionType = "flow" }, mentions: "prediction_type = flow")
        check(.ddim, { $0.thresholding = true }, mentions: "thresholding")
        check(.euler, { $0.interpolationType = "log_linear" }, mentions: "interpolation_type")
        check(.dpmpp2m, { $0.solverType = "bogus" }, mentions: "solver_type = bogus")
        check(.pndm, { $0.skipPrkSteps = false }, steps: 3, mentions: "at least 4 steps")
        // leading spacing with steps_offset 1 at 1000 steps would index alphas_cumprod[1000].
        check(.ddim, { _ in }, steps: 1000, mentions: "timestep 1000 outside 0..<1000")
        check(.pndm, { _ in }, steps: 1000, mentions: "timestep 1000 outside 0..<1000")
        check(.euler, { $0.numTrainTimesteps = 1 << 40 }, steps: 4, mentions: "num_train_timesteps = 1099511627776 is larger than")
        check(.lcm, { $0.numTrainTimesteps = 1 << 40 }, steps: 4, mentions: "num_train_timesteps = 1099511627776 is larger than")
        check(.ddim, { $0.trainedBetas = [0.1, 0.2, 0.3] }, steps: 2, mentions: "trained_betas has 3 values but num_train_timesteps is 1000")
        // Fuzzing regression (config target): betas outside (0, 1) made NaN tables, and DPM
        // trapped converting a NaN timestep to Int. Every scheduler refuses them now.
        for kind in SchedulerKind.allCases {
            check(kind, { $0.betaStart = 5.00085; $0.rescaleBetasZeroSnr = true }, steps: 4, mentions: "betas must lie between 0 and 1")
            check(kind, { $0.betaEnd = -0.5; $0.betaSchedule = "linear" }, steps: 4, mentions: "betas must lie between 0 and 1")
            check(kind, { $0.trainedBetas = [Double](repeating: .nan, count: 1000) }, steps: 4, mentions: "betas must lie between 0 and 1")
            check(kind, { $0.betaStart = 0.04085; $0.numTrainTimesteps = 5657; $0.useKarrasSigmas = true }, steps: 4,
                  mentions: "the betas leave no signal before the last of the 5657 timesteps")
            check(kind, { $0.betaStart = 1e-22 }, steps: 4, mentions: "the first timestep adds no noise")
        }
        XCTAssertThrowsError(try DPMSolverMultistepScheduler(config: { var c = SchedulerConfig(); c.algorithmType = "sde-dpmsolver++"; return c }(), steps: 10))
        XCTAssertThrowsError(try DPMSolverMultistepScheduler(config: { var c = SchedulerConfig(); c.solverOrder = 4; return c }(), steps: 10))
    }

    func testModelInputScalingIsElementwiseForAnyBatch() throws {
        let x: [Float] = (0..<48).map { Float($0) / 7 - 3 }
        for kind in SchedulerKind.allCases {
            let scheduler = try makeScheduler(kind, config: SchedulerConfig(), steps: 5)
            for i in scheduler.timesteps.indices {
                let single = scheduler.scaleModelInput(x, stepIndex: i)
                XCTAssertEqual(scheduler.scaleModelInput(x + x, stepIndex: i), single + single, "\(kind)")
            }
        }
        let euler = try makeScheduler(.euler, config: SchedulerConfig(), steps: 5) as! EulerDiscreteScheduler
        let sigma = euler.sigmas[0]
        XCTAssertEqual(euler.scaleModelInput([1], stepIndex: 0)[0], 1 / (sigma * sigma + 1).squareRoot())
        XCTAssertEqual(euler.initNoiseSigma, sigma, "linspace spacing: init sigma is sigma_max")
    }

    func testAncestralStepDrawsOneNoiseTensorPerStep() throws {
        var scheduler = try makeScheduler(.eulerAncestral, config: SchedulerConfig(), steps: 3)
        var generator = TorchGenerator(seed: 9)
        var reference = TorchGenerator(seed: 9)
        let sample = [Float](repeating: 0.5, count: 20)
        for i in 0..<3 {
            _ = scheduler.step(modelOutput: sample, stepIndex: i, sample: sample, generator: &generator)
            _ = reference.randn(count: sample.count)
        }
        XCTAssertEqual(generator.randn(count: 5), reference.randn(count: 5), "generator state after 3 steps")
    }

    func testModelClassNamesMapToKinds() throws {
        func kind(_ values: [String: SchedulerConfig.Value]) throws -> SchedulerKind {
            try SchedulerKind(modelConfig: SchedulerConfig(diffusersConfig: values))
        }
        let names: [String: SchedulerKind] = [
            "PNDMScheduler": .pndm, "DDIMScheduler": .ddim, "LMSDiscreteScheduler": .lms,
            "EulerDiscreteScheduler": .euler, "EulerAncestralDiscreteScheduler": .eulerAncestral,
            "DPMSolverMultistepScheduler": .dpmpp2m, "LCMScheduler": .lcm,
        ]
        XCTAssertEqual(Set(names.keys), Set(SchedulerKind.supportedClassNames))
        for (name, expected) in names {
            XCTAssertEqual(try kind(["_class_name": .string(name)]), expected, name)
            XCTAssertEqual(expected.diffusersClassName, name)
        }
        XCTAssertEqual(try kind(["_class_name": .string("DPMSolverMultistepScheduler"), "use_karras_sigmas": .bool(true)]), .dpmpp2mKarras)
        XCTAssertEqual(try kind([:]), .pndm, "no _class_name: SD 1.x's PNDM")
        XCTAssertEqual(try SchedulerKind(modelConfig: SchedulerConfig()), .pndm)
        XCTAssertThrowsError(try kind(["_class_name": .string("UniPCMultistepScheduler")])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("UniPCMultistepScheduler") && text.contains("EulerDiscreteScheduler, EulerAncestralDiscreteScheduler"), text)
            XCTAssertFalse(text.contains("\n"), "one line")
        }
        XCTAssertThrowsError(try makeModelScheduler(config: SchedulerConfig(diffusersConfig: ["_class_name": .string("DDPMScheduler")]), steps: 4))
        XCTAssertThrowsError(try SchedulerConfig(diffusersConfig: ["_class_name": .int(3)]))
    }

    func testModelSchedulerKeepsStoredSettingsTheKindWouldForce() throws {
        let config = try SchedulerConfig(diffusersConfig: [
            "_class_name": .string("EulerDiscreteScheduler"), "use_karras_sigmas": .bool(true),
            "beta_schedule": .string("scaled_linear"), "beta_start": .double(0.00085), "beta_end": .double(0.012),
        ])
        let model = try makeModelScheduler(config: config, steps: 6) as! EulerDiscreteScheduler
        let kind = try makeScheduler(.euler, config: config, steps: 6) as! EulerDiscreteScheduler
        XCTAssertNotEqual(model.sigmas, kind.sigmas, "the euler kind forces plain sigmas, the model scheduler keeps Karras")
    }

    func testLCMStepCountIsValidated() throws {
        var config = SchedulerConfig()
        for steps in [0, -1] {
            XCTAssertThrowsError(try makeScheduler(.lcm, config: config, steps: steps)) { error in
                XCTAssertEqual(error as? SchedulerError, .invalidStepCount(steps: steps, numTrainTimesteps: 1000))
            }
        }
        // diffusers raises for more steps than original_inference_steps (the schedule is a subset).
        XCTAssertNoThrow(try makeScheduler(.lcm, config: config, steps: 50))
        XCTAssertThrowsError(try makeScheduler(.lcm, config: config, steps: 51)) { error in
            XCTAssertTrue("\(error)".contains("51 inference steps is more than original_inference_steps (50)"), "\(error)")
        }
        config.originalInferenceSteps = 4
        XCTAssertEqual(try makeScheduler(.lcm, config: config, steps: 4).timesteps, [999, 749, 499, 249])
        XCTAssertThrowsError(try makeScheduler(.lcm, config: config, steps: 5))
        for bad in [0, -2, 1001] {
            config.originalInferenceSteps = bad
            XCTAssertThrowsError(try makeScheduler(.lcm, config: config, steps: 1)) { error in
                XCTAssertTrue("\(error)".contains("original_inference_steps = \(bad)"), "\(error)")
            }
        }
    }

    func testLCMSchedule() throws {
        let four = try makeScheduler(.lcm, config: SchedulerConfig(), steps: 4)
        XCTAssertEqual(four.timesteps, [999, 759, 499, 259])
        XCTAssertEqual(try makeScheduler(.lcm, config: SchedulerConfig(), steps: 1).timesteps, [999])
        let lcm = try XCTUnwrap(four as? LCMScheduler)
        // c_skip + c_out^2 ... at t = 0: c_skip 1, c_out 0 (the boundary condition f(x, 0) = x).
        let (skip, out) = lcm.boundaryScalings(timestep: 0)
        XCTAssertEqual(skip, 1)
        XCTAssertEqual(out, 0)
    }

    func testLCMDrawsNoiseBetweenStepsButNotAfterTheLast() throws {
        var scheduler = try makeScheduler(.lcm, config: SchedulerConfig(), steps: 3)
        var generator = TorchGenerator(seed: 5)
        var reference = TorchGenerator(seed: 5)
        let sample = [Float](repeating: 0.25, count: 12)
        for i in 0..<3 {
            _ = scheduler.step(modelOutput: sample, stepIndex: i, sample: sample, generator: &generator)
            if i < 2 { _ = reference.randn(count: sample.count) }
        }
        XCTAssertEqual(generator.randn(count: 4), reference.randn(count: 4), "two draws for three steps")
    }

    func testUnknownPredictionTypeIsNamedInTheError() {
        var config = SchedulerConfig()
        config.predictionType = "banana"
        for kind in SchedulerKind.allCases {
            XCTAssertThrowsError(try makeScheduler(kind, config: config, steps: 4), "\(kind)") { error in
                XCTAssertTrue("\(error)".contains("prediction_type = banana"), "\(kind): \(error)")
            }
        }
        XCTAssertThrowsError(try makeModelScheduler(config: config, steps: 4))
    }

    func testZeroSNRIsIgnoredByClassesWithoutIt() throws {
        // PNDM and LMS have no rescale_betas_zero_snr in diffusers: the key changes nothing.
        var rescaled = SchedulerConfig()
        rescaled.rescaleBetasZeroSnr = true
        rescaled.timestepSpacing = "trailing"
        var plain = rescaled
        plain.rescaleBetasZeroSnr = false
        let lmsRescaled = try makeScheduler(.lms, config: rescaled, steps: 5) as! LMSDiscreteScheduler
        let lmsPlain = try makeScheduler(.lms, config: plain, steps: 5) as! LMSDiscreteScheduler
        XCTAssertEqual(lmsRescaled.sigmas, lmsPlain.sigmas)
        let euler = try makeScheduler(.euler, config: rescaled, steps: 5) as! EulerDiscreteScheduler
        XCTAssertEqual(euler.sigmas[0], 4096, accuracy: 1, "zero SNR: first sigma from alphas_cumprod[-1] = 2^-24")
    }

    func testAddNoiseLevels() throws {
        let x: [Float] = [1, -2, 0.5]
        let n: [Float] = [0.5, 0.25, -1]
        let euler = try makeScheduler(.euler, config: SchedulerConfig(), steps: 4) as! EulerDiscreteScheduler
        XCTAssertEqual(euler.addNoise(original: x, noise: n, stepIndex: 1), zip(x, n).map { $0 + $1 * euler.sigmas[1] })
        let lcm = try makeScheduler(.lcm, config: SchedulerConfig(), steps: 4)
        let noised = lcm.addNoise(original: x, noise: n, stepIndex: 0)
        // t = 999 on SD's schedule: almost all noise.
        XCTAssertEqual(noised[0], 0.5, accuracy: 0.07)
    }

    /// diffusers' StableDiffusionPipeline rewrites steps_offset to 1 and clip_sample true to
    /// false in the scheduler config it is built with; a class built from that config with
    /// from_config keeps the rewrite only for keys the file had (diffusers 0.42, checked with
    /// PNDM, DDIM, Euler and LCM files: own scheduler, then DDIM/Euler/LCM.from_config).
    func testStableDiffusionPipelineRewritesOutdatedValues() throws {
        var file = sd15File
        file["steps_offset"] = .int(0)
        file["clip_sample"] = .bool(true)
        let outdated = try SchedulerConfig(diffusersConfig: file)
        for modelScheduler in [true, false] {
            let adjusted = outdated.adjustedAsStableDiffusionPipeline(modelScheduler: modelScheduler)
            XCTAssertEqual(adjusted.stepsOffset, 1)
            XCTAssertEqual(adjusted.clipSample, false)
        }
        // Keys absent from the file: the model's own class gets 1 and false (DDIM's default
        // clip_sample true is rewritten); a named class falls back to its defaults.
        let bare = try SchedulerConfig(diffusersConfig: ["_class_name": .string("DDIMScheduler")])
        let own = bare.adjustedAsStableDiffusionPipeline(modelScheduler: true)
        XCTAssertEqual(own.stepsOffset, 1)
        XCTAssertEqual(own.clipSample, false)
        let named = bare.adjustedAsStableDiffusionPipeline(modelScheduler: false)
        XCTAssertEqual(named.stepsOffset, 0)
        XCTAssertEqual(named.clipSample, true)
        // Already current: nothing changes.
        let current = try SchedulerConfig(diffusersConfig: sd15File)
        XCTAssertEqual(current.adjustedAsStableDiffusionPipeline(modelScheduler: true), current)
        XCTAssertEqual(current.adjustedAsStableDiffusionPipeline(modelScheduler: false), current)
    }

    /// Sigma-schedule settings the runtime lacks (exponential, beta, Lu lambdas, flow sigmas;
    /// Euler's and DPM's sigma_min/sigma_max for Karras sigmas): the model's own scheduler
    /// refuses them in one error instead of running another schedule than diffusers; false
    /// or null values, classes without them and named kinds (which fix their sigmas) build.
    func testUnsupportedSigmaSettingsAreRefusedByTheModelScheduler() throws {
        func config(_ cls: String, _ extra: [String: SchedulerConfig.Value]) throws -> SchedulerConfig {
            try SchedulerConfig(diffusersConfig: sd15File.merging(["_class_name": .string(cls)]) { $1 }.merging(extra) { $1 })
        }
        let refused: [(String, [String: SchedulerConfig.Value], String)] = [
            ("EulerDiscreteScheduler", ["use_exponential_sigmas": .bool(true)], "use_exponential_sigmas"),
            ("LMSDiscreteScheduler", ["use_beta_sigmas": .bool(true)], "use_beta_sigmas"),
            ("DPMSolverMultistepScheduler", ["use_lu_lambdas": .bool(true)], "use_lu_lambdas"),
            ("DPMSolverMultistepScheduler", ["use_flow_sigmas": .bool(true)], "use_flow_sigmas"),
            ("EulerDiscreteScheduler", ["use_karras_sigmas": .bool(true), "sigma_min": .double(0.1)], "sigma_min"),
            ("DPMSolverMultistepScheduler", ["use_karras_sigmas": .bool(true), "sigma_max": .int(8)], "sigma_max"),
        ]
        for (cls, extra, key) in refused {
            let c = try config(cls, extra)
            XCTAssertThrowsError(try makeModelScheduler(config: c, steps: 4), "\(cls) \(key)") { error in
                guard case let .unsupported(scheduler, setting, _)? = error as? SchedulerError else {
                    return XCTFail("\(error)")
                }
                XCTAssertEqual(scheduler, cls)
                XCTAssertEqual(setting, key)
            }
        }
        let accepted: [(String, [String: SchedulerConfig.Value])] = [
            ("EulerDiscreteScheduler", ["use_exponential_sigmas": .bool(false), "use_beta_sigmas": .bool(false)]),
            ("EulerDiscreteScheduler", ["sigma_min": .double(0.1), "sigma_max": .null]),  // no Karras: unused
            ("LMSDiscreteScheduler", ["use_karras_sigmas": .bool(true), "sigma_min": .double(0.1)]),  // LMS ignores it
            ("DDIMScheduler", ["use_exponential_sigmas": .bool(true)]),  // no such option in DDIM
        ]
        for (cls, extra) in accepted {
            XCTAssertNoThrow(try makeModelScheduler(config: config(cls, extra), steps: 4), cls)
        }
        // A named kind fixes its sigma schedule, as it does use_karras_sigmas.
        let exponential = try config("EulerDiscreteScheduler", ["use_exponential_sigmas": .bool(true)])
        XCTAssertNoThrow(try makeScheduler(.euler, config: exponential, steps: 4))
        XCTAssertNoThrow(try makeScheduler(.dpmpp2m, config: exponential, steps: 4))
    }
}
