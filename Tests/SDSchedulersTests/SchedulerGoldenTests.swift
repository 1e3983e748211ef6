import XCTest
@testable import SDSchedulers

/// Every scheduler against diffusers 0.42 with a dummy model (STYLE.md item 9). The goldens and
/// the one-liner loop that made them are in tools/make_scheduler_goldens.py:
///     x = deterministic * init_noise_sigma
///     for t in timesteps: x = step(scale_model_input(x, t) * float32(t / (t + 1)), t, x)
final class SchedulerGoldenTests: XCTestCase {
    /// Integer timesteps (all but Karras Euler/LMS) must be identical; Karras Euler/LMS
    /// timesteps are fractions interpolated in float32 log sigma, where numpy's SIMD logf and
    /// ours may differ by an ulp: relative tolerance.
    let fractionalTimestepRelativeTolerance: Float = 1e-6
    /// sigmas and init_noise_sigma, relative. (torch's float32 sqrt comes from MKL and is not
    /// always correctly rounded, so a last-bit difference is expected.)
    let sigmaRelativeTolerance: Float = 1e-6
    /// LMS coefficients (our 3-point Gauss–Legendre vs scipy's quad over a float32 integrand),
    /// relative to max(|c|, 1).
    let lmsCoefficientTolerance: Double = 1e-6
    /// Final sample: max |ours - diffusers| / max |diffusers|.
    let sampleRelativeTolerance: Float = 1e-5
    /// Zero-terminal-SNR rescaling subtracts sqrt(ᾱ_T) from sqrt(ᾱ_t): near t = T the ulp
    /// differences of torch's sqrt are amplified (ᾱ agrees to 4e-6 there), which shows in the sample.
    let zeroSNRSampleRelativeTolerance: Float = 1e-4
    /// alphas_cumprod after the zero-SNR rescale, relative (other tables are bit-exact).
    let zeroSNRTableRelativeTolerance: Float = 1e-5

    static func makeByClass(_ className: String, config: SchedulerConfig, steps: Int) throws -> any Scheduler {
        switch className {
        case "PNDMScheduler": return try PNDMScheduler(config: config, steps: steps)
        case "DDIMScheduler": return try DDIMScheduler(config: config, steps: steps)
        case "LMSDiscreteScheduler": return try LMSDiscreteScheduler(config: config, steps: steps)
        case "EulerDiscreteScheduler": return try EulerDiscreteScheduler(config: config, steps: steps)
        case "EulerAncestralDiscreteScheduler": return try EulerAncestralDiscreteScheduler(config: config, steps: steps)
        case "DPMSolverMultistepScheduler": return try DPMSolverMultistepScheduler(config: config, steps: steps)
        case "LCMScheduler": return try LCMScheduler(config: config, steps: steps)
        default: throw SchedulerError.invalidSchedule(scheduler: className, reason: "unknown class in goldens")
        }
    }

    static func sigmas(of scheduler: any Scheduler) -> [Float]? {
        switch scheduler {
        case let s as LMSDiscreteScheduler: return s.sigmas
        case let s as EulerDiscreteScheduler: return s.sigmas
        case let s as EulerAncestralDiscreteScheduler: return s.sigmas
        case let s as DPMSolverMultistepScheduler: return s.sigmas
        default: return nil
        }
    }

    /// x_i = float32(((37 i) mod n) / n * 2 - 1), as the script builds it.
    static func deterministicSample(count n: Int) -> [Float] {
        (0..<n).map { i in Float((i * 37) % n) / Float(n) * 2 - 1 }
    }

    static func relativeError(_ got: [Float], _ want: [Float]) -> (error: Float, index: Int) {
        let scale = want.map(abs).max() ?? 0
        var worst: (Float, Int) = (0, 0)
        for i in want.indices {
            let e = abs(got[i] - want[i]) / max(scale, .leastNormalMagnitude)
            if !(e <= worst.0) { worst = (e.isNaN ? .infinity : e, i) }
        }
        return worst
    }

