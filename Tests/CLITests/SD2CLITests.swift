import Foundation
import SDFormat
import XCTest

/// SD 2.x through the binary: a single-file SD 2.x checkpoint converts, `generate` without
/// --scheduler/--width/--height uses the model's own scheduler and size and matches diffusers,
/// and bad --prediction-type / --guidance-rescale values are one-line usage errors with no output.
final class SD2CLITests: XCTestCase {
    static let scratch = NSTemporaryDirectory() + "pocketsd-sd2-cli-tests-\(getpid())"
    static var model: String { scratch + "/sd2.pdm" }
    static let golden = CLITests.fixtures + "/golden/sd2/"

    override class func setUp() {
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        _ = try? CLITests.run(["convert", CLITests.fixtures + "/tiny-sd2.safetensors", "--config", CLITests.fixtures + "/tiny-sd2-config",
                               "-o", model, "--weights", "fp32"])
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    /// The golden case's prompt, seed, steps and guidance as flags.
    func flags(_ name: String) throws -> [String] {
        let root = try JSON(parsing: String(contentsOfFile: Self.golden + "cases.json", encoding: .utf8))
        let c = try XCTUnwrap(root["cases"]?.array?.first { $0["name"]?.string == name })
        return ["-p", c["prompts"]!.array![0].string!, "--seed", "\(c["seed"]!.int!)", "--steps", "\(c["steps"]!.int!)",
                "--guidance", "\(c["guidance_scale"]!.double!)", "--guidance-rescale", "\(c["guidance_rescale"]!.double!)"]
    }

    func latentsError(_ path: String, _ name: String) throws -> Float {
        let ours = try NPYArray(path: path).floats, theirs = try NPYArray(path: Self.golden + name + "/latents.npy").floats
        XCTAssertEqual(ours.count, theirs.count)
        var num: Double = 0, den: Double = 0
        for (a, b) in zip(ours, theirs) {
            num += Double(a - b) * Double(a - b)
            den += Double(b) * Double(b)
        }
        return Float((num / den).squareRoot())
    }

    func testDefaultsComeFromTheModel() throws {
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.model), "setUp converted the model")
        for name in ["sd2-default-ddim-5", "sd2-rescale-0.7"] {
            let output = Self.scratch + "/\(name).png", latents = Self.scratch + "/\(name).npy"
            let r = try CLITests.run(["generate", "-m", Self.model, "-o", output, "--save-latents", latents, "--json"] + flags(name))
            XCTAssertEqual(r.status, 0, r.stderr)
            let json = try JSON(parsing: r.stdout)
            XCTAssertEqual(json["scheduler"]?.string, "ddim")
            XCTAssertEqual(json["scheduler_from_model"]?.bool, true)
            XCTAssertEqual(json["prediction_type"]?.string, "v_prediction")
            // diffusers' default: sample_size 8 × the tiny VAE's scale 2.
            XCTAssertEqual(json["width"]?.int, 16)
            XCTAssertEqual(json["height"]?.int, 16)
            let error = try latentsError(latents, name)
            XCTAssertLessThanOrEqual(error, 1e-4, "\(name): latents relative RMS \(error)")
        }
    }

    func testOneStepAtGuidanceZeroAndPredictionOverride() throws {
        let output = Self.scratch + "/one.png"
        let r = try CLITests.run(["generate", "-m", Self.model, "-p", "a cat", "--steps", "1", "--guidance", "0",
                                  "--scheduler", "euler", "--prediction-type", "epsilon", "--json", "-o", output])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try JSON(parsing: r.stdout)["prediction_type"]?.string, "epsilon")
        XCTAssertTrue(FileManager.default.fileExists(atPath: output))
    }

    func testBadValuesAreUsageErrors() throws {
        let output = Self.scratch + "/bad.png"
        let base = ["generate", "-m", Self.model, "-p", "a cat", "--steps", "1", "-o", output]
        try CLITests.assertFails(base + ["--prediction-type", "banana"], status: 2, "--prediction-type must be epsilon or v_prediction")
        try CLITests.assertFails(base + ["--guidance-rescale", "1.5"], status: 2, "--guidance-rescale")
        try CLITests.assertFails(base + ["--width", "30"], status: 2, "--width")
        try CLITests.assertFails(base + ["--scheduler", "lcm", "--steps", "0"], status: 2, "steps")
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
        let converted = Self.scratch + "/banana.pdm"
        try CLITests.assertFails(["convert", CLITests.fixtures + "/tiny-sd2.safetensors", "-o", converted, "--prediction-type", "banana"],
                                 status: 2, "--prediction-type must be epsilon or v_prediction")
        XCTAssertFalse(FileManager.default.fileExists(atPath: converted))
    }
}
