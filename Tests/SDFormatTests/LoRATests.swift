import Foundation
@testable import SDConverter
import SDFormat
import XCTest

/// `convert --lora`: fused weights against diffusers' `load_lora_weights` + `fuse_lora`
/// (goldens by tools/make_lora_goldens.py on tiny-sd-b, tools/make_sdxl_lora_goldens.py on
/// tiny-sdxl), and the LoRA error paths.
final class LoRATests: XCTestCase {
    let base = TestFiles.fixture("tiny-sd-b")
    let loraDir = TestFiles.fixture("lora")
    let sdxl = TestFiles.fixture("tiny-sdxl")
    let sdxlLoRADir = TestFiles.fixture("lora-sdxl")

    /// fp32 products summed in a different order than torch's (B·A, then W + s·ΔW): relative
    /// to the tensor's largest weight, a few float32 ulps (measured: at most 2.3e-7).
    static let fusedTolerance: Float = 1e-6

    func convert(_ loras: [LoRASpec], input: String? = nil, config: String? = nil, out: String? = nil) throws -> (ModelFileReader, ConversionReport) {
        let path = out ?? TestFiles.scratch(self) + "/model.pdm"
        var options = ConversionOptions(weights: .fp32)
        options.loras = loras
        options.configFolder = config
        let report = try Converter.convert(input: input ?? base, output: path, options: options)
        return (try ModelFileReader(path: path), report)
    }

    func testFusedTensorsMatchDiffusersInBothFormatsAtTwoScales() throws {
        let cases = try XCTUnwrap(JSON(parsing: String(contentsOfFile: loraDir + "/cases.json", encoding: .utf8))["cases"]?.array)
        XCTAssertEqual(cases.count, 4)
        for c in cases {
            let name = c["name"]!.string!, scale = Float(c["scale"]!.double!)
            let (file, report) = try convert([LoRASpec(path: loraDir + "/" + c["lora"]!.string!, scale: scale)])
            let golden = try SafetensorsFile(path: loraDir + "/" + c["fused"]!.string!)
            XCTAssertEqual(golden.entries.count, c["changed_tensors"]!.int!)
            XCTAssertEqual(report.loras.first?.mergedTensors, golden.entries.count, name)
            XCTAssertEqual(report.loras.first?.unmatchedKeys, [], name)
            let worst = try worstError(file, golden)
            print("\(name): fused tensors differ from diffusers by at most \(worst) of max|w|")
            XCTAssertLessThanOrEqual(worst, Self.fusedTolerance, name)
            XCTAssertEqual(file.strings("general.loras"), ["\(c["lora"]!.string!):\(scale)"])
            // A tensor no LoRA touches is copied as it was.
            // (The file must outlive the view: its mapping goes with it.)
            let unet = try SafetensorsFile(path: base + "/unet/diffusion_pytorch_model.safetensors")
            let conv = unet.tensor("conv_in.weight")!.floats()
            XCTAssertEqual(file.tensor("unet.conv_in.weight")?.floats(), conv)
        }
    }

    /// Largest |ours − diffusers| / max|w| over the golden's sampled rows of every changed tensor
    /// (`sampledRows` of a tensor with that many rows: 0, n/2 and n−1 for SD 1.x, n−1 for SDXL).
    func worstError(_ file: ModelFileReader, _ golden: SafetensorsFile,
                    sampledRows: (Int) -> [Int] = { Array(Set([0, $0 / 2, $0 - 1])).sorted() }) throws -> Float {
        var worst: Float = 0
        for e in golden.entries {
            let t = try XCTUnwrap(file.tensor(e.key), e.key).floats()
            let rows = try XCTUnwrap(file.entry(e.key)).shape[0]
            let cols = t.count / rows
            let expected = golden.tensor(e.key)!.floats()
            let sampled = sampledRows(rows)
            XCTAssertEqual(expected.count, sampled.count * cols, e.key)
            let maxAbs = t.map(abs).max() ?? 1
            for (i, r) in sampled.enumerated() {
                for k in 0..<cols { worst = max(worst, abs(t[r * cols + k] - expected[i * cols + k]) / maxAbs) }
            }
        }
        return worst
    }

