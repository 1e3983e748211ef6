import SDFormat
import XCTest
@testable import SDModels

/// A model file whose tensors disagree with the config is rejected at load, naming the key;
/// inputs the models cannot take are rejected with a ModelError.
final class WeightValidationTests: XCTestCase {
    /// Asserts a FormatError whose message names `key` and contains `fragment`.
    func assertFormatError(_ body: () throws -> Void, key: String, fragment: String,
                           file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? FormatError else { return XCTFail("not a FormatError: \(error)", file: file, line: line) }
            XCTAssertTrue(e.message.contains(key), "\"\(e.message)\" does not name \(key)", file: file, line: line)
            XCTAssertTrue(e.message.contains(fragment), "\"\(e.message)\" does not say \(fragment)", file: file, line: line)
        }
    }

    func testUNetRejectsWrongShapeAndMissingTensor() throws {
        for model in tinyModels {
            let config = try UNet2DConditionConfig(json: Fixtures.config(model, "unet"))
            let file = try Fixtures.weights(model, "unet")
            let proj = "down_blocks.0.attentions.0.proj_in.weight"
            let shape = file.tensor(proj)!.shape
            // A 1×1-conv proj_in where the config says linear, or the reverse.
            let swapped = shape.count == 4 ? Array(shape.prefix(2)) : shape + [1, 1]
            assertFormatError({ _ = try UNet2DConditionModel(config: config, weights: EditedWeights(file, key: proj, shape: swapped)) },
                              key: proj, fragment: "the config implies \(shape)")
            let shortcut = "up_blocks.1.resnets.0.conv_shortcut.weight"
            assertFormatError({ _ = try UNet2DConditionModel(config: config, weights: EditedWeights(file, key: shortcut, shape: nil)) },
                              key: shortcut, fragment: "missing tensor")
        }
    }

    func testUNetRejectsWeightsOfAnotherConfig() throws {
        // Model B's weights under model A's config: the first disagreeing tensor is named.
        let config = try UNet2DConditionConfig(json: Fixtures.config("tiny-sd-a", "unet"))
        let file = try Fixtures.weights("tiny-sd-b", "unet")
        XCTAssertThrowsError(try UNet2DConditionModel(config: config, weights: file)) { error in
            XCTAssertTrue(error is FormatError, "\(error)")
        }
    }

    func testVAERejectsWrongShapeAndMissingTensor() throws {
        let config = try AutoencoderKLConfig(json: Fixtures.config("tiny-sd-b", "vae"))
        let file = try Fixtures.weights("tiny-sd-b", "vae")
        let q = "decoder.mid_block.attentions.0.to_q.weight"
        assertFormatError({ _ = try AutoencoderKL(config: config, weights: EditedWeights(file, key: q, shape: [32, 16, 2])) },
                          key: q, fragment: "shape [32, 16, 2]")
        let post = "post_quant_conv.bias"
        assertFormatError({ _ = try AutoencoderKL(config: config, weights: EditedWeights(file, key: post, shape: nil)) },
                          key: post, fragment: "missing tensor")
    }

    func testCLIPRejectsWrongShapeMissingTensorAndBadIds() throws {
        let config = try CLIPTextConfig(json: Fixtures.config("tiny-sd-a", "text_encoder"))
        let file = try Fixtures.weights("tiny-sd-a", "text_encoder")
        let fc1 = "text_model.encoder.layers.1.mlp.fc1.weight"
        assertFormatError({ _ = try CLIPTextModel(config: config, weights: EditedWeights(file, key: fc1, shape: [config.intermediateSize + 1, config.hiddenSize])) },
                          key: fc1, fragment: "has shape")
        let norm = "text_model.final_layer_norm.weight"
        assertFormatError({ _ = try CLIPTextModel(config: config, weights: EditedWeights(file, key: norm, shape: nil)) },
                          key: norm, fragment: "missing tensor")

        let clip = try CLIPTextModel(config: config, weights: file)
        var ids = [Int32](repeating: 49407, count: 77)
        ids[3] = Int32(config.vocabSize)
        XCTAssertThrowsError(try clip.encode(ids: ids, batch: 1, pool: testPool)) { error in
            XCTAssertTrue("\(error)".contains("token id \(config.vocabSize)"), "\(error)")
        }
        XCTAssertThrowsError(try clip.encode(ids: [Int32](repeating: 0, count: 78), batch: 1, pool: testPool))
        XCTAssertThrowsError(try clip.encode(ids: [Int32](repeating: 0, count: 77), batch: 2, pool: testPool))
        XCTAssertThrowsError(try clip.encode(ids: [0, 1], batch: 1, skipLastLayers: config.numHiddenLayers, pool: testPool))
    }

    /// Weights under a component prefix (as in the model file) bind the same tensors.
    func testPrefixedWeights() throws {
        let config = try CLIPTextConfig(json: Fixtures.config("tiny-sd-b", "text_encoder"))
        let file = try Fixtures.weights("tiny-sd-b", "text_encoder")
        let prefixed = PrefixedWeights(file, prefix: "text_encoder.")
        let ids: [Int32] = [49406, 320, 1125, 539, 49407, 49407]
        let plain = try CLIPTextModel(config: config, weights: file).encode(ids: ids, batch: 2, pool: testPool)
        let viaPrefix = try CLIPTextModel(config: config, weights: prefixed, prefix: "text_encoder.").encode(ids: ids, batch: 2, pool: testPool)
        XCTAssertEqual(plain, viaPrefix)
        XCTAssertThrowsError(try CLIPTextModel(config: config, weights: prefixed))  // wrong prefix: keys missing
    }

    /// CLIP skip k equals a model cut to num_hidden_layers − k on the same weights.
    func testCLIPSkipStopsEarly() throws {
        var config = try CLIPTextConfig(json: Fixtures.config("tiny-sd-b", "text_encoder"))
        let file = try Fixtures.weights("tiny-sd-b", "text_encoder")
        let ids: [Int32] = [49406, 320, 1125, 539, 550, 49407, 49407, 49407]
        let skipped = try CLIPTextModel(config: config, weights: file).encode(ids: ids, batch: 1, skipLastLayers: 1, pool: testPool)
        let full = try CLIPTextModel(config: config, weights: file).encode(ids: ids, batch: 1, pool: testPool)
        config.numHiddenLayers -= 1
        let cut = try CLIPTextModel(config: config, weights: file).encode(ids: ids, batch: 1, pool: testPool)
        XCTAssertEqual(skipped, cut)
        XCTAssertGreaterThan(relativeRMSError(full, cut), modelRelativeRMSTolerance)
    }

    /// Latent sizes down to 1×1 run through every level (the up-samplers follow the skips).
    func testUNetAndVAEAcceptTinyOddSizes() throws {
        let config = try UNet2DConditionConfig(json: Fixtures.config("tiny-sd-b", "unet"))
        let unet = try UNet2DConditionModel(config: config, weights: Fixtures.weights("tiny-sd-b", "unet"))
        let vaeConfig = try AutoencoderKLConfig(json: Fixtures.config("tiny-sd-b", "vae"))
        let vae = try AutoencoderKL(config: vaeConfig, weights: Fixtures.weights("tiny-sd-b", "vae"))
        for (h, w) in [(1, 1), (3, 2)] {
            let sample = (0..<(config.inChannels * h * w)).map { Float($0 % 7) / 7 - 0.5 }
            let context = (0..<(3 * config.crossAttentionDim)).map { Float($0 % 5) / 5 - 0.4 }
            let eps = unet.predictNoise(sample: sample, batch: 1, height: h, width: w, timestep: 500,
                                        context: context, contextTokens: 3, pool: testPool)
            XCTAssertEqual(eps.count, config.outChannels * h * w, "\(h)x\(w)")
            XCTAssertTrue(eps.allSatisfy(\.isFinite), "\(h)x\(w)")
            let image = vae.decode(latents: sample, batch: 1, height: h, width: w, pool: testPool)
            XCTAssertEqual(image.count, 3 * h * w * vae.upsamplingFactor * vae.upsamplingFactor, "\(h)x\(w)")
            XCTAssertTrue(image.allSatisfy(\.isFinite), "\(h)x\(w)")
        }
    }
}

/// Serves another source's tensors under `prefix + key`.
final class PrefixedWeights: WeightSource {
    let base: WeightSource
    let prefix: String
    init(_ base: WeightSource, prefix: String) {
        self.base = base
        self.prefix = prefix
    }
    var sourceName: String { base.sourceName }
    var tensorKeys: [String] { base.tensorKeys.map { prefix + $0 } }
    func tensor(_ key: String) -> TensorView? {
        key.hasPrefix(prefix) ? base.tensor(String(key.dropFirst(prefix.count))) : nil
    }
}
