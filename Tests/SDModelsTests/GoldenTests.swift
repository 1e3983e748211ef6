import Foundation
import SDFormat
import XCTest
@testable import SDModels

/// Whole-model parity with diffusers/transformers fp32 on the tiny models: every case in
/// Tests/Fixtures/golden/{text_encoder,unet,vae}/<model>/index.json.
final class GoldenTests: XCTestCase {
    func testCLIPTextModelMatchesTransformers() throws {
        for model in tinyModels {
            let config = try CLIPTextConfig(json: Fixtures.config(model, "text_encoder"))
            let clip = try CLIPTextModel(config: config, weights: Fixtures.weights(model, "text_encoder"))
            let cases = try Fixtures.goldenCases("text_encoder", model)
            XCTAssertFalse(cases.isEmpty, "\(model): no text_encoder goldens")
            for c in cases {
                let name = "\(model)/\(c["name"]?.string ?? "?")"
                let ids = try Fixtures.npy("text_encoder", model, c["ids"])
                let expected = try Fixtures.npy("text_encoder", model, c["last_hidden_state"])
                let out = try clip.encode(ids: ids.ints.map { Int32($0) }, batch: ids.shape[0], pool: testPool)
                let err = relativeRMSError(out, expected.floats)
                XCTAssertLessThanOrEqual(err, modelRelativeRMSTolerance, "text_encoder \(name): relative RMS error \(err)")
            }
        }
    }

    func testUNetMatchesDiffusers() throws {
        for model in tinyModels {
            let config = try UNet2DConditionConfig(json: Fixtures.config(model, "unet"))
            let unet = try UNet2DConditionModel(config: config, weights: Fixtures.weights(model, "unet"))
            let cases = try Fixtures.goldenCases("unet", model)
            XCTAssertFalse(cases.isEmpty, "\(model): no unet goldens")
            for c in cases {
                let name = "\(model)/\(c["name"]?.string ?? "?")"
                let sample = try Fixtures.npy("unet", model, c["sample"])
                let context = try Fixtures.npy("unet", model, c["encoder_hidden_states"])
                let expected = try Fixtures.npy("unet", model, c["output"])
                let s = sample.shape
                let out = unet.predictNoise(sample: sample.floats, batch: s[0], height: s[2], width: s[3],
                                            timestep: Float(c["timestep"]?.double ?? .nan),
                                            context: context.floats, contextTokens: context.shape[1], pool: testPool)
                XCTAssertEqual(expected.shape, [s[0], config.outChannels, s[2], s[3]], name)
                let err = relativeRMSError(out, expected.floats)
                XCTAssertLessThanOrEqual(err, modelRelativeRMSTolerance, "unet \(name): relative RMS error \(err)")
            }
        }
    }

    func testVAEDecoderMatchesDiffusers() throws {
        for model in tinyModels {
            let config = try AutoencoderKLConfig(json: Fixtures.config(model, "vae"))
            let vae = try AutoencoderKL(config: config, weights: Fixtures.weights(model, "vae"))
            let cases = try Fixtures.goldenCases("vae", model)
            XCTAssertFalse(cases.isEmpty, "\(model): no vae goldens")
            for c in cases {
                let name = "\(model)/\(c["name"]?.string ?? "?")"
                let latents = try Fixtures.npy("vae", model, c["latents"])
                let expected = try Fixtures.npy("vae", model, c["image"])
                let s = latents.shape
                let f = vae.upsamplingFactor
                XCTAssertEqual(expected.shape, [s[0], config.outChannels, f * s[2], f * s[3]], name)
                let out = vae.decode(latents: latents.floats, batch: s[0], height: s[2], width: s[3], pool: testPool)
                let err = relativeRMSError(out, expected.floats)
                XCTAssertLessThanOrEqual(err, modelRelativeRMSTolerance, "vae \(name): relative RMS error \(err)")
            }
        }
    }

    /// The goldens tell CLIP's two activations apart (so the hidden_act plumbing is tested).
    func testCLIPGoldensDetectWrongActivation() throws {
        var config = try CLIPTextConfig(json: Fixtures.config("tiny-sd-b", "text_encoder"))
        XCTAssertEqual(config.hiddenAct, .gelu)
        config.hiddenAct = .quickGelu
        let clip = try CLIPTextModel(config: config, weights: Fixtures.weights("tiny-sd-b", "text_encoder"))
        let c = try XCTUnwrap(Fixtures.goldenCases("text_encoder", "tiny-sd-b").first)
        let ids = try Fixtures.npy("text_encoder", "tiny-sd-b", c["ids"])
        let expected = try Fixtures.npy("text_encoder", "tiny-sd-b", c["last_hidden_state"])
        let out = try clip.encode(ids: ids.ints.map { Int32($0) }, batch: ids.shape[0], pool: testPool)
        XCTAssertGreaterThan(relativeRMSError(out, expected.floats), modelRelativeRMSTolerance)
    }
}
