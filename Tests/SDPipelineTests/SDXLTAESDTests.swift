import Foundation
import SDConverter
import SDFormat
import SDPipeline
import SDSchedulers
import XCTest

/// TAESDXL's use: `convert --taesd` on an SDXL model and `--vae taesd`, against diffusers'
/// StableDiffusionXLPipeline with an AutoencoderTiny as its VAE (tools/make_taesdxl_goldens.py:
/// tiny-sdxl with tiny-taesd, whose architecture TAESDXL shares).
final class SDXLTAESDTests: XCTestCase {
    func testTAESDOnSDXLMatchesDiffusers() throws {
        let fixtures = PipelineGoldenTests.fixtures
        let dir = fixtures + "/golden/taesd-sdxl"
        let r = try XCTUnwrap(try JSON(parsing: String(contentsOfFile: dir + "/cases.json", encoding: .utf8))["request"])
        let scratch = NSTemporaryDirectory() + "pocketsd-taesdxl-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: scratch) }
        var options = ConversionOptions(weights: .fp32)
        options.taesd = fixtures + "/tiny-taesd"
        let path = scratch + "/sdxl-taesd.pdm"
        let report = try Converter.convert(input: fixtures + "/tiny-sdxl", output: path, options: options)
        XCTAssertEqual(report.components.map(\.name), ["text_encoder", "text_encoder_2", "unet", "vae", "taesd"])

        let pipeline = try StableDiffusionPipeline(modelPath: path, threads: 2)
        XCTAssertTrue(pipeline.hasTinyAutoencoder)
        var req = GenerationRequest(prompts: r["prompt"]!.array!.map { $0.string! })
        req.steps = r["num_inference_steps"]!.int!
        req.guidanceScale = Float(r["guidance_scale"]!.double!)
        req.seed = UInt64(r["seed"]!.int!)
        req.width = r["width"]!.int!
        req.height = r["height"]!.int!
        req.scheduler = SchedulerKind(rawValue: r["scheduler"]!.string!)!
        req.seedMode = .batch
        req.decoder = .taesd
        let result = try pipeline.generate(req)

        let latents = try NPYArray(path: dir + "/latents.npy")
        XCTAssertEqual(result.latentShape, latents.shape)
        let error = PipelineGoldenTests.relativeRMS(result.latents, latents.floats)
        XCTAssertLessThanOrEqual(error, PipelineGoldenTests.fp32LatentTolerance, "latents relative RMS \(error)")
        let expected = try NPYArray(path: dir + "/image.npy").ints
        let actual = result.images.flatMap(\.pixels).map(Int.init)
        XCTAssertEqual(actual.count, expected.count)
        let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, PipelineGoldenTests.fp32ImageLevels, "image differs by \(worst) levels")

        // TAESD decodes the same latents differently from the SDXL VAE: the decoder choice reaches the image.
        req.decoder = .full
        XCTAssertNotEqual(try pipeline.generate(req).images[0].pixels, result.images[0].pixels)
    }
}
