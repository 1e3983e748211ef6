import Foundation
import SDConverter
import SDFormat
@testable import SDPipeline
import SDSchedulers
import XCTest

/// SD 2.x, SD-Turbo-like, LCM-distilled and guidance_rescale runs against diffusers
/// (goldens from tools/make_sd2_goldens.py), with the bounds of PipelineGoldenTests. The SD
/// 2.x-like model is read from its single-file checkpoint (OpenCLIP text tower, fused q/k/v,
/// one block more than the model uses), so these cases check the converter's SD 2.x path too.
final class SD2PipelineGoldenTests: XCTestCase {
    static let golden = PipelineGoldenTests.fixtures + "/golden/sd2/"
    static var scratch: String { PipelineGoldenTests.scratch + "/sd2" }

    struct Case {
        let name: String
        let model: String
        let request: GenerationRequest
        let timesteps: [Float]
        let width: Int
        let height: Int
        let storedConfig: JSON?
    }

    static func cases() throws -> [Case] {
        let root = try JSON(parsing: String(contentsOfFile: golden + "cases.json", encoding: .utf8))
        return try XCTUnwrap(root["cases"]?.array).map { c in
            var r = GenerationRequest(prompts: c["prompts"]!.array!.map { $0.string! })
            r.steps = c["steps"]!.int!
            r.guidanceScale = Float(c["guidance_scale"]!.double!)
            r.guidanceRescale = Float(c["guidance_rescale"]!.double!)
            r.seed = UInt64(c["seed"]!.int!)
            r.scheduler = c["scheduler"]?.string.map { SchedulerKind(rawValue: $0)! }
            let stored = c["stored_scheduler_config"].flatMap { $0.isNull ? nil : $0 }
            return Case(name: c["name"]!.string!, model: c["model"]!.string!, request: r,
                        timesteps: c["timesteps"]!.array!.map { Float($0.double!) },
                        width: c["width"]!.int!, height: c["height"]!.int!, storedConfig: stored)
        }
    }

    /// A copy of `folder` with `scheduler/scheduler_config.json` replaced by `config`.
    static func copy(_ folder: String, to target: String, schedulerConfig config: JSON?) throws {
        try? FileManager.default.removeItem(atPath: target)
        try FileManager.default.copyItem(atPath: folder, toPath: target)
        if let config {
            try FileManager.default.createDirectory(atPath: target + "/scheduler", withIntermediateDirectories: true)
            try config.serialized.write(toFile: target + "/scheduler/scheduler_config.json", atomically: true, encoding: .utf8)
        }
    }

    /// The SD 2.x-like single file converted (fp32) with its configs, or with another stored
    /// scheduler config.
    static func sd2Model(schedulerConfig: JSON? = nil, name: String = "sd2", predictionType: String? = nil) throws -> String {
        let output = scratch + "/\(name).pdm"
        if FileManager.default.fileExists(atPath: output) { return output }
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let config = scratch + "/\(name)-config"
        try copy(PipelineGoldenTests.fixtures + "/tiny-sd2-config", to: config, schedulerConfig: schedulerConfig)
        _ = try Converter.convert(input: PipelineGoldenTests.fixtures + "/tiny-sd2.safetensors", output: output,
                                  options: ConversionOptions(weights: .fp32, configFolder: config, predictionType: predictionType))
        return output
    }

    /// tiny-sd-a with the LCM-distilled UNet and an LCM scheduler config.
    static func lcmModel(schedulerConfig: JSON?) throws -> String {
        let output = scratch + "/lcm.pdm"
        if FileManager.default.fileExists(atPath: output) { return output }
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let folder = scratch + "/tiny-lcm"
        try copy(PipelineGoldenTests.fixtures + "/tiny-sd-a", to: folder, schedulerConfig: schedulerConfig)
        try FileManager.default.removeItem(atPath: folder + "/unet")
        try FileManager.default.copyItem(atPath: PipelineGoldenTests.fixtures + "/tiny-lcm-unet", toPath: folder + "/unet")
        _ = try Converter.convert(input: folder, output: output, options: ConversionOptions(weights: .fp32))
        return output
    }