    /// PEFT's lora_alpha from the header's lora_adapter_metadata: the peft matrices with alpha 2
    /// fuse to what diffusers fuses for the kohya file (same matrices, alpha 2).
    func testPEFTAlphaFromMetadata() throws {
        let (file, report) = try convert([LoRASpec(path: loraDir + "/peft-alpha2.safetensors", scale: 1.25)])
        XCTAssertEqual(report.loras.first?.mergedTensors, 124)
        let worst = try worstError(file, SafetensorsFile(path: loraDir + "/fused-kohya-1.25.safetensors"))
        XCTAssertLessThanOrEqual(worst, Self.fusedTolerance)
    }

    func testScaleZeroLeavesTheModelAsItWas() throws {
        let (plain, _) = try convert([])
        let (zero, report) = try convert([LoRASpec(path: loraDir + "/kohya.safetensors", scale: 0)])
        XCTAssertEqual(report.loras.first?.mergedTensors, 124)
        for key in ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                    "text_encoder.text_model.encoder.layers.1.mlp.fc1.weight", "unet.up_blocks.1.resnets.0.conv1.weight"] {
            XCTAssertEqual(zero.tensor(key)?.floats(), plain.tensor(key)?.floats(), key)
        }
    }

    func testArgumentParsing() {
        XCTAssertEqual(LoRASpec(argument: "a.safetensors"), LoRASpec(path: "a.safetensors", scale: 1))
        XCTAssertEqual(LoRASpec(argument: "dir/a.safetensors:0.75"), LoRASpec(path: "dir/a.safetensors", scale: 0.75))
        XCTAssertEqual(LoRASpec(argument: "x:y/a.safetensors"), LoRASpec(path: "x:y/a.safetensors", scale: 1))
        XCTAssertEqual(LoRASpec(argument: "a.safetensors:-0.5"), LoRASpec(path: "a.safetensors", scale: -0.5))
        XCTAssertNil(LoRASpec(argument: "a.safetensors:nan"))
        XCTAssertNil(LoRASpec(argument: "a.safetensors:inf"))
        XCTAssertNil(LoRASpec(argument: ":0.5"))
        XCTAssertNil(LoRASpec(argument: ""))
    }

    /// Each bad LoRA is a one-line FormatError naming the file, and no output file appears.
    func assertRejected(_ lora: String, input: String? = nil, _ fragment: String, line: UInt = #line) {
        let dir = TestFiles.scratch(self)
        XCTAssertThrowsError(try convert([LoRASpec(path: lora)], input: input, out: dir + "/out.pdm"), line: line) { error in
            let text = "\(error)"
            XCTAssertTrue(error is FormatError, text, line: line)
            XCTAssertTrue(text.contains(fragment), "'\(text)' lacks '\(fragment)'", line: line)
            XCTAssertFalse(text.contains("\n"), text, line: line)
        }
        XCTAssertEqual(TestFiles.contents(of: dir), [], "nothing written", line: line)
    }

    func testLoRAForAnotherArchitectureIsRejected() {
        // tiny-sd-a projects attention with 1×1 convolutions, tiny-sd-b's LoRA with linear layers.
        assertRejected(loraDir + "/kohya.safetensors", input: TestFiles.fixture("tiny-sd-a"), "another architecture")
        // SDXL's two text encoders and LDM-named UNet blocks match nothing here.
        let dir = TestFiles.scratch(self)
        let header = #"{"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight":{"dtype":"F32","shape":[2,1],"data_offsets":[8,16]}}"#
        TestFiles.write(safetensorsBytes(header: header, data: floatBytes([1, 2, 3, 4])), to: dir + "/sdxl.safetensors")
        assertRejected(dir + "/sdxl.safetensors", "no LoRA weight matches")
        // A file that is no LoRA at all.
        assertRejected(TestFiles.fixture("tiny-taesd/diffusion_pytorch_model.safetensors"), "no LoRA weight matches")
    }

    func testTruncatedLoRAIsRejected() throws {
        let dir = TestFiles.scratch(self)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: loraDir + "/peft.safetensors"))
        TestFiles.write(Array(bytes.prefix(bytes.count - 1000)), to: dir + "/cut.safetensors")
        assertRejected(dir + "/cut.safetensors", "truncated")
        // Cut so that one matrix of a pair is missing from the header.
        let header = #"{"lora_unet_conv_in.lora_down.weight":{"dtype":"F32","shape":[1,36],"data_offsets":[0,144]}}"#
        TestFiles.write(safetensorsBytes(header: header, data: floatBytes([Float](repeating: 0.5, count: 36))), to: dir + "/half.safetensors")
        assertRejected(dir + "/half.safetensors", "no up (B) matrix")
    }

    func testLoRAWithNaNIsRejected() throws {
        let dir = TestFiles.scratch(self)
        let peft = try SafetensorsFile(path: loraDir + "/peft.safetensors")
        let victim = try XCTUnwrap(peft.entries.first { $0.key.hasSuffix("lora_B.weight") && $0.dtype == .f32 })
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: loraDir + "/peft.safetensors")))
        withUnsafeBytes(of: Float.nan) { nan in for i in 0..<4 { bytes[victim.range.lowerBound + 8 + i] = nan[i] } }
        TestFiles.write(bytes, to: dir + "/nan.safetensors")
        assertRejected(dir + "/nan.safetensors", "NaN")
    }

    func testUnmatchedKeysAreListedNotFatal() throws {
        let dir = TestFiles.scratch(self)
        // conv_in's LoRA (a real 3×3 kohya conv LoRA) plus a module the model does not have.
        let header = #"{"lora_unet_conv_in.lora_down.weight":{"dtype":"F32","shape":[1,4,3,3],"data_offsets":[0,144]},"lora_unet_conv_in.lora_up.weight":{"dtype":"F32","shape":[32,1,1,1],"data_offsets":[144,272]},"lora_unet_conv_in.alpha":{"dtype":"F32","shape":[],"data_offsets":[272,276]},"lora_unet_no_such_block.lora_down.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[276,284]},"lora_unet_no_such_block.lora_up.weight":{"dtype":"F32","shape":[2,1],"data_offsets":[284,292]}}"#
        let down = (0..<36).map { Float($0) / 36 }, up = (0..<32).map { Float($0 % 5) - 2 }
        TestFiles.write(safetensorsBytes(header: header, data: floatBytes(down + up + [0.5] + [1, 1, 1, 1])), to: dir + "/conv.safetensors")
        let (file, report) = try convert([LoRASpec(path: dir + "/conv.safetensors", scale: 2)])
        XCTAssertEqual(report.loras.first?.mergedTensors, 1)
        XCTAssertEqual(report.loras.first?.unmatchedKeys, ["lora_unet_no_such_block.lora_down.weight", "lora_unet_no_such_block.lora_up.weight"])
        // W += scale · alpha/rank · up · down, per output channel o and column k.
        let unet = try SafetensorsFile(path: base + "/unet/diffusion_pytorch_model.safetensors")
        let w0 = unet.tensor("conv_in.weight")!.floats()
        let w = try XCTUnwrap(file.tensor("unet.conv_in.weight")).floats()
        for o in 0..<32 {
            for k in 0..<36 {
                XCTAssertEqual(w[o * 36 + k], w0[o * 36 + k] + 2 * 0.5 * up[o] * down[k], accuracy: 1e-6)
            }
        }
    }

    // MARK: SDXL

    /// Both formats (PEFT, and kohya's with original-layout UNet names and lora_te1_/lora_te2_)
    /// fuse to diffusers' weights in the UNet and both text encoders, at both scales.
    func testSDXLFusedTensorsMatchDiffusersInBothFormatsAtTwoScales() throws {
        let cases = try XCTUnwrap(JSON(parsing: String(contentsOfFile: sdxlLoRADir + "/cases.json", encoding: .utf8))["cases"]?.array)
        XCTAssertEqual(cases.count, 2)
        for c in cases {
            let scale = Float(c["scale"]!.double!)
            let golden = try SafetensorsFile(path: sdxlLoRADir + "/" + c["fused"]!.string!)
            XCTAssertEqual(golden.entries.count, c["changed_tensors"]!.int!)
            for component in ["unet.", "text_encoder.", "text_encoder_2."] {
                XCTAssertTrue(golden.entries.contains { $0.key.hasPrefix(component) }, component)
            }
            for format in ["peft", "kohya"] {
                let name = "\(format) at \(scale)"
                let (file, report) = try convert([LoRASpec(path: sdxlLoRADir + "/\(format).safetensors", scale: scale)], input: sdxl)
                XCTAssertEqual(report.loras.first?.mergedTensors, golden.entries.count, name)
                XCTAssertEqual(report.loras.first?.unmatchedKeys, [], name)
                let worst = try worstError(file, golden, sampledRows: { [$0 - 1] })
                print("SDXL \(name): fused tensors differ from diffusers by at most \(worst) of max|w|")
                XCTAssertLessThanOrEqual(worst, Self.fusedTolerance, name)
            }
        }
    }

    /// The targets are the converted (diffusers) keys, so a single-file SDXL checkpoint (same
    /// weights as tiny-sdxl) takes the LoRA as the folder does.
    func testSDXLSingleFileCheckpointTakesTheSameLoRA() throws {
        let (file, report) = try convert([LoRASpec(path: sdxlLoRADir + "/kohya.safetensors", scale: 1.25)],
                                         input: TestFiles.fixture("tiny-sdxl-single.safetensors"), config: sdxl)
        let golden = try SafetensorsFile(path: sdxlLoRADir + "/fused-1.25.safetensors")
        XCTAssertEqual(report.loras.first?.mergedTensors, golden.entries.count)
        XCTAssertLessThanOrEqual(try worstError(file, golden, sampledRows: { [$0 - 1] }), Self.fusedTolerance)
    }

    /// kohya SDXL keys may also name UNet modules as diffusers does; both names of one module
    /// (down_blocks.1.attentions.0 is input_blocks.4.1) land on the same weight and add up.
    func testSDXLKohyaReadsBothUNetNamings() throws {
        let dir = TestFiles.scratch(self)
        let header = #"{"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight":{"dtype":"F32","shape":[1,32],"data_offsets":[0,128]},"lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight":{"dtype":"F32","shape":[32,1],"data_offsets":[128,256]},"lora_unet_input_blocks_4_1_proj_in.lora_down.weight":{"dtype":"F32","shape":[1,32],"data_offsets":[256,384]},"lora_unet_input_blocks_4_1_proj_in.lora_up.weight":{"dtype":"F32","shape":[32,1],"data_offsets":[384,512]},"lora_unet_input_blocks_99_1_proj_in.lora_down.weight":{"dtype":"F32","shape":[1,32],"data_offsets":[512,640]},"lora_unet_input_blocks_99_1_proj_in.lora_up.weight":{"dtype":"F32","shape":[32,1],"data_offsets":[640,768]}}"#
        let d1 = (0..<32).map { Float($0) / 32 }, u1 = (0..<32).map { Float($0 % 3) - 1 }
        let d2 = [Float](repeating: 0.25, count: 32), u2 = (0..<32).map { Float($0) / 32 }
        TestFiles.write(safetensorsBytes(header: header, data: floatBytes(d1 + u1 + d2 + u2 + d1 + u1)), to: dir + "/both.safetensors")
        let (plain, _) = try convert([], input: sdxl)
        let (file, report) = try convert([LoRASpec(path: dir + "/both.safetensors")], input: sdxl)
        XCTAssertEqual(report.loras.first?.mergedTensors, 2)
        XCTAssertEqual(report.loras.first?.unmatchedKeys, ["lora_unet_input_blocks_99_1_proj_in.lora_down.weight",
                                                           "lora_unet_input_blocks_99_1_proj_in.lora_up.weight"])
        let key = "unet.down_blocks.1.attentions.0.proj_in.weight"
        let w0 = try XCTUnwrap(plain.tensor(key)).floats(), w = try XCTUnwrap(file.tensor(key)).floats()
        // No alpha: alpha = rank = 1, so W += up · down for each pair.
        for o in 0..<32 {
            for k in 0..<32 {
                XCTAssertEqual(w[o * 32 + k], w0[o * 32 + k] + u1[o] * d1[k] + u2[o] * d2[k], accuracy: 1e-6)
            }
        }
    }

    /// An SD 1.x LoRA on SDXL, and an SDXL LoRA on SD 1.x, fail whole: one line, nothing written.
    func testLoRAsAcrossSD1AndSDXLAreRejected() {
        assertRejected(loraDir + "/kohya.safetensors", input: sdxl, "another architecture")
        assertRejected(loraDir + "/peft.safetensors", input: sdxl, "another architecture")
        // kohya's SDXL names (lora_te1_/lora_te2_, original-layout UNet) are not offered for SD 1.x.
        assertRejected(sdxlLoRADir + "/kohya.safetensors", "no LoRA weight matches")
        assertRejected(sdxlLoRADir + "/peft.safetensors", "another architecture")
    }
}
