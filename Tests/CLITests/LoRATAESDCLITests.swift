import Foundation
import XCTest

/// `convert --lora/--taesd`, `info`, `generate --vae taesd --preview` through the binary:
/// they run, and bad input is a one-line error that leaves nothing behind.
final class LoRATAESDCLITests: XCTestCase {
    static let scratch = NSTemporaryDirectory() + "pocketsd-lora-taesd-cli-tests-\(getpid())"
    static let fixtures = CLITests.fixtures

    override class func setUp() {
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    func testConvertWithLoRAAndTAESDThenGenerate() throws {
        let model = Self.scratch + "/b.pdm"
        let convert = try CLITests.run(["convert", Self.fixtures + "/tiny-sd-b", "-o", model, "--weights", "fp16",
                                        "--lora", Self.fixtures + "/lora/kohya.safetensors:0.5",
                                        "--lora", Self.fixtures + "/lora/peft.safetensors",
                                        "--taesd", Self.fixtures + "/tiny-taesd-original/taesd_decoder.safetensors", "--json"])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        XCTAssertTrue(convert.stdout.contains("\"merged_tensors\":124"), convert.stdout)
        let info = try CLITests.run(["info", "-m", model])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.stdout.contains("loras merged: kohya.safetensors (scale 0.5), peft.safetensors (scale 1.0)"), info.stdout)
        XCTAssertTrue(info.stdout.contains("taesd"), info.stdout)
        let infoJSON = try CLITests.run(["info", "-m", model, "--json"])
        XCTAssertTrue(infoJSON.stdout.contains("\"loras\":[{\"name\":\"kohya.safetensors\",\"scale\":0.5}"), infoJSON.stdout)

        let output = Self.scratch + "/taesd.png", preview = Self.scratch + "/preview.png"
        let run = try CLITests.run(["generate", "-m", model, "-p", "a boat", "--width", "64", "--height", "64", "--steps", "2",
                                    "--seed", "1", "--vae", "taesd", "--preview", preview, "-o", output])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: output))
        XCTAssertTrue(FileManager.default.fileExists(atPath: preview))

        // bench's kernel table adds TAESD's convolutions (the fixture's 16 channels) at the image size and half.
        let bench = try CLITests.run(["bench", "-m", model, "--width", "64", "--height", "64", "--repeats", "1",
                                      "--skip-phases", "--json"])
        XCTAssertEqual(bench.status, 0, bench.stderr)
        let kernels = (try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any])?["kernels"]
            as? [[String: Any]] ?? []
        let taesd = kernels.filter { $0["name"] as? String == "TAESD conv3x3" }.compactMap { $0["shape"] as? String }
        XCTAssertEqual(taesd, ["16→16, 64×64", "16→16, 32×32"])
    }

    /// SDXL: kohya (original-layout UNet names, lora_te1_/lora_te2_) and PEFT LoRAs merged into
    /// the UNet and both text encoders; an SD 1.x LoRA is refused in one line.
    func testSDXLConvertWithLoRAs() throws {
        let model = Self.scratch + "/xl.pdm"
        let convert = try CLITests.run(["convert", Self.fixtures + "/tiny-sdxl", "-o", model, "--weights", "fp16",
                                        "--lora", Self.fixtures + "/lora-sdxl/kohya.safetensors:0.5",
                                        "--lora", Self.fixtures + "/lora-sdxl/peft.safetensors", "--json"])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        XCTAssertTrue(convert.stdout.contains("\"merged_tensors\":180"), convert.stdout)
        XCTAssertTrue(convert.stdout.contains("\"unmatched_keys\":[]"), convert.stdout)
        let info = try CLITests.run(["info", "-m", model])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.stdout.contains("loras merged: kohya.safetensors (scale 0.5), peft.safetensors (scale 1.0)"), info.stdout)

        let out = Self.scratch + "/xl-sd1-lora.pdm"
        try CLITests.assertFails(["convert", Self.fixtures + "/tiny-sdxl", "-o", out, "--lora", Self.fixtures + "/lora/kohya.safetensors"],
                                 status: 1, "another architecture")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    func testBadInput() throws {
        let plain = Self.scratch + "/a.pdm"
        XCTAssertEqual(try CLITests.run(["convert", Self.fixtures + "/tiny-sd-a", "-o", plain, "--weights", "fp16"]).status, 0)
        let output = Self.scratch + "/none.png"
        try CLITests.assertFails(["generate", "-m", plain, "-p", "x", "--width", "32", "--height", "32", "--steps", "1",
                                  "--vae", "taesd", "--preview", Self.scratch + "/p.png", "-o", output], status: 2, "no TAESD")
        try CLITests.assertFails(["generate", "-m", plain, "-p", "x", "--vae", "banana", "-o", output], status: 2, "--vae must be one of full, taesd")
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.scratch + "/p.png"))

        let out = Self.scratch + "/bad.pdm"
        try CLITests.assertFails(["convert", Self.fixtures + "/tiny-sd-a", "-o", out, "--lora", Self.fixtures + "/lora/kohya.safetensors"],
                                 status: 1, "another architecture")
        try CLITests.assertFails(["convert", Self.fixtures + "/tiny-sd-a", "-o", out, "--lora", "x.safetensors:nan"], status: 2, "--lora")
        try CLITests.assertFails(["convert", Self.fixtures + "/tiny-sd-a", "-o", out, "--taesd", Self.fixtures + "/tiny-taesd"],
                                 status: 1, "up-samples 4×")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
