import Foundation
import SDConverter
import SDFormat
import SDKernels
import SDPipeline
import SDSchedulers
import XCTest

/// Whole pipelines against diffusers: tiny-sd-b and tiny-sdxl with a LoRA fused at conversion
/// (goldens by tools/make_lora_goldens.py, tools/make_sdxl_lora_goldens.py) and tiny-sd-b with
/// TAESD as the image decoder (tools/make_taesd_goldens.py).
final class LoRATAESDPipelineTests: XCTestCase {
    static let fixtures = PipelineGoldenTests.fixtures

    func scratch() -> String {
        let dir = NSTemporaryDirectory() + "pocketsd-lora-taesd-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    func request(_ r: JSON) -> GenerationRequest {
        var q = GenerationRequest(prompts: r["prompt"]!.array!.map { $0.string! })
        if let n = r["negative_prompt"]?.array { q.negativePrompts = n.map { $0.string! } }
        q.steps = r["num_inference_steps"]!.int!
        q.guidanceScale = Float(r["guidance_scale"]!.double!)
        q.seed = UInt64(r["seed"]!.int!)
        q.width = r["width"]!.int!
        q.height = r["height"]!.int!
        q.scheduler = SchedulerKind(rawValue: r["scheduler"]!.string!)!
        q.seedMode = .batch
        return q
    }

    func assertMatches(_ result: StableDiffusionPipeline.Result, _ folder: String, _ name: String) throws {
        let latents = try NPYArray(path: folder + "/latents.npy")
        XCTAssertEqual(result.latentShape, latents.shape, name)
        let error = PipelineGoldenTests.relativeRMS(result.latents, latents.floats)
        XCTAssertLessThanOrEqual(error, PipelineGoldenTests.fp32LatentTolerance, "\(name): latents relative RMS \(error)")
        let expected = try NPYArray(path: folder + "/image.npy").ints
        let actual = result.images.flatMap(\.pixels).map(Int.init)
        XCTAssertEqual(actual.count, expected.count, name)
        let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, PipelineGoldenTests.fp32ImageLevels, "\(name): image differs by \(worst) levels")
    }

    /// `base` converted (fp32) with the LoRA `lora` at `scale` generates `golden`'s result.
    func assertLoRAPipeline(_ base: String, lora: String, scale: Float, request: GenerationRequest, golden: String, _ name: String) throws {
        var options = ConversionOptions(weights: .fp32)
        options.loras = [LoRASpec(path: lora, scale: scale)]
        let path = scratch() + "/\(name).pdm"
        _ = try Converter.convert(input: Self.fixtures + "/" + base, output: path, options: options)
        let pipeline = try StableDiffusionPipeline(modelPath: path, threads: 2)
        try assertMatches(try pipeline.generate(request), golden, name)
    }

    func testLoRAPipelinesMatchDiffusers() throws {
        let dir = Self.fixtures + "/lora"
        let root = try JSON(parsing: String(contentsOfFile: dir + "/cases.json", encoding: .utf8))
        let req = request(root["request"]!)
        for c in try XCTUnwrap(root["cases"]?.array) {
            try assertLoRAPipeline("tiny-sd-b", lora: dir + "/" + c["lora"]!.string!, scale: Float(c["scale"]!.double!),
                                   request: req, golden: dir + "/" + c["pipeline"]!.string!, c["name"]!.string!)
        }
    }

    /// Both formats fuse to the same weights (LoRATests), so each scale's golden is checked with
    /// one: PEFT at the first, kohya at the second.
    func testSDXLLoRAPipelinesMatchDiffusers() throws {
        let dir = Self.fixtures + "/lora-sdxl"
        let root = try JSON(parsing: String(contentsOfFile: dir + "/cases.json", encoding: .utf8))
        let req = request(root["request"]!)
        let cases = try XCTUnwrap(root["cases"]?.array)
        XCTAssertEqual(cases.count, 2)
        for (c, format) in zip(cases, ["peft", "kohya"]) {
            try assertLoRAPipeline("tiny-sdxl", lora: dir + "/\(format).safetensors", scale: Float(c["scale"]!.double!),
                                   request: req, golden: dir + "/" + c["pipeline"]!.string!, "sdxl-\(format)-\(c["name"]!.string!)")
        }
    }

    func testTAESDPipelineMatchesDiffusers() throws {
        let dir = Self.fixtures + "/golden/taesd"
        let root = try JSON(parsing: String(contentsOfFile: dir + "/cases.json", encoding: .utf8))
        var req = request(root["pipeline"]!)
        var options = ConversionOptions(weights: .fp32)
        options.taesd = Self.fixtures + "/tiny-taesd"
        let path = scratch() + "/b-taesd.pdm"
        _ = try Converter.convert(input: Self.fixtures + "/tiny-sd-b", output: path, options: options)
        let pipeline = try StableDiffusionPipeline(modelPath: path, threads: 2)
        XCTAssertTrue(pipeline.hasTinyAutoencoder)
        req.decoder = .taesd
        var previews = 0
        let result = try pipeline.generate(req) { p in
            if let latents = p.latents, let image = pipeline.previewImage(latents: latents, shape: p.latentShape) {
                // TAESD previews are full size (the latent approximation would be 16×16).
                XCTAssertEqual(image.width, req.width)
                XCTAssertEqual(image.height, req.height)
                previews += 1
            }
            return true
        }
        XCTAssertEqual(previews, req.steps)
        try assertMatches(result, dir + "/pipeline", "tiny-sd-b --vae taesd")
        // Every image's TAESD decode replayed the phase's activation plan.
        let arena = try XCTUnwrap(result.phases.first { $0.name == "vae decode" }?.activations)
        XCTAssertEqual(arena.passes, result.images.count)
        XCTAssertEqual(arena.fallbacks, 0)
        // The last preview is the final image.
        XCTAssertEqual(pipeline.previewImage(latents: result.latents, shape: result.latentShape)?.pixels, result.images[0].pixels)
    }

    func testTAESDOnAFileWithoutItIsAnError() throws {
        let pipeline = try StableDiffusionPipeline(modelPath: PipelineGoldenTests.modelFile("tiny-sd-a", .fp16), threads: 1)
        XCTAssertFalse(pipeline.hasTinyAutoencoder)
        var req = GenerationRequest(prompts: ["x"])
        req.width = 64
        req.height = 64
        req.steps = 1
        req.decoder = .taesd
        XCTAssertThrowsError(try pipeline.generate(req)) { XCTAssertTrue("\($0)".contains("no TAESD"), "\($0)") }
        // Without TAESD a preview is the latent-size approximation.
        let latents = [Float](repeating: 0.1, count: 4 * 8 * 8)
        XCTAssertEqual(pipeline.previewImage(latents: latents, shape: [1, 4, 8, 8])?.width, 8)
    }
}
