import Foundation
import SDFormat
import SDPipeline
import SDSchedulers
import XCTest

/// The whole pipeline with the schedulers whose goldens come from
/// tools/make_scheduler_pipeline_goldens.py (LCM on the tiny SD 1.x model's stored config, as
/// with the LCM-LoRA), against diffusers' StableDiffusionPipeline; same bounds as
/// PipelineGoldenTests.
final class SchedulerPipelineGoldenTests: XCTestCase {
    struct Case {
        let name: String
        let request: GenerationRequest
        let folder: String
        let timesteps: [Float]
    }

    static func cases() throws -> [Case] {
        let folder = PipelineGoldenTests.fixtures + "/golden/pipeline-schedulers/"
        let root = try JSON(parsing: String(contentsOfFile: folder + "cases.json", encoding: .utf8))
        return try XCTUnwrap(root["cases"]?.array).map { c in
            var r = GenerationRequest(prompts: c["prompts"]!.array!.map { $0.string! })
            r.steps = c["steps"]!.int!
            r.guidanceScale = Float(c["guidance_scale"]!.double!)
            r.seed = UInt64(c["seed"]!.int!)
            r.width = c["width"]!.int!
            r.height = c["height"]!.int!
            r.imagesPerPrompt = c["num_images_per_prompt"]!.int!
            r.scheduler = SchedulerKind(rawValue: c["scheduler"]!.string!)!
            XCTAssertEqual(c["model"]?.string, "tiny-sd-a")
            return Case(name: c["name"]!.string!, request: r, folder: folder + c["folder"]!.string!,
                        timesteps: c["timesteps"]!.array!.map { Float($0.double!) })
        }
    }

    func testLCMPipelineMatchesDiffusers() throws {
        let cases = try Self.cases()
        XCTAssertGreaterThanOrEqual(cases.count, 5)
        let pipeline = try StableDiffusionPipeline(modelPath: PipelineGoldenTests.modelFile("tiny-sd-a", .fp32), threads: 2)
        for c in cases {
            let scheduler = try makeScheduler(c.request.scheduler, config: pipeline.schedulerConfig, steps: c.request.steps)
            XCTAssertEqual(scheduler.timesteps, c.timesteps, "\(c.name): timesteps")
            let result = try pipeline.generate(c.request)
            let latents = try NPYArray(path: c.folder + "/latents.npy")
            XCTAssertEqual(result.latentShape, latents.shape, c.name)
            let error = PipelineGoldenTests.relativeRMS(result.latents, latents.floats)
            XCTAssertLessThanOrEqual(error, PipelineGoldenTests.fp32LatentTolerance, "\(c.name): latents relative RMS \(error)")
            let expected = try NPYArray(path: c.folder + "/image.npy").ints
            let actual = result.images.flatMap(\.pixels).map(Int.init)
            XCTAssertEqual(actual.count, expected.count, c.name)
            let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, PipelineGoldenTests.fp32ImageLevels, "\(c.name): image differs by \(worst) levels")
            print("\(c.name): latents relative RMS \(error), image max difference \(worst) levels")
        }
    }
}
