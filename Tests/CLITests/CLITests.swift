import Foundation
import XCTest

/// The `pocketsd` binary as a user runs it: exit codes, one-line errors, outputs.
final class CLITests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static let scratch = NSTemporaryDirectory() + "pocketsd-cli-tests-\(getpid())"
    static var model: String { scratch + "/tiny.pdm" }

    /// The built executable sits beside the test bundle.
    static var binary: String {
        var dir = Bundle.main.bundleURL
        if dir.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
        return dir.appendingPathComponent("pocketsd").path
    }

    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    @discardableResult
    static func run(_ args: [String]) throws -> Run { try runProcess(binary, args) }

    /// The float32 payload of an .npy file written by `--save-latents`.
    static func npyFloats(_ path: String) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = Int(data[8]) | Int(data[9]) << 8
        let payload = data.dropFirst(10 + headerLength)
        return payload.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    override class func setUp() {
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: model) {
            _ = try? run(["convert", fixtures + "/tiny-sd-a", "-o", model, "--weights", "fp16"])
        }
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    func assertFails(_ args: [String], status: Int32, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try Self.assertFails(args, status: status, fragment, file: file, line: line)
    }

    /// The run fails with `status` and says why in one line on stderr.
    static func assertFails(_ args: [String], status: Int32, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try run(args)
        XCTAssertEqual(r.status, status, "\(args): \(r.stderr)", file: file, line: line)
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "one line: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.hasPrefix("pocketsd: error: "), r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(fragment), "'\(r.stderr)' lacks '\(fragment)'", file: file, line: line)
    }

    func generate(_ extra: [String]) -> [String] {
        ["generate", "-m", Self.model, "-p", "a cat", "--steps", "2", "--width", "32", "--height", "32", "-o", Self.scratch + "/x.png"] + extra
    }

    func testUsageErrorsExitWith2() throws {
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.model), "setUp converted the model")
        try assertFails(generate(["--width", "100"]), status: 2, "multiples of 8")
        try assertFails(generate(["--width", "0"]), status: 2, "multiples of 8")
        try assertFails(generate(["--height=-64"]), status: 2, "multiples of 8")
        try assertFails(generate(["--width", "100000"]), status: 2, "at most")
        try assertFails(generate(["--steps", "0"]), status: 2, "--steps")
        try assertFails(generate(["--steps", "-3"]), status: 2, "steps")
        try assertFails(generate(["--scheduler", "heun"]), status: 2, "unknown scheduler heun")
        try assertFails(generate(["--images", "0"]), status: 2, "--images")
        try assertFails(generate(["--images", "1000000"]), status: 2, "at most")
        try assertFails(generate(["--grid", "3x3"]), status: 2, "--grid")
        try assertFails(generate(["--precision", "fp8"]), status: 2, "--precision must be one of auto, f32, bf16")
        try assertFails(generate(["--precision", "int8"]), status: 2,
                        "--precision int8: int8 products need a model converted with --weights int8 (this file's UNet weights are fp16)")
        try assertFails(generate(["--memory", "lots"]), status: 2, "--memory must be one of")
        try assertFails(generate(["--vae-tile", "100"]), status: 2, "--vae-tile must be 0 or a multiple of 8")
        try assertFails(generate(["--vae-tile", "8"]), status: 2, "--vae-tile")
        try assertFails(["generate", "-m", Self.model], status: 2, "prompt")
        try assertFails(["convert", Self.fixtures + "/tiny-sd-a", "-o", Self.scratch + "/y.pdm", "--weights", "q4"], status: 2, "--weights")
        try assertFails(["frobnicate"], status: 2, "frobnicate")
    }

    func testHelpExitsWith0() throws {
        for args in [["--help"], ["generate", "--help"], ["convert", "--help"]] {
            let r = try Self.run(args)
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stdout.contains("USAGE"), "\(args): \(r.stdout)")
        }
    }

    func testRuntimeErrorsExitWith1AndLeaveNoFiles() throws {
        try assertFails(generate(["-o", "/nonexistent-folder/x.png"]), status: 1, "does not exist")
        try assertFails(["generate", "-m", "/nonexistent.pdm", "-p", "x"], status: 1, "cannot open")
        let text = Self.scratch + "/notes.txt"
        try "not a model".write(toFile: text, atomically: true, encoding: .utf8)
        try assertFails(["generate", "-m", text, "-p", "x"], status: 1, "not a PocketDiffusion model file")
        try assertFails(["info", "-m", text], status: 1, "not a PocketDiffusion model file")
        try assertFails(["convert", text, "-o", Self.scratch + "/z.pdm"], status: 1, "not a safetensors file")
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.scratch + "/z.pdm"))
        // A truncated model file.
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.model))
        let cut = Self.scratch + "/cut.pdm"
        try data.prefix(data.count - 4096).write(to: URL(fileURLWithPath: cut))
        try assertFails(["generate", "-m", cut, "-p", "x"], status: 1, "truncated")
        // A damaged tensor: verify names it.
        var damaged = data
        damaged[data.count - 64] ^= 0xFF
        let bad = Self.scratch + "/bad.pdm"
        try damaged.write(to: URL(fileURLWithPath: bad))
        try assertFails(["verify", "-m", bad], status: 1, "vae.")
        XCTAssertEqual(try Self.run(["verify", "-m", Self.model]).status, 0)
    }

    func testGenerateWritesImagesLatentsAndJSON() throws {
        let out = Self.scratch + "/batch.png"
        let latents = Self.scratch + "/latents.npy"
        let r = try Self.run(["generate", "-m", Self.model, "-p", "a cat", "-p", "a dog", "-n", "blurry", "--images", "2",
                              "--steps", "2", "--width", "32", "--height", "48", "--seed", "7", "--scheduler", "euler-a",
                              "-o", out, "--save-latents", latents, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let images = json["images"] as! [[String: Any]]
        XCTAssertEqual(images.count, 4)
        XCTAssertEqual(images.map { $0["file"] as! String }, (0..<4).map { Self.scratch + "/batch-\($0).png" })
        XCTAssertEqual(images.map { $0["seed"] as! Int }, [7, 8, 9, 10], "per-image seeds by default")
        XCTAssertEqual(images.map { $0["prompt"] as! String }, ["a cat", "a cat", "a dog", "a dog"])
        XCTAssertNotNil(json["phases"] as? [[String: Any]])
        // The tiny file is fp16, so auto keeps the exact f32 products.
        XCTAssertEqual(json["precision"] as? String, "f32")
        XCTAssertNotNil(json["vae_tile_pixels"] as? Int)
        let png = try Data(contentsOf: URL(fileURLWithPath: Self.scratch + "/batch-2.png"))
        XCTAssertNotNil(png.range(of: Data("a dog\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 9, Size: 32x48, Model: tiny".utf8)))
        // float32 NCHW [4, 4, 24, 16] (tiny-sd-a's VAE scales by 2).
        let npy = try Data(contentsOf: URL(fileURLWithPath: latents))
        XCTAssertNotNil(npy.range(of: Data("'shape': (4, 4, 24, 16)".utf8)))
        XCTAssertGreaterThan(npy.count, 4 * 4 * 24 * 16 * 4)

        let grid = try Self.run(["generate", "-m", Self.model, "-p", "a cat", "--images", "4", "--grid", "2x2", "--steps", "1",
                                 "--width", "32", "--height", "32", "-o", Self.scratch + "/grid.png"])
        XCTAssertEqual(grid.status, 0, grid.stderr)
        XCTAssertTrue(grid.stdout.contains("seed: "), "a random seed is printed: \(grid.stdout)")
        let gridPNG = try Data(contentsOf: URL(fileURLWithPath: Self.scratch + "/grid.png"))
        // IHDR width and height: 64 × 64.
        XCTAssertEqual(Array(gridPNG[16..<24]), [0, 0, 0, 64, 0, 0, 0, 64])
    }

    func testSameSeedSameImage() throws {
        let a = Self.scratch + "/s1.png", b = Self.scratch + "/s2.png"
        for path in [a, b] {
            XCTAssertEqual(try Self.run(generate(["--seed", "123", "-o", path])).status, 0)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: a)), try Data(contentsOf: URL(fileURLWithPath: b)))
        // bf16 products (native or the portable twin): the same seed, a slightly different run.
        let c = Self.scratch + "/s3.npy", d = Self.scratch + "/s4.npy"
        XCTAssertEqual(try Self.run(generate(["--seed", "123", "--save-latents", c])).status, 0)
        XCTAssertEqual(try Self.run(generate(["--seed", "123", "--save-latents", d, "--precision", "bf16"])).status, 0)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: c)), try Data(contentsOf: URL(fileURLWithPath: d)))
        // --vae-tile: 64-px tiles on a 96-px image decode in pieces (a different picture), 0 in one.
        let whole = Self.scratch + "/t0.png", tiled = Self.scratch + "/t64.png", same = Self.scratch + "/tdefault.png"
        for (path, extra) in [(whole, ["--vae-tile", "0"]), (tiled, ["--vae-tile", "64"]), (same, [])] {
            let r = try Self.run(["generate", "-m", Self.model, "-p", "a cat", "--steps", "1", "--width", "96", "--height", "96",
                                  "--seed", "5", "-o", path, "--json"] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let png = { (p: String) in try Data(contentsOf: URL(fileURLWithPath: p)) }
        XCTAssertNotEqual(try png(whole), try png(tiled))
        XCTAssertEqual(try png(whole), try png(same), "96 px is below both default tile sizes")
    }

    func testTokenizeAndInfo() throws {
        let r = try Self.run(["tokenize", "-m", Self.model, "--json", "A photo of a cat!"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["ids"] as! [Int]
        XCTAssertEqual(ids.count, 77)
        XCTAssertEqual(Array(ids.prefix(7)), [49406, 320, 1125, 539, 320, 2368, 256])
        XCTAssertEqual(ids[7], 49407)

        let info = try Self.run(["info", "-m", Self.model, "--json"])
        XCTAssertEqual(info.status, 0, info.stderr)
        let j = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((j["components"] as! [[String: Any]]).map { $0["name"] as! String }, ["text_encoder", "unet", "vae"])
        XCTAssertEqual((j["tokenizer"] as! [String: Any])["vocab_size"] as? Int, 49408)
        XCTAssertEqual(j["weights"] as? String, "fp16")
    }
}
