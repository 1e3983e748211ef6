import Foundation
import SDConverter
import SDFormat
import SDPipeline
import SDSchedulers
import XCTest

/// The whole SDXL pipeline (two text encoders, text_time embedding, per-block transformer
/// depths) against diffusers' StableDiffusionXLPipeline on the tiny SDXL-like model
/// (goldens by tools/make_tiny_sdxl.py), with the SD 1.x pipeline tests' fp32 tolerances.
final class SDXLPipelineGoldenTests: XCTestCase {
    static let goldens = PipelineGoldenTests.fixtures + "/golden-sdxl/"

    struct Case {
        let name: String
        let request: GenerationRequest
        let folder: String
        let timesteps: [Float]
        /// The case's scheduler_config.json when the model carries its own scheduler (Turbo).
        let storedConfig: String?
    }

    static func cases() throws -> [Case] {
        let root = try JSON(parsing: String(contentsOfFile: goldens + "cases.json", encoding: .utf8))
        return try XCTUnwrap(root["cases"]?.array).map { c in
            var r = GenerationRequest(prompts: [c["prompt"]!.string!])
            if let s = c["negative_prompt"]?.string { r.negativePrompts = [s] }
            r.steps = c["steps"]!.int!
            r.guidanceScale = Float(c["guidance_scale"]!.double!)
            r.seed = UInt64(c["seed"]!.int!)
            r.width = c["width"]!.int!
            r.height = c["height"]!.int!
            r.seedMode = .batch
            // diffusers' (height, width) and (top, left).
            if let s = c["original_size"]?.array { (r.sizeConditioning.originalHeight, r.sizeConditioning.originalWidth) = (s[0].int!, s[1].int!) }
            if let s = c["crops_coords_top_left"]?.array { (r.sizeConditioning.cropTop, r.sizeConditioning.cropLeft) = (s[0].int!, s[1].int!) }
            if let s = c["target_size"]?.array { (r.sizeConditioning.targetHeight, r.sizeConditioning.targetWidth) = (s[0].int!, s[1].int!) }
            let folder = goldens + c["name"]!.string!
            let stored = c["stored_scheduler_config"]?.string.map { folder + "/" + $0 }
            if stored == nil {
                r.scheduler = try XCTUnwrap(SchedulerKind(rawValue: c["scheduler"]!.string!))
            }
            return Case(name: c["name"]!.string!, request: r, folder: folder,
                        timesteps: c["timesteps"]!.array!.map { Float($0.double!) }, storedConfig: stored)
        }
    }

