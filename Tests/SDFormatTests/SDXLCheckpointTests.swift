import Foundation
@testable import SDConverter
import SDFormat
import XCTest

/// Single-file SDXL checkpoints (Stability's key layout). The fixture
/// tiny-sdxl-single.safetensors is tiny-sdxl/ written in that layout by
/// tools/make_tiny_sdxl_single.py, which proved it with diffusers' own
/// `StableDiffusionXLPipeline.from_single_file(config=tiny-sdxl)`.
final class SDXLCheckpointTests: XCTestCase {
    let folder = TestFiles.fixture("tiny-sdxl")
    let single = TestFiles.fixture("tiny-sdxl-single.safetensors")

    func convert(_ input: String, _ mode: WeightMode = .fp32, config: String? = nil,
                 predictionType: String? = nil, out: String? = nil) throws -> (ModelFileReader, ConversionReport) {
        let path = out ?? TestFiles.scratch(self) + "/model.pdm"
        let options = ConversionOptions(weights: mode, configFolder: config, predictionType: predictionType)
        let report = try Converter.convert(input: input, output: path, options: options)
        return (try ModelFileReader(path: path), report)
    }

    func testSingleFileGivesTheSameModelAsTheFolder() throws {
        let (a, _) = try convert(folder)
        let (b, report) = try convert(single, config: folder)
        XCTAssertEqual(report.inputKind, "single-file SDXL checkpoint")
        XCTAssertEqual(a.tensorKeys, b.tensorKeys, "same keys in the same execution order")
        XCTAssertEqual(b.components.map(\.name), ["text_encoder", "text_encoder_2", "unet", "vae"])
        for key in a.tensorKeys {
            XCTAssertEqual(a.tensor(key)!.shape, b.tensor(key)!.shape, key)
            // Bit-equal: fp32 of the same fp16 values, renamed, split (q/k/v) or transposed.
            XCTAssertEqual(a.tensor(key)!.floats(), b.tensor(key)!.floats(), key)
        }
        XCTAssertNotNil(b.tensor("text_encoder_2.text_projection.weight"), "the transposed projection is stored")
        for name in ["text_encoder", "text_encoder_2", "unet", "vae", "scheduler"] {
            XCTAssertEqual(try a.config(name), try b.config(name), name)
        }
        for key in ["general.family", "tokenizer.pad_token_id", "tokenizer_2.pad_token_id", "tokenizer_2.eos_token_id",
                    "pipeline.force_zeros_for_empty_prompt", "tokenizer.vocab"] {
            XCTAssertNotNil(b[metadata: key], key)
            XCTAssertTrue(a[metadata: key] == b[metadata: key], key)
        }
        XCTAssertEqual(b.string("general.family"), "sdxl")
        XCTAssertEqual(b.int("tokenizer_2.pad_token_id"), 0, "the second tokenizer pads with \"!\"")
        // What the runtime never reads: OpenCLIP's logit scale, the position-id buffer.
        XCTAssertTrue(report.unusedKeys.contains("conditioner.embedders.1.model.logit_scale"), "\(report.unusedKeys)")
        XCTAssertTrue(report.unusedKeys.contains("conditioner.embedders.0.transformer.text_model.embeddings.position_ids"))
        XCTAssertEqual(report.unusedKeys.count, 2, "\(report.unusedKeys)")
        XCTAssertTrue(report.assumptions.isEmpty, "--config determines everything: \(report.assumptions)")
        XCTAssertNil(b.strings("general.assumptions"))
    }

    /// Quantised too: the transposed projection goes through the int8 path row by row.
    func testInt8SingleFileMatchesInt8Folder() throws {
        let (a, _) = try convert(folder, .int8)
        let (b, _) = try convert(single, .int8, config: folder)
        for key in ["text_encoder_2.text_projection.weight", "unet.add_embedding.linear_1.weight",
                    "text_encoder_2.text_model.encoder.layers.2.self_attn.v_proj.weight"] {
            XCTAssertEqual(a.tensor(key)?.dtype, b.tensor(key)?.dtype, key)
            XCTAssertEqual(a.tensor(key)!.floats(), b.tensor(key)!.floats(), key)
        }
    }

