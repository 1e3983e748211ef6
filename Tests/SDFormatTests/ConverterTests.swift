import Foundation
import SDConverter
import SDFormat
import XCTest

final class ConverterTests: XCTestCase {
    let folderA = TestFiles.fixture("tiny-sd-a")
    let singleA = TestFiles.fixture("tiny-sd-a.safetensors")

    func convert(_ input: String, _ mode: WeightMode, config: String? = nil) throws -> (ModelFileReader, ConversionReport) {
        let out = TestFiles.scratch(self) + "/model.pdm"
        let report = try Converter.convert(input: input, output: out, options: ConversionOptions(weights: mode, configFolder: config))
        return (try ModelFileReader(path: out), report)
    }

    /// The source tensors of a diffusers folder, keyed as in the model file.
    func sourceTensors(_ folder: String) throws -> [String: TensorView] {
        var result: [String: TensorView] = [:]
        for (component, base) in [("text_encoder", "model"), ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")] {
            var path = "\(folder)/\(component)/\(base).safetensors"
            if !FileManager.default.fileExists(atPath: path) { path = "\(folder)/\(component)/\(base).fp16.safetensors" }
            let st = try SafetensorsFile(path: path)
            sources.append(st)
            for key in st.tensorKeys where st.tensor(key)!.dtype.isFloat { result["\(component).\(key)"] = st.tensor(key)! }
        }
        return result
    }
    var sources: [SafetensorsFile] = []

    func testFP32RoundTripIsExact() throws {
        let (file, report) = try convert(folderA, .fp32)
        let source = try sourceTensors(folderA)
        XCTAssertEqual(Set(file.tensorKeys), Set(source.keys))
        for (key, src) in source {
            let t = try XCTUnwrap(file.tensor(key))
            XCTAssertEqual(t.shape, src.shape, key)
            XCTAssertEqual(t.dtype, .f32)
            XCTAssertEqual(t.floats(), src.floats(), key)
        }
        XCTAssertEqual(file.verify(), [])
        XCTAssertEqual(report.components.map(\.name), ["text_encoder", "unet", "vae"])
        XCTAssertEqual(file.strings("tokenizer.vocab")?.count, 49408)
        XCTAssertEqual(try file.config("unet")["block_out_channels"], .array([.number(32), .number(64)]))
        XCTAssertEqual(try file.config("scheduler")["_class_name"]?.string, "PNDMScheduler")
    }

    /// fp16: relative error of one half-precision rounding (2^-11) per element.
    static let fp16Bound: Float = 1.0 / 2048
    /// int8 per row: at most half a quantisation step, scale = max|row| / 127.
    func testFP16AndInt8StayWithinTheirBounds() throws {
        let source = try sourceTensors(folderA)
        let (half, _) = try convert(folderA, .fp16)
        let (int8, report) = try convert(folderA, .int8)
        var quantized = 0
        for (key, src) in source {
            let s = src.floats()
            let h = try XCTUnwrap(half.tensor(key)).floats()
            for (a, b) in zip(h, s) { XCTAssertLessThanOrEqual(abs(a - b), abs(b) * Self.fp16Bound + 1e-7, key) }
            let q = try XCTUnwrap(int8.tensor(key))
            if q.dtype == .q8 {
                quantized += 1
                let rows = q.shape[0], cols = s.count / rows
                let v = q.floats()
                for r in 0..<rows {
                    let maxAbs = s[(r * cols)..<((r + 1) * cols)].map(abs).max()!
                    for k in 0..<cols {
                        XCTAssertLessThanOrEqual(abs(v[r * cols + k] - s[r * cols + k]), maxAbs / 127 * 0.5001 + 1e-7, key)
                    }
                }
            } else {
                XCTAssertEqual(q.dtype, .f16, key)
                XCTAssertFalse(key.hasSuffix(".weight") && q.shape.count >= 2 && q.shape[0] >= 16 && q.elementCount / q.shape[0] >= 16 && !key.contains("embedding"), "\(key) should be int8")
            }
        }
        XCTAssertGreaterThan(quantized, 100)
        for c in report.components {
            XCTAssertLessThanOrEqual(c.maxRelativeError, 0.5 / 127 + 1e-6, c.name)
            XCTAssertGreaterThan(c.rmsRelativeError, 0, c.name)
        }
    }