    /// tiny-sdxl converted (once per weight mode and scheduler) to the scratch folder.
    static func modelFile(_ mode: WeightMode, schedulerConfig: String? = nil) throws -> String {
        guard let schedulerConfig else { return try PipelineGoldenTests.modelFile("tiny-sdxl", mode) }
        let scratch = PipelineGoldenTests.scratch + "/sdxl-variants"
        let folder = scratch + "/" + URL(fileURLWithPath: schedulerConfig).deletingLastPathComponent().lastPathComponent
        let output = folder + "-\(mode.rawValue).pdm"
        if FileManager.default.fileExists(atPath: output) { return output }
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: PipelineGoldenTests.fixtures + "/tiny-sdxl", toPath: folder)
        let target = folder + "/scheduler/scheduler_config.json"
        try FileManager.default.removeItem(atPath: target)
        try FileManager.default.copyItem(atPath: schedulerConfig, toPath: target)
        _ = try Converter.convert(input: folder, output: output, options: ConversionOptions(weights: mode))
        try FileManager.default.removeItem(atPath: folder)
        return output
    }

    func testEveryCaseMatchesDiffusersWithFP32Weights() throws {
        let cases = try Self.cases()
        XCTAssertGreaterThanOrEqual(cases.count, 6)
        let shared = try StableDiffusionPipeline(modelPath: Self.modelFile(.fp32), threads: 2)
        XCTAssertTrue(shared.isSDXL)
        for var c in cases {
            var pipeline = shared
            if let stored = c.storedConfig {
                pipeline = try StableDiffusionPipeline(modelPath: Self.modelFile(.fp32, schedulerConfig: stored), threads: 2)
                var request = c.request
                request.scheduler = nil  // the model's own scheduler, as a pipeline picks it when the user names none
                c = Case(name: c.name, request: request, folder: c.folder, timesteps: c.timesteps, storedConfig: stored)
            }
            let scheduler = try pipeline.makeScheduler(for: c.request)
            XCTAssertEqual(scheduler.timesteps, c.timesteps, "\(c.name): timesteps")
            // Both tokenizers: the second pads with "!" (id 0).
            let ids = try NPYArray(path: c.folder + "/ids.npy").ints
            let ids2 = try NPYArray(path: c.folder + "/ids_2.npy").ints
            XCTAssertEqual(pipeline.tokenizer.tokenize(c.request.prompts[0]).map(Int.init), ids, "\(c.name): ids")
            let tokenizer2 = try StableDiffusionPipeline.tokenizer(of: pipeline.file, prefix: "tokenizer_2")
            XCTAssertEqual(tokenizer2.tokenize(c.request.prompts[0]).map(Int.init), ids2, "\(c.name): ids_2")
            XCTAssertEqual(ids2.last, 0, "\(c.name): tokenizer_2 pads with !")

            let result = try pipeline.generate(c.request)
            let latents = try NPYArray(path: c.folder + "/latents.npy")
            XCTAssertEqual(result.latentShape, latents.shape, c.name)
            let error = PipelineGoldenTests.relativeRMS(result.latents, latents.floats)
            print("\(c.name): latents relative RMS \(error)")
            XCTAssertLessThanOrEqual(error, PipelineGoldenTests.fp32LatentTolerance, "\(c.name): latents relative RMS \(error)")
            let expected = try NPYArray(path: c.folder + "/image.npy").ints
            let actual = result.images.flatMap(\.pixels).map(Int.init)
            XCTAssertEqual(actual.count, expected.count, c.name)
            let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, PipelineGoldenTests.fp32ImageLevels, "\(c.name): image differs by \(worst) levels")
        }
    }

    /// The size conditioning reaches the UNet: changing it moves the latents.
    func testSizeConditioningChangesTheResult() throws {
        let pipeline = try StableDiffusionPipeline(modelPath: Self.modelFile(.fp32), threads: 2)
        var request = GenerationRequest(prompts: ["a cat"])
        (request.width, request.height, request.steps, request.scheduler) = (32, 32, 2, .euler)
        let plain = try pipeline.generate(request).latents
        request.sizeConditioning.originalWidth = 1024
        let changed = try pipeline.generate(request).latents
        XCTAssertGreaterThan(PipelineGoldenTests.relativeRMS(changed, plain), 1e-4)
    }

    func testSizeConditioningIsRefusedForSD1Models() throws {
        let pipeline = try StableDiffusionPipeline(modelPath: PipelineGoldenTests.modelFile("tiny-sd-a", .fp16), threads: 1)
        XCTAssertFalse(pipeline.isSDXL)
        var request = GenerationRequest(prompts: ["a cat"])
        (request.width, request.height, request.steps) = (16, 16, 1)
        request.sizeConditioning.cropLeft = 8
        XCTAssertThrowsError(try pipeline.generate(request)) { error in
            XCTAssertEqual(error as? PipelineError, .invalidRequest("original size, crop coordinates and target size apply to SDXL models only"))
        }
    }

    func testConversionOfTheSDXLFolder() throws {
        let path = try Self.modelFile(.int8)
        let file = try ModelFileReader(path: path)
        XCTAssertEqual(file.components.map(\.name), ["text_encoder", "text_encoder_2", "unet", "vae"])
        XCTAssertEqual(file.string("general.family"), "sdxl")
        XCTAssertEqual(file.int("tokenizer_2.pad_token_id"), 0)
        XCTAssertEqual(file.int("tokenizer.pad_token_id"), 49407)
        XCTAssertNil(file.strings("tokenizer_2.vocab"), "the second tokenizer shares the first's tables")
        XCTAssertEqual(file.int("pipeline.force_zeros_for_empty_prompt"), 1)
        XCTAssertNotNil(file.component("text_encoder_2").tensor("text_projection.weight"))
        XCTAssertNotNil(file.component("unet").tensor("add_embedding.linear_1.weight"))
        // int8 weights stay close to the fp32 goldens (the SD 1.x bound).
        let c = try XCTUnwrap(Self.cases().first { $0.name == "euler" })
        let golden = try NPYArray(path: c.folder + "/latents.npy").floats
        let error = PipelineGoldenTests.relativeRMS(try StableDiffusionPipeline(modelPath: path, threads: 2).generate(c.request).latents, golden)
        print("euler int8: latents relative RMS \(error)")
        XCTAssertLessThanOrEqual(error, PipelineGoldenTests.int8LatentTolerance)
    }

    func testAMissingSecondTokenizerIsAOneLineError() throws {
        let folder = PipelineGoldenTests.scratch + "/sdxl-no-tokenizer-2"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: PipelineGoldenTests.scratch, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: PipelineGoldenTests.fixtures + "/tiny-sdxl", toPath: folder)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.removeItem(atPath: folder + "/tokenizer_2")
        XCTAssertThrowsError(try Converter.convert(input: folder, output: folder + ".pdm", options: ConversionOptions())) { error in
            XCTAssertTrue("\(error)".contains("tokenizer_2/ is missing"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + ".pdm"))
    }
}