    /// Shapes give everything but the heads (and SDXL's constants); the tiny model's heads are
    /// not 64 wide, so inference stops there with one line naming --config, and nothing is written.
    func testInferenceWithoutConfigNamesTheHeadsAndConfig() throws {
        let out = TestFiles.scratch(self) + "/model.pdm"
        XCTAssertThrowsError(try convert(single, out: out)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("--config"), message)
            XCTAssertTrue(message.contains("heads"), message)
            XCTAssertTrue(message.contains("text_encoder width 16") && message.contains("text_encoder_2 width 24"), message)
            XCTAssertFalse(message.contains("\n"), message)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    /// Every setting shapes determine, against the folder's diffusers configs.
    func testInferredConfigsMatchTheFolders() throws {
        let file = try SafetensorsFile(path: single)
        func shapes(_ prefix: String) -> [String: [Int]] { SingleFileCheckpoint.subset(file, prefix).mapValues(\.shape) }
        let text2 = try OpenCLIPCheckpoint.textTensors(SingleFileCheckpoint.subset(file, SDXLCheckpoint.text2Prefix),
                                                       path: single, prefix: SDXLCheckpoint.text2Prefix)
        let projection = try XCTUnwrap(file.entries.first { $0.key == SDXLCheckpoint.text2Prefix + "text_projection" })
        // A head rule the tiny widths satisfy; heads themselves are checked separately.
        let configs = try SDXLCheckpoint.inferConfigs(
            path: single, unet: shapes(SingleFileCheckpoint.unetPrefix), vae: shapes(SingleFileCheckpoint.vaePrefix),
            text1: shapes(SDXLCheckpoint.text1Prefixes[0]), text2: text2.mapValues(\.shape), projection: projection.shape,
            heads: { _ in 1 })
        func folderConfig(_ name: String) throws -> JSON { try FileSystem.readJSON(folder + "/\(name)/config.json") }
        let unet = try folderConfig("unet")
        for key in ["block_out_channels", "layers_per_block", "transformer_layers_per_block", "down_block_types", "up_block_types",
                    "cross_attention_dim", "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
                    "use_linear_projection", "in_channels", "out_channels", "flip_sin_to_cos", "freq_shift"] {
            XCTAssertEqual(configs["unet"]?[key], unet[key], "unet \(key)")
        }
        let vae = try folderConfig("vae")
        for key in ["block_out_channels", "layers_per_block", "latent_channels", "in_channels", "out_channels", "scaling_factor",
                    "down_block_types", "up_block_types"] {
            XCTAssertEqual(configs["vae"]?[key], vae[key], "vae \(key)")
        }
        for name in ["text_encoder", "text_encoder_2"] {
            let text = try folderConfig(name)
            for key in ["hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings", "vocab_size", "hidden_act"] {
                XCTAssertEqual(configs[name]?[key], text[key], "\(name) \(key)")
            }
        }
        XCTAssertEqual(configs["text_encoder_2"]?["projection_dim"], try folderConfig("text_encoder_2")["projection_dim"])
        XCTAssertEqual(configs["text_encoder_2"]?["architectures"], try folderConfig("text_encoder_2")["architectures"])
        // SDXL base's constants where shapes say nothing: 1024 px, as diffusers' single-file default.
        XCTAssertEqual(configs["unet"]?["sample_size"]?.int, 128)
    }

    /// SDXL's real widths give its published head counts (stabilityai/stable-diffusion-xl-base-1.0
    /// configs: text_encoder 12, text_encoder_2 20, unet attention_head_dim [5, 10, 20]).
    func testHeadsOfSDXLWidths() {
        XCTAssertEqual(SDXLCheckpoint.heads(width: 768), 12)
        XCTAssertEqual(SDXLCheckpoint.heads(width: 1280), 20)
        XCTAssertEqual([320, 640, 1280].map { SDXLCheckpoint.heads(width: $0) }, [5, 10, 20])
        XCTAssertNil(SDXLCheckpoint.heads(width: 24))
    }

    /// The scheduler diffusers' single-file loader takes for any SDXL-layout file, and the
    /// note naming the flags that change what shapes cannot tell.
    func testBaseDefaultsAndTheirNote() {
        let s = SDXLCheckpoint.baseSchedulerConfig
        XCTAssertEqual(s["_class_name"]?.string, "EulerDiscreteScheduler")
        XCTAssertEqual(s["timestep_spacing"]?.string, "leading")
        XCTAssertEqual(s["prediction_type"]?.string, "epsilon")
        let note = SDXLCheckpoint.assumption(predictionType: nil)
        XCTAssertTrue(note.contains("--config DIR") && note.contains("SDXL-Turbo") && note.contains("--prediction-type"), note)
        XCTAssertFalse(SDXLCheckpoint.assumption(predictionType: "v_prediction").contains("--prediction-type"))
    }

    /// The inverse renames give back every tensor's name in the file (missing-tensor errors
    /// use them), for SDXL and for the SD 1.x and 2.x single files.
    func testCheckpointNamesInvertTheRenames() throws {
        let cases = [(single, folder), (TestFiles.fixture("tiny-sd-a.safetensors"), TestFiles.fixture("tiny-sd-a")),
                     (TestFiles.fixture("tiny-sd2.safetensors"), TestFiles.fixture("tiny-sd2-config"))]
        for (input, config) in cases {
            let model = try SingleFileCheckpoint.read(input, configFolder: config)
            var checked = 0
            for c in model.components {
                let name = try XCTUnwrap(c.sourceKey, c.name)
                for t in c.tensors {
                    XCTAssertEqual(name(t.key), t.entry.key, "\(input): \(c.name).\(t.key)")
                    checked += 1
                }
            }
            XCTAssertGreaterThan(checked, 300, input)
        }
    }

    /// A copy of the fixture without `drop` and with `add` (key → (dtype, shape), zero data).
    func rewritten(dropping drop: Set<String>, adding add: [String: (String, [Int])] = [:]) throws -> String {
        let file = try SafetensorsFile(path: single)
        var header: [String] = []
        var data: [UInt8] = []
        for e in file.entries where !drop.contains(e.key) {
            let bytes = UnsafeRawBufferPointer(start: file.file.base + e.range.lowerBound, count: e.range.count)
            header.append("\"\(e.key)\":{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":\(e.shape),\"data_offsets\":[\(data.count),\(data.count + bytes.count)]}")
            data += bytes
        }
        for (key, (dtype, shape)) in add {
            let count = shape.reduce(1, *) * 2
            header.append("\"\(key)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":[\(data.count),\(data.count + count)]}")
            data += [UInt8](repeating: 0, count: count)
        }
        let path = TestFiles.scratch(self) + "/edited.safetensors"
        TestFiles.write(safetensorsBytes(header: "{" + header.joined(separator: ",") + "}", data: data), to: path)
        return path
    }

    func assertRejected(_ input: String, config: String?, mentions expected: [String], file: StaticString = #filePath, line: UInt = #line) {
        let out = TestFiles.scratch(self) + "/model.pdm"
        XCTAssertThrowsError(try convert(input, config: config, out: out), file: file, line: line) { error in
            let message = "\(error)"
            for s in expected { XCTAssertTrue(message.contains(s), "\(s) not in: \(message)", file: file, line: line) }
            XCTAssertFalse(message.contains("\n"), "one line: \(message)", file: file, line: line)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing written", file: file, line: line)
        XCTAssertEqual(TestFiles.contents(of: (out as NSString).deletingLastPathComponent), [], "no temporary left", file: file, line: line)
    }

    func testPartialFilesNameWhatIsMissing() throws {
        let p = "conditioner.embedders.1.model."
        assertRejected(try rewritten(dropping: ["model.diffusion_model.label_emb.0.2.weight"]), config: folder,
                       mentions: ["add_embedding.linear_2.weight", "model.diffusion_model.label_emb.0.2.weight in the checkpoint"])
        assertRejected(try rewritten(dropping: [p + "text_projection"]), config: folder, mentions: [p + "text_projection"])
        assertRejected(try rewritten(dropping: [p + "transformer.resblocks.1.attn.in_proj_weight"]), config: folder,
                       mentions: ["text_encoder_2", "layers.1.self_attn.q_proj.weight", p + "transformer.resblocks.1.attn.in_proj_weight"])
        assertRejected(try rewritten(dropping: ["first_stage_model.decoder.up.0.block.1.conv2.weight"]), config: folder,
                       mentions: ["vae", "decoder.up_blocks.2.resnets.1.conv2.weight", "first_stage_model.decoder.up.0.block.1.conv2.weight"])
        assertRejected(try rewritten(dropping: ["conditioner.embedders.0.transformer.text_model.final_layer_norm.bias"]), config: folder,
                       mentions: ["conditioner.embedders.0.transformer.text_model.final_layer_norm.bias in the checkpoint"])
        let withoutText2 = Set(try SafetensorsFile(path: single).tensorKeys.filter { $0.hasPrefix(p) })
        assertRejected(try rewritten(dropping: withoutText2), config: folder, mentions: ["second text encoder", p])
        // Inference needs the added embedding to size the text_time embedding.
        assertRejected(try rewritten(dropping: ["model.diffusion_model.label_emb.0.0.weight"]), config: nil,
                       mentions: ["model.diffusion_model.label_emb.0.0.weight"])
        // The refiner's layout (OpenCLIP alone at embedders.0) is refused by name.
        assertRejected(try rewritten(dropping: [], adding: ["conditioner.embedders.0.model.text_projection": ("F16", [4, 4])]),
                       config: folder, mentions: ["refiner"])
    }

    func testTruncatedFileIsOneLineAndWritesNothing() throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: single))
        let path = TestFiles.scratch(self) + "/cut.safetensors"
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path))
        assertRejected(path, config: folder, mentions: ["cut.safetensors"])
    }
}
