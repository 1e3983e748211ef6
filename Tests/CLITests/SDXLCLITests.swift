import Foundation
import XCTest

/// SDXL through the binary: the diffusers folder converts, --original-size, --crops-coords
/// and --target-size reach the UNet, and bad values are one-line usage errors.
final class SDXLCLITests: XCTestCase {
    static let scratch = NSTemporaryDirectory() + "pocketsd-sdxl-cli-tests-\(getpid())"
    static var model: String { scratch + "/tiny-sdxl.pdm" }

    override class func setUp() {
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        _ = try? CLITests.run(["convert", CLITests.fixtures + "/tiny-sdxl", "-o", model, "--weights", "fp16"])
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    func generate(_ output: String, _ extra: [String]) -> [String] {
        ["generate", "-m", Self.model, "-p", "a cat", "--width", "32", "--height", "48", "--seed", "3", "--steps", "2",
         "--scheduler", "euler", "-o", output, "--save-latents", output + ".npy"] + extra
    }

    func testSizeConditioningFlags() throws {
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.model), "setUp converted the model")
        let plain = Self.scratch + "/plain.png", sized = Self.scratch + "/sized.png", same = Self.scratch + "/same.png"
        for (output, extra) in [(plain, []), (sized, ["--original-size", "1024,768", "--crops-coords", "16,8", "--target-size", "64x64"]),
                                (same, ["--original-size", "32,48", "--target-size", "32, 48", "--crops-coords", "0,0"])] {
            let r = try CLITests.run(generate(output, extra))
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let a = try Data(contentsOf: URL(fileURLWithPath: plain + ".npy"))
        XCTAssertEqual(a, try Data(contentsOf: URL(fileURLWithPath: same + ".npy")), "the defaults are the image size and 0,0")
        XCTAssertNotEqual(a, try Data(contentsOf: URL(fileURLWithPath: sized + ".npy")), "the sizes reach the UNet")

        for (flag, value) in [("--original-size", "1024"), ("--crops-coords", "a,b"), ("--target-size", "-8,8"),
                              ("--original-size", "1,2,3"), ("--target-size", "70000,8")] {
            let output = Self.scratch + "/bad.png"
            let r = try CLITests.run(generate(output, ["\(flag)=\(value)"]))
            XCTAssertEqual(r.status, 2, "\(flag) \(value): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(flag), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: output))
        }
    }

    /// A single-file SDXL checkpoint: without --config the tiny model's heads cannot be
    /// known (one line naming --config, exit 1, nothing written); with the folder's configs
    /// it converts and generates the very latents the folder's model does.
    func testSingleFileCheckpoint() throws {
        let single = CLITests.fixtures + "/tiny-sdxl-single.safetensors"
        let out = Self.scratch + "/single.pdm"
        let refused = try CLITests.run(["convert", single, "-o", out])
        XCTAssertEqual(refused.status, 1, refused.stderr)
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, "one line: \(refused.stderr)")
        XCTAssertTrue(refused.stderr.contains("--config"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))

        let r = try CLITests.run(["convert", single, "-o", out, "--weights", "fp16", "--config", CLITests.fixtures + "/tiny-sdxl"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("single-file SDXL checkpoint"), r.stdout)
        XCTAssertFalse(r.stdout.contains("assumed:"), "--config leaves nothing to assume: \(r.stdout)")
        let info = try CLITests.run(["info", "-m", out])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.stdout.contains("family sdxl"), info.stdout)
        for (model, output) in [(Self.model, Self.scratch + "/from-folder.png"), (out, Self.scratch + "/from-single.png")] {
            let g = try CLITests.run(["generate", "-m", model, "-p", "a cat", "--width", "32", "--height", "48", "--seed", "3",
                                      "--steps", "2", "-o", output, "--save-latents", output + ".npy"])
            XCTAssertEqual(g.status, 0, g.stderr)
        }
        let a = try Data(contentsOf: URL(fileURLWithPath: Self.scratch + "/from-folder.png.npy"))
        XCTAssertEqual(a, try Data(contentsOf: URL(fileURLWithPath: Self.scratch + "/from-single.png.npy")))
    }

    /// An SDXL VAE with latents_mean/latents_std: diffusers' SDXL pipelines un-normalise the
    /// latents with them, which the runtime does not, so convert refuses it in one line
    /// (exit 1, nothing written) instead of making other images. Null values (what
    /// save_pretrained writes) convert as before.
    func testSDXLLatentNormalisationIsRefused() throws {
        let folder = Self.scratch + "/latents-mean"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.copyItem(atPath: CLITests.fixtures + "/tiny-sdxl", toPath: folder)
        let config = folder + "/vae/config.json"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        XCTAssertTrue(text.contains("\"latents_mean\": null") && text.contains("\"latents_std\": null"))
        try text.replacingOccurrences(of: "\"latents_mean\": null", with: "\"latents_mean\": [0.1, -0.2, 0.3, 0.0]")
            .replacingOccurrences(of: "\"latents_std\": null", with: "\"latents_std\": [0.9, 1.1, 1.0, 0.8]")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let out = Self.scratch + "/latents-mean.pdm"
        try CLITests.assertFails(["convert", folder, "-o", out], status: 1, "latents_mean/latents_std")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    /// `bench` measures SDXL with both text encoders and the UNet's added conditions (it
    /// refused SDXL files before).
    func testBenchMeasuresSDXL() throws {
        let r = try CLITests.run(["bench", "-m", Self.model, "--width", "64", "--height", "64", "--steps", "1",
                                  "--skip-kernels", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let phases = (json["phases"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        XCTAssertEqual(phases.first, "text encoders 1+2 (batch 2)")
        XCTAssertTrue(phases.contains("UNet step, guided (batch 2)"), "\(phases)")
        XCTAssertTrue(phases.contains { $0.hasPrefix("VAE decode") }, "\(phases)")
    }
}
