import Foundation
import SDFormat
import SDPipeline
import SDSchedulers
import XCTest

/// A scheduler written outside the package, as a library user would: Euler wrapped, counting
/// the calls the pipeline makes (in a class, since the pipeline works on its own copy).
private struct CountingEuler: Scheduler {
    final class Calls { var steps = 0, scaled = 0 }
    var inner: EulerDiscreteScheduler
    let calls = Calls()

    init(config: SchedulerConfig, steps: Int) throws {
        var config = config
        config.useKarrasSigmas = false  // as SchedulerKind.euler builds it
        inner = try EulerDiscreteScheduler(config: config, steps: steps)
    }

    var timesteps: [Float] { inner.timesteps }
    var initNoiseSigma: Float { inner.initNoiseSigma }
    func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float] {
        calls.scaled += 1
        return inner.scaleModelInput(sample, stepIndex: stepIndex)
    }
    mutating func step(modelOutput: [Float], stepIndex: Int, sample: [Float], generator: inout TorchGenerator) -> [Float] {
        calls.steps += 1
        return inner.step(modelOutput: modelOutput, stepIndex: stepIndex, sample: sample, generator: &generator)
    }
    func addNoise(original: [Float], noise: [Float], stepIndex: Int) -> [Float] {
        inner.addNoise(original: original, noise: noise, stepIndex: stepIndex)
    }
}

/// The built-in pipeline as its public stages (encodePrompt, prepareLatents, denoise,
/// decode) and with a user-written scheduler, on the tiny SD 1.x model.
final class PipelineStagesTests: XCTestCase {
    static func request() -> GenerationRequest {
        var r = GenerationRequest(prompts: ["a red cube", "a blue sphere"], negativePrompts: ["blurry"])
        r.steps = 4
        r.guidanceScale = 7.5
        r.seed = 7
        r.width = 64
        r.height = 48  // not square: catches h/w swapped between stages
        return r
    }

    func testUserWrittenSchedulerMatchesTheBuiltInOne() throws {
        let pipeline = try StableDiffusionPipeline(modelPath: PipelineGoldenTests.modelFile("tiny-sd-a", .fp32), threads: 2)
        var request = Self.request()
        request.scheduler = .euler
        let euler = try pipeline.generate(request)

        // The request names another scheduler: the one passed must be the one used.
        request.scheduler = .ddim
        let ddim = try pipeline.generate(request)
        let custom = try CountingEuler(config: pipeline.schedulerConfig(for: request), steps: request.steps)
        let result = try pipeline.generate(request, scheduler: custom)

        XCTAssertEqual(custom.calls.steps, request.steps)
        XCTAssertEqual(custom.calls.scaled, request.steps)
        XCTAssertEqual(result.latentShape, euler.latentShape)
        XCTAssertEqual(result.latents, euler.latents, "a user-written Euler must give .euler's latents exactly")
        XCTAssertEqual(result.images.map(\.pixels), euler.images.map(\.pixels))
        XCTAssertGreaterThan(PipelineGoldenTests.relativeRMS(ddim.latents, euler.latents), 1e-3,
                             "DDIM and Euler must differ for this test to show which scheduler ran")
    }

