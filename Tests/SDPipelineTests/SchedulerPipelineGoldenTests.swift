import Foundation
import SDConverter
import SDFormat
import SDPipeline
import SDSchedulers
import XCTest

/// The whole pipeline with the schedulers whose goldens come from
/// tools/make_scheduler_pipeline_goldens.py, against diffusers' StableDiffusionPipeline; same
/// bounds as PipelineGoldenTests. LCM on the tiny SD 1.x model's stored config (as with the
/// LCM-LoRA), and "model" cases: the tiny model with another stored scheduler config
/// (Turbo-like trailing Euler at guidance 0, v-prediction, zero terminal SNR, an LCM model),
/// run with the scheduler the model names.
final class SchedulerPipelineGoldenTests: XCTestCase {
    struct Case {
        let name: String
        let request: GenerationRequest
        let folder: String
        let timesteps: [Float]
        /// The case's scheduler_config.json when the model carries its own scheduler.
        let storedConfig: String?
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
            if let kind = c["scheduler"]?.string { r.scheduler = SchedulerKind(rawValue: kind)! }
            XCTAssertEqual(c["model"]?.string, "tiny-sd-a")
            let caseFolder = folder + c["folder"]!.string!
            let hasStored = c["stored_scheduler_config"]?.object != nil
            return Case(name: c["name"]!.string!, request: r, folder: caseFolder,
                        timesteps: c["timesteps"]!.array!.map { Float($0.double!) },
                        storedConfig: hasStored ? caseFolder + "/scheduler_config.json" : nil)
        }
    }

    /// The tiny model converted with `schedulerConfig` as its scheduler/scheduler_config.json.
    static func modelVariant(_ name: String, schedulerConfig: String) throws -> String {
        let scratch = PipelineGoldenTests.scratch + "/scheduler-variants"
        let folder = scratch + "/" + name
        let output = folder + ".pdm"
        if FileManager.default.fileExists(atPath: output) { return output }
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: PipelineGoldenTests.fixtures + "/tiny-sd-a", toPath: folder)
        let target = folder + "/scheduler/scheduler_config.json"
        try FileManager.default.removeItem(atPath: target)
        try FileManager.default.copyItem(atPath: schedulerConfig, toPath: target)
        _ = try Converter.convert(input: folder, output: output, options: ConversionOptions(weights: .fp32))
        try FileManager.default.removeItem(atPath: folder)
        return output
    }

    func testPipelineWithTheseSchedulersMatchesDiffusers() throws {
        let cases = try Self.cases()
        XCTAssertGreaterThanOrEqual(cases.count, 14)
        XCTAssertGreaterThanOrEqual(cases.filter { $0.storedConfig != nil }.count, 9)
        let shared = try StableDiffusionPipeline(modelPath: PipelineGoldenTests.modelFile("tiny-sd-a", .fp32), threads: 2)
        for var c in cases {
            var pipeline = shared
            if let stored = c.storedConfig {
                pipeline = try StableDiffusionPipeline(modelPath: Self.modelVariant(c.name, schedulerConfig: stored), threads: 2)
                // No kind named: the model's own scheduler, as `generate` runs without --scheduler.
                var request = c.request
                request.scheduler = nil
                c = Case(name: c.name, request: request, folder: c.folder, timesteps: c.timesteps, storedConfig: stored)
            }
            let scheduler = try pipeline.makeScheduler(for: c.request)
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

    /// A folder whose scheduler config is "outdated" (steps_offset 0, clip_sample true) runs as
    /// diffusers' StableDiffusionPipeline runs it: its constructor rewrites both values, so
    /// the model's own PNDM and a DDIM built from its config (the file has both keys) give
    /// the goldens of the current config (golden/pipeline a-pndm, a-ddim: leading spacing,
    /// where steps_offset moves every timestep).
    func testOutdatedStoredConfigRunsAsStableDiffusionPipelineRewritesIt() throws {
        let scratch = PipelineGoldenTests.scratch + "/scheduler-variants"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let configPath = scratch + "/outdated-scheduler_config.json"
        var text = try String(contentsOfFile: PipelineGoldenTests.fixtures + "/tiny-sd-a/scheduler/scheduler_config.json", encoding: .utf8)
        text = text.replacingOccurrences(of: "\"steps_offset\": 1", with: "\"steps_offset\": 0")
            .replacingOccurrences(of: "\"clip_sample\": false", with: "\"clip_sample\": true")
        XCTAssertTrue(text.contains("\"steps_offset\": 0") && text.contains("\"clip_sample\": true"))
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
        let pipeline = try StableDiffusionPipeline(modelPath: Self.modelVariant("outdated", schedulerConfig: configPath), threads: 2)
        let goldens = try PipelineGoldenTests.cases()
        for (name, kind) in [("a-pndm", nil), ("a-ddim", SchedulerKind.ddim)] as [(String, SchedulerKind?)] {
            let c = try XCTUnwrap(goldens.first { $0.name == name })
            var request = c.request
            request.scheduler = kind
            XCTAssertEqual(pipeline.schedulerConfig(for: request).stepsOffset, 1, name)
            XCTAssertEqual(pipeline.schedulerConfig(for: request).clipSample, false, name)
            let result = try pipeline.generate(request)
            let error = PipelineGoldenTests.relativeRMS(result.latents, try NPYArray(path: c.folder + "/latents.npy").floats)
            XCTAssertLessThanOrEqual(error, PipelineGoldenTests.fp32LatentTolerance, "\(name): latents relative RMS \(error)")
        }
    }
}
