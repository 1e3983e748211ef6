import Foundation
@testable import SDConverter
import SDFormat
import SDKernels
@testable import SDModels
import XCTest

/// TAESD (AutoencoderTiny) against diffusers on the tiny random TAESD made by
/// tools/make_taesd_goldens.py, and `convert --taesd` for both file layouts.
final class AutoencoderTinyTests: XCTestCase {
    static let golden = Fixtures.path("golden", "taesd")

    func model() throws -> AutoencoderTiny {
        let folder = Fixtures.path("tiny-taesd")
        let config = try AutoencoderTinyConfig(json: Fixtures.json(folder + "/config.json"))
        return try AutoencoderTiny(config: config, weights: SafetensorsFile(path: folder + "/diffusion_pytorch_model.safetensors"))
    }

    func testDecodeMatchesDiffusers() throws {
        let taesd = try model()
        XCTAssertTrue(taesd.hasEncoder)
        XCTAssertEqual(taesd.upsamplingFactor, 4)
        let latents = try NPYArray(path: Self.golden + "/decode-latents.npy")
        let expected = try NPYArray(path: Self.golden + "/decode-image.npy")
        let s = latents.shape
        for threads in [1, 2] {
            let image = taesd.decode(latents: latents.floats, batch: s[0], height: s[2], width: s[3], pool: ThreadPool(threads: threads))
            XCTAssertEqual(image.count, expected.floats.count)
            let error = relativeRMSError(image, expected.floats)
            XCTAssertLessThanOrEqual(error, modelRelativeRMSTolerance, "decode relative RMS \(error)")
        }
    }

    func testEncodeMatchesDiffusers() throws {
        let taesd = try model()
        let image = try NPYArray(path: Self.golden + "/encode-image.npy")
        let expected = try NPYArray(path: Self.golden + "/encode-latents.npy")
        let s = image.shape
        let latents = try XCTUnwrap(taesd.encode(image: image.floats, batch: s[0], height: s[2], width: s[3], pool: ThreadPool(threads: 2)))
        XCTAssertEqual(latents.count, expected.floats.count)
        let error = relativeRMSError(latents, expected.floats)
        XCTAssertLessThanOrEqual(error, modelRelativeRMSTolerance, "encode relative RMS \(error)")
    }

    func convert(taesd: String, out: String) throws -> ModelFileReader {
        var options = ConversionOptions(weights: .fp32)
        options.taesd = taesd
        _ = try Converter.convert(input: Fixtures.path("tiny-sd-b"), output: out, options: options)
        return try ModelFileReader(path: out)
    }

    func scratch() -> String {
        let dir = NSTemporaryDirectory() + "pocketsd-taesd-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// The diffusers folder and the original files (renamed, config read off the keys) store
    /// the same component, which decodes as diffusers does.
    func testConvertStoresBothLayoutsIdentically() throws {
        let dir = scratch()
        let a = try convert(taesd: Fixtures.path("tiny-taesd"), out: dir + "/a.pdm")
        let b = try convert(taesd: Fixtures.path("tiny-taesd-original", "taesd_decoder.safetensors"), out: dir + "/b.pdm")
        let c = try convert(taesd: Fixtures.path("tiny-taesd-original"), out: dir + "/c.pdm")
        let keys = a.tensorKeys.filter { $0.hasPrefix("taesd.") }
        XCTAssertEqual(keys.count, 60)
        XCTAssertTrue(keys.contains("taesd.encoder.layers.0.weight"))
        for other in [b, c] {
            XCTAssertEqual(other.tensorKeys.filter { $0.hasPrefix("taesd.") }.sorted(), keys.sorted())
            for k in keys { XCTAssertEqual(other.tensor(k)?.floats(), a.tensor(k)?.floats(), k) }
            let config = try AutoencoderTinyConfig(json: other.config("taesd"))
            XCTAssertEqual(config, try AutoencoderTinyConfig(json: a.config("taesd")))
        }
        let taesd = try AutoencoderTiny(config: AutoencoderTinyConfig(json: b.config("taesd")), weights: b.component("taesd"))
        let latents = try NPYArray(path: Self.golden + "/decode-latents.npy")
        let s = latents.shape
        let image = taesd.decode(latents: latents.floats, batch: s[0], height: s[2], width: s[3], pool: ThreadPool(threads: 2))
        XCTAssertLessThanOrEqual(relativeRMSError(image, try NPYArray(path: Self.golden + "/decode-image.npy").floats), modelRelativeRMSTolerance)
    }

    func assertRejected(_ taesd: String, _ fragment: String, line: UInt = #line) {
        let dir = scratch()
        XCTAssertThrowsError(try convert(taesd: taesd, out: dir + "/out.pdm"), line: line) { error in
            let text = "\(error)"
            XCTAssertTrue(error is FormatError, text, line: line)
            XCTAssertTrue(text.contains(fragment), "'\(text)' lacks '\(fragment)'", line: line)
            XCTAssertFalse(text.contains("\n"), text, line: line)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out.pdm"), "nothing written", line: line)
    }

    func testBadTAESDIsRejected() throws {
        let dir = scratch()
        let source = Fixtures.path("tiny-taesd")
        let config = try String(contentsOfFile: source + "/config.json", encoding: .utf8)
        func folder(_ name: String, _ edit: (String) -> String) throws -> String {
            let path = dir + "/" + name
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try edit(config).write(toFile: path + "/config.json", atomically: true, encoding: .utf8)
            try FileManager.default.copyItem(atPath: source + "/diffusion_pytorch_model.safetensors",
                                             toPath: path + "/diffusion_pytorch_model.safetensors")
            return path
        }
        // Weights of 16 channels under a config that says 32.
        let wide = try folder("wide") { $0.replacingOccurrences(of: "\"decoder_block_out_channels\": [\n    16,\n    16,\n    16\n  ]",
                                                                  with: "\"decoder_block_out_channels\": [32, 32, 32]") }
        assertRejected(wide, "decoder.layers.0.weight")
        // A TAESD for a 16-channel latent space (SD3/FLUX's) on a 4-channel UNet.
        let sd3 = try folder("sd3") { $0.replacingOccurrences(of: "\"latent_channels\": 4", with: "\"latent_channels\": 16") }
        assertRejected(sd3, "16 latent channels but the UNet has 4")
        // Two levels (2× up-sampling) where the VAE has three (4×).
        let shallow = try folder("shallow") { $0.replacingOccurrences(of: "\"num_decoder_blocks\": [\n    2,\n    1,\n    1\n  ]",
                                                                     with: "\"num_decoder_blocks\": [2, 1]")
                .replacingOccurrences(of: "\"decoder_block_out_channels\": [\n    16,\n    16,\n    16\n  ]",
                                      with: "\"decoder_block_out_channels\": [16, 16]") }
        assertRejected(shallow, "up-samples 2×")
        assertRejected(dir, "not a TAESD folder")
        assertRejected(Fixtures.path("tiny-taesd-original", "taesd_encoder.safetensors"), "not a TAESD decoder")
        assertRejected(dir + "/missing", "no such file")
    }
}