    func testStagesOneByOneEqualGenerate() throws {
        let pipeline = try StableDiffusionPipeline(modelPath: PipelineGoldenTests.modelFile("tiny-sd-a", .fp32), threads: 2)
        var request = Self.request()
        request.scheduler = .eulerAncestral  // draws from the generator inside the loop too
        let whole = try pipeline.generate(request)

        var phases: [StableDiffusionPipeline.Progress.Phase] = []
        let embeddings = try pipeline.encodePrompt(request) { phases.append($0.phase); return true }
        XCTAssertTrue(embeddings.guided)
        XCTAssertEqual(embeddings.tokens, pipeline.tokenizer.maxLength)
        XCTAssertEqual(embeddings.context.count,
                       2 * request.imageCount * embeddings.tokens * pipeline.unetConfig.crossAttentionDim)
        XCTAssertNil(embeddings.added)

        var scheduler = try pipeline.makeScheduler(for: request)
        var generator = request.makeGenerator()
        let start = try pipeline.prepareLatents(request, scheduler: &scheduler, generator: &generator)
        var stepsSeen: [Int] = []
        let denoised = try pipeline.denoise(request, embeddings: embeddings, start: start, scheduler: &scheduler,
                                            generator: &generator) { p in
            phases.append(p.phase)
            stepsSeen.append(p.step)
            XCTAssertEqual(p.latents?.count, p.latentShape.reduce(1, *))
            return true
        }
        XCTAssertEqual(stepsSeen, Array(1...request.steps))
        XCTAssertEqual(denoised.steps.count, request.steps)
        XCTAssertEqual(denoised.phase.name, "denoising")
        let f = pipeline.vaeScaleFactor
        XCTAssertEqual(denoised.latentShape, [2, 4, 48 / f, 64 / f])
        XCTAssertEqual(denoised.latents, whole.latents)

        let images = try pipeline.decode(latents: denoised.latents, shape: denoised.latentShape, request: request) {
            phases.append($0.phase)
            return true
        }
        XCTAssertEqual(images.map(\.pixels), whole.images.map(\.pixels))
        XCTAssertEqual(images.map(\.width), [64, 64])
        XCTAssertEqual(images.map(\.height), [48, 48])
        XCTAssertEqual(phases, [.textEncoder] + Array(repeating: .denoising, count: request.steps) + [.vaeDecode])
        XCTAssertEqual(whole.phases.map(\.name), ["text encoder", "denoising", "vae decode"])
        XCTAssertEqual(whole.steps.count, request.steps)
    }

    func testStagesCancelAndRefuseMismatchedParts() throws {
        let pipeline = try StableDiffusionPipeline(modelPath: PipelineGoldenTests.modelFile("tiny-sd-a", .fp32), threads: 2)
        let request = Self.request()
        XCTAssertThrowsError(try pipeline.encodePrompt(request) { _ in false }) {
            XCTAssertEqual($0 as? PipelineError, .cancelled)
        }
        let embeddings = try pipeline.encodePrompt(request)
        var scheduler = try pipeline.makeScheduler(for: request)
        var generator = request.makeGenerator()
        let start = try pipeline.prepareLatents(request, scheduler: &scheduler, generator: &generator)

        // Cancelled after the second step: no more steps are taken.
        var seen = 0
        var copy = scheduler, copyGenerator = generator
        XCTAssertThrowsError(try pipeline.denoise(request, embeddings: embeddings, start: start, scheduler: &copy,
                                                  generator: &copyGenerator) { p in seen = p.step; return p.step < 2 }) {
            XCTAssertEqual($0 as? PipelineError, .cancelled)
        }
        XCTAssertEqual(seen, 2)

        // Embeddings without the unconditional half, for a guided request.
        var unguided = request
        unguided.guidanceScale = 1
        let single = try pipeline.encodePrompt(unguided)
        XCTAssertFalse(single.guided)
        XCTAssertThrowsError(try pipeline.denoise(request, embeddings: single, start: start, scheduler: &scheduler,
                                                  generator: &generator)) {
            guard case .invalidRequest = $0 as? PipelineError else { return XCTFail("\($0)") }
        }
        // Start latents of another size.
        var smaller = start
        smaller.latents.removeLast()
        XCTAssertThrowsError(try pipeline.denoise(request, embeddings: embeddings, start: smaller, scheduler: &scheduler,
                                                  generator: &generator)) {
            guard case .invalidRequest = $0 as? PipelineError else { return XCTFail("\($0)") }
        }
        // Latents whose shape does not make the request's image size.
        let f = pipeline.vaeScaleFactor
        XCTAssertThrowsError(try pipeline.decode(latents: start.latents, shape: [2, 4, 64 / f, 48 / f], request: request)) {
            guard case .invalidRequest = $0 as? PipelineError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try pipeline.decode(latents: start.latents, shape: [2, 4, 48 / f, 64 / f + 1], request: request)) {
            guard case .invalidRequest = $0 as? PipelineError else { return XCTFail("\($0)") }
        }
    }
}