    func testSD2TurboLCMAndRescaleMatchDiffusers() throws {
        let cases = try Self.cases()
        XCTAssertGreaterThanOrEqual(cases.count, 17)
        var pipelines: [String: StableDiffusionPipeline] = [:]
        for c in cases {
            var request = c.request
            let key: String
            switch (c.model, c.name) {
            case ("tiny-lcm", _): key = "lcm"
            case (_, "sd2-eps-override"):
                key = "sd2"
                request.predictionType = "epsilon"  // what --prediction-type epsilon gives
            case (_, _) where c.storedConfig != nil: key = c.name
            default: key = "sd2"
            }
            if pipelines[key] == nil {
                let path = key == "lcm" ? try Self.lcmModel(schedulerConfig: c.storedConfig)
                    : key == "sd2" ? try Self.sd2Model() : try Self.sd2Model(schedulerConfig: c.storedConfig, name: key)
                pipelines[key] = try StableDiffusionPipeline(modelPath: path, threads: 2)
            }
            let pipeline = pipelines[key]!
            // No size given: the model's own (sample_size × 8), as diffusers' pipeline.
            XCTAssertEqual(pipeline.defaultImageSize.width, c.width, c.name)
            XCTAssertEqual(pipeline.defaultImageSize.height, c.height, c.name)
            (request.width, request.height) = pipeline.defaultImageSize
            XCTAssertEqual(try pipeline.makeScheduler(for: request).timesteps, c.timesteps, "\(c.name): timesteps")
            let ids = try NPYArray(path: Self.golden + c.name + "/ids.npy").ints
            XCTAssertEqual(request.prompts.flatMap { pipeline.tokenizer.tokenize($0) }.map(Int.init), ids, "\(c.name): token ids")
            let result = try pipeline.generate(request)
            let latents = try NPYArray(path: Self.golden + c.name + "/latents.npy")
            XCTAssertEqual(result.latentShape, latents.shape, c.name)
            let error = PipelineGoldenTests.relativeRMS(result.latents, latents.floats)
            XCTAssertLessThanOrEqual(error, PipelineGoldenTests.fp32LatentTolerance, "\(c.name): latents relative RMS \(error)")
            let expected = try NPYArray(path: Self.golden + c.name + "/image.npy").ints
            let actual = result.images.flatMap(\.pixels).map(Int.init)
            XCTAssertEqual(actual.count, expected.count, c.name)
            let worst = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, PipelineGoldenTests.fp32ImageLevels, "\(c.name): image differs by \(worst) levels")
            print("\(c.name): latents relative RMS \(error), image max difference \(worst) levels")
        }
    }

    /// What the converter makes of the SD 2.x single file: OpenCLIP's "!" padding, the
    /// penultimate layer (the last block and text_projection unused), v-prediction by default
    /// and the override.
    func testSD2SingleFileConversion() throws {
        let pipeline = try StableDiffusionPipeline(modelPath: Self.sd2Model(), threads: 1)
        XCTAssertEqual(pipeline.tokenizer.padTokenID, 0)
        XCTAssertEqual(pipeline.tokenizer.tokenize("a cat").suffix(3), [0, 0, 0])
        XCTAssertEqual(pipeline.textConfig.numHiddenLayers, 2)
        XCTAssertEqual(pipeline.schedulerConfig.predictionType, "v_prediction")

        // Without configs: v-prediction, SD 2.1's DDIM, and a clear error for the tiny tower
        // whose head count cannot be read from shapes.
        let noConfig = Self.scratch + "/no-config.pdm"
        XCTAssertThrowsError(try Converter.convert(input: PipelineGoldenTests.fixtures + "/tiny-sd2.safetensors", output: noConfig,
                                                   options: ConversionOptions(weights: .fp32))) { error in
            XCTAssertTrue("\(error)".contains("--config"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: noConfig))

        let epsilon = try StableDiffusionPipeline(modelPath: Self.sd2Model(name: "sd2-eps", predictionType: "epsilon"), threads: 1)
        XCTAssertEqual(epsilon.schedulerConfig.predictionType, "epsilon")
        XCTAssertThrowsError(try Converter.convert(input: PipelineGoldenTests.fixtures + "/tiny-sd2.safetensors",
                                                   output: Self.scratch + "/banana.pdm",
                                                   options: ConversionOptions(weights: .fp32, predictionType: "banana")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.scratch + "/banana.pdm"))
    }

    /// The unused keys of the SD 2.x file are exactly what SD 2.x does not run.
    func testSD2UnusedKeys() throws {
        try FileManager.default.createDirectory(atPath: Self.scratch, withIntermediateDirectories: true)
        let report = try Converter.convert(input: PipelineGoldenTests.fixtures + "/tiny-sd2.safetensors",
                                           output: Self.scratch + "/unused.pdm",
                                           options: ConversionOptions(weights: .fp16, configFolder: PipelineGoldenTests.fixtures + "/tiny-sd2-config"))
        XCTAssertTrue(report.unusedKeys.contains("cond_stage_model.model.text_projection"), "\(report.unusedKeys)")
        XCTAssertTrue(report.unusedKeys.contains("cond_stage_model.model.logit_scale"), "\(report.unusedKeys)")
        XCTAssertTrue(report.unusedKeys.contains("text_encoder.text_model.encoder.layers.2.self_attn.q_proj.weight"), "\(report.unusedKeys)")
        XCTAssertFalse(report.unusedKeys.contains { $0.contains("layers.1.") || $0.contains("layers.0.") }, "\(report.unusedKeys)")
    }

    /// A diffusers folder whose tokenizer pads with "!" keeps that padding.
    func testDiffusersFolderPadToken() throws {
        let folder = Self.scratch + "/pad-folder"
        try FileManager.default.createDirectory(atPath: Self.scratch, withIntermediateDirectories: true)
        try Self.copy(PipelineGoldenTests.fixtures + "/tiny-sd-a", to: folder, schedulerConfig: nil)
        for file in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = folder + "/tokenizer/" + file
            let text = try String(contentsOfFile: path, encoding: .utf8)
            var members = try XCTUnwrap(JSON(parsing: text).object)
            members.removeAll { $0.0 == "pad_token" }
            members.append(("pad_token", .string("!")))
            try JSON.object(members).serialized.write(toFile: path, atomically: true, encoding: .utf8)
        }
        let output = Self.scratch + "/pad.pdm"
        _ = try Converter.convert(input: folder, output: output, options: ConversionOptions(weights: .fp16))
        let tokenizer = try StableDiffusionPipeline.tokenizer(of: ModelFileReader(path: output))
        XCTAssertEqual(tokenizer.padTokenID, 0)
        XCTAssertEqual(Array(tokenizer.tokenize("a").prefix(4)), [49406, 320, 49407, 0])
    }

    /// diffusers' rescale_noise_cfg on a hand-made case: fraction 1 gives the text
    /// prediction's standard deviation exactly; 0 leaves the guided values.
    func testGuidanceRescaleMatchesDefinition() throws {
        let text: [Float] = [1, -1, 2, 0, /* image 2 */ 3, 3, -3, -3]
        var guided: [Float] = [2, -2, 4, 0, 1, 1, -1, -1]
        StableDiffusionPipeline.rescaleGuidance(&guided, text: text[...], images: 2, fraction: 1)
        // Image 1: guided is text × 2 → rescaled back to text. Image 2: std 1.155 → 3.464.
        for (a, b) in zip(guided, [1, -1, 2, 0, 3, 3, -3, -3] as [Float]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        var half: [Float] = [2, -2, 4, 0, 1, 1, -1, -1]
        StableDiffusionPipeline.rescaleGuidance(&half, text: text[...], images: 2, fraction: 0.5)
        for (a, b) in zip(half, [1.5, -1.5, 3, 0, 2, 2, -2, -2] as [Float]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }
}