    func testSingleFileGivesTheSameTensorsAsTheFolder() throws {
        let (folder, _) = try convert(folderA, .fp32)
        let (single, report) = try convert(singleA, .fp32, config: folderA)
        XCTAssertEqual(folder.tensorKeys, single.tensorKeys, "same keys in the same execution order")
        for key in folder.tensorKeys {
            XCTAssertEqual(folder.tensor(key)!.shape, single.tensor(key)!.shape, key)
            XCTAssertEqual(folder.tensor(key)!.floats(), single.tensor(key)!.floats(), key)
        }
        XCTAssertTrue(report.unusedKeys.contains("model_ema.decay"), "\(report.unusedKeys)")
        XCTAssertTrue(report.unusedKeys.contains("alphas_cumprod"))
        for name in ["unet", "vae", "text_encoder", "scheduler"] {
            XCTAssertEqual(try folder.config(name), try single.config(name), name)
        }
    }

    /// transformers ≥ 5 saves a tokenizer as one tokenizer.json instead of vocab.json and
    /// merges.txt: both must give the same tokenizer.
    func testTokenizerJSONFolder() throws {
        let dir = TestFiles.scratch(self) + "/model"
        try FileManager.default.copyItem(atPath: folderA, toPath: dir)
        let tok = dir + "/tokenizer"
        let vocab = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tok + "/vocab.json")))
        // Split bytes, not Characters: a merge may begin with a combining mark.
        let merges = try Data(contentsOf: URL(fileURLWithPath: tok + "/merges.txt")).split(separator: 0x0A)
            .map { String(decoding: $0, as: UTF8.self) }.filter { !$0.hasPrefix("#version") }
            .map { $0.split(separator: " ", omittingEmptySubsequences: false).map(String.init) }
        let json: [String: Any] = ["version": "1.0", "model": ["type": "BPE", "vocab": vocab, "merges": merges]]
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: tok + "/tokenizer.json"))
        try FileManager.default.removeItem(atPath: tok + "/vocab.json")
        try FileManager.default.removeItem(atPath: tok + "/merges.txt")
        let (fromJSON, report) = try convert(dir, .fp16)
        let (fromFiles, _) = try convert(folderA, .fp16)
        XCTAssertEqual(report.tokenizerSource, tok)
        for key in ["tokenizer.vocab", "tokenizer.merges", "tokenizer.pad_token_id", "tokenizer.eos_token_id"] {
            XCTAssertTrue(fromJSON[metadata: key] == fromFiles[metadata: key], key)
        }
        XCTAssertEqual(fromJSON.strings("tokenizer.merges")?.count, 48894)
    }

    func testSingleFileConfigInference() throws {
        // The tiny text encoder's head count cannot be inferred (SD's CLIP has 64-wide heads).
        XCTAssertThrowsError(try convert(singleA, .fp16)) { error in
            XCTAssertTrue("\(error)".contains("--config"), "\(error)")
        }
    }

    func testExecutionOrderAndComponentAlignment() throws {
        let (file, _) = try convert(folderA, .int8)
        XCTAssertEqual(file.components.map(\.name), ["text_encoder", "unet", "vae"])
        for c in file.components { XCTAssertEqual(c.range.lowerBound % ModelFile.componentAlignment, 0, c.name) }
        let unet = file.tensorKeys.filter { $0.hasPrefix("unet.") }
        func position(_ prefix: String) -> Int { unet.firstIndex { $0.hasPrefix(prefix) }! }
        XCTAssertLessThan(position("unet.time_embedding."), position("unet.conv_in."))
        XCTAssertLessThan(position("unet.conv_in."), position("unet.down_blocks.0."))
        XCTAssertLessThan(position("unet.down_blocks.0.resnets.0."), position("unet.down_blocks.0.attentions.0."))
        XCTAssertLessThan(position("unet.down_blocks.0.attentions.0."), position("unet.down_blocks.0.resnets.1."))
        XCTAssertLessThan(position("unet.down_blocks.1."), position("unet.mid_block."))
        XCTAssertLessThan(position("unet.mid_block."), position("unet.up_blocks.0."))
        XCTAssertLessThan(position("unet.up_blocks.1."), position("unet.conv_out."))
        let vae = file.tensorKeys.filter { $0.hasPrefix("vae.") }
        XCTAssertTrue(vae.first!.hasPrefix("vae.post_quant_conv."), vae.first!)
        XCTAssertTrue(vae.last!.hasPrefix("vae.encoder.") || vae.last!.hasPrefix("vae.quant_conv."), "the encoder is not needed for text-to-image: last")
    }
}