    func testAllCasesMatchDiffusers() throws {
        let goldens = try Fixtures.load("schedulers.json", as: SchedulerGoldens.self)
        XCTAssertGreaterThanOrEqual(goldens.cases.count, 400)
        var bitExactFinals = 0
        var worstError: Float = 0
        var worstZeroSNRError: Float = 0
        var worstCoefficientError = 0.0
        var addNoiseChecks = 0
        let addNoiseSeed: UInt64 = 321       // ADD_NOISE_SEED in the script
        for golden in goldens.cases {
            let label = "[\(golden.name)]"
            let stored = goldens.config(of: golden)
            let config = try SchedulerConfig(json: stored)
            let zeroSNR = stored["rescale_betas_zero_snr"].map { if case .bool(true) = $0 { return true } else { return false } } ?? false
            var scheduler: any Scheduler
            if golden.model == true {
                let kind = try SchedulerKind(modelConfig: config)
                XCTAssertEqual(kind.diffusersClassName, golden.class, "\(label) kind from _class_name")
                scheduler = try makeModelScheduler(config: config, steps: golden.steps)
                XCTAssertEqual(String(describing: type(of: scheduler)), golden.class, label)
            } else if let kindName = golden.kind {
                let kind = try XCTUnwrap(SchedulerKind(rawValue: kindName), label)
                XCTAssertEqual(kind.diffusersClassName, golden.class, label)
                scheduler = try makeScheduler(kind, config: config, steps: golden.steps)
            } else {
                scheduler = try Self.makeByClass(golden.class, config: config, steps: golden.steps)
            }

            let expected = golden.expected
            XCTAssertEqual(scheduler.timesteps.count, expected.timesteps.count, "\(label) number of model calls")
            for (got, want) in zip(scheduler.timesteps, expected.timesteps.map { Float($0) }) {
                let tolerance = want.rounded() == want ? 0 : fractionalTimestepRelativeTolerance * abs(want)
                if abs(got - want) > tolerance {
                    XCTFail("\(label) timesteps \(scheduler.timesteps) != \(expected.timesteps)")
                    break
                }
            }
            XCTAssertEqual(scheduler.initNoiseSigma, Float(expected.initNoiseSigma),
                           accuracy: sigmaRelativeTolerance * Float(expected.initNoiseSigma), "\(label) init_noise_sigma")
            if let hex = expected.sigmas {
                let want = Fixtures.floats(hex: hex)
                let got = try XCTUnwrap(Self.sigmas(of: scheduler), "\(label) has sigmas")
                XCTAssertEqual(got.count, want.count, "\(label) sigmas count")
                for (i, (g, w)) in zip(got, want).enumerated() where abs(g - w) > sigmaRelativeTolerance * abs(w) {
                    XCTFail("\(label) sigma[\(i)] = \(g), diffusers \(w)")
                    break
                }
            }
            guard scheduler.timesteps.count == expected.timesteps.count else { continue }
            if let coefficients = expected.lmsCoefficients {
                let lms = try XCTUnwrap(scheduler as? LMSDiscreteScheduler, label)
                for (i, row) in coefficients.enumerated() {
                    for (k, want) in row.enumerated() {
                        let got = lms.lmsCoefficient(order: row.count, index: i, term: k)
                        XCTAssertEqual(got, want, accuracy: lmsCoefficientTolerance * max(abs(want), 1), "\(label) LMS coefficient step \(i) term \(k)")
                        worstCoefficientError = max(worstCoefficientError, abs(got - want) / max(abs(want), 1))
                    }
                }
            }

            let count = (golden.shape ?? [1, 4, 4, 4]).reduce(1, *)
            for record in expected.addNoise ?? [] {
                var noiseGenerator = TorchGenerator(seed: addNoiseSeed)
                let noise = noiseGenerator.randn(count: count)
                let got = scheduler.addNoise(original: Self.deterministicSample(count: count), noise: noise, stepIndex: record.stepIndex)
                let (error, index) = Self.relativeError(got, Fixtures.floats(hex: record.result))
                XCTAssertLessThanOrEqual(error, zeroSNR ? zeroSNRSampleRelativeTolerance : sampleRelativeTolerance, "\(label) add_noise at step \(record.stepIndex), x[\(index)]")
                addNoiseChecks += 1
            }
            var generator = TorchGenerator(seed: golden.seed ?? 0)
            var sample = Self.deterministicSample(count: count).map { $0 * scheduler.initNoiseSigma }
            var firstDivergence: String? = nil
            for (i, t) in scheduler.timesteps.enumerated() {
                let factor = Float(Double(t) / (Double(t) + 1))
                let output = scheduler.scaleModelInput(sample, stepIndex: i).map { $0 * factor }
                sample = scheduler.step(modelOutput: output, stepIndex: i, sample: sample, generator: &generator)
                let absSum = sample.reduce(0.0) { $0 + Double(abs($1)) }
                let want = expected.trajectoryAbsSum[i]
                if firstDivergence == nil, abs(absSum - want) > Double(sampleRelativeTolerance) * max(want, 1e-30) {
                    firstDivergence = "step \(i) (t = \(t)): sum|x| \(absSum) vs \(want)"
                }
            }
            let want = Fixtures.floats(hex: expected.final)
            XCTAssertEqual(sample.count, want.count, label)
            let (error, index) = Self.relativeError(sample, want)
            XCTAssertLessThanOrEqual(error, zeroSNR ? zeroSNRSampleRelativeTolerance : sampleRelativeTolerance,
                                     "\(label) final x[\(index)] = \(sample[index]) vs \(want[index]); first divergence: \(firstDivergence ?? "none")")
            if zip(sample, want).allSatisfy({ $0.bitPattern == $1.bitPattern }) { bitExactFinals += 1 }
            if zeroSNR { worstZeroSNRError = max(worstZeroSNRError, error) } else { worstError = max(worstError, error) }
        }
        XCTAssertGreaterThanOrEqual(addNoiseChecks, goldens.cases.count, "add_noise goldens")
        print("scheduler goldens: \(bitExactFinals)/\(goldens.cases.count) final samples bit-identical to diffusers, worst relative error \(worstError) (zero-SNR cases: \(worstZeroSNRError)); worst LMS coefficient error \(worstCoefficientError)")
    }

    func testTrainingScheduleTablesAreBitExact() throws {
        let goldens = try Fixtures.load("schedulers.json", as: SchedulerGoldens.self)
        XCTAssertEqual(goldens.tables.count, 4)
        for table in goldens.tables {
            let config = try SchedulerConfig(json: table.config)
            let got = try TrainingNoiseSchedule(config: config, scheduler: "DDIMScheduler", clampTerminalAlpha: false).alphasCumprod
            XCTAssertEqual(got.count, 1000, table.name)
            guard table.name == "zero_snr" else {
                XCTAssertEqual(Fixtures.fnv1a64(got), table.fnv1a64, "\(table.name): alphas_cumprod bits differ from torch")
                continue
            }
            let want = Fixtures.floats(hex: try XCTUnwrap(table.alphasCumprod))
            for (i, (g, w)) in zip(got, want).enumerated() where abs(g - w) > zeroSNRTableRelativeTolerance * abs(w) {
                XCTFail("\(table.name): alphas_cumprod[\(i)] = \(g), torch \(w)")
                break
            }
            XCTAssertEqual(got.last, 0, "zero terminal SNR")
        }
    }
}
