import Foundation
import XCTest

/// The programs in Examples/, run as a user runs them, against the built-in pipeline.
final class ExampleTests: XCTestCase {
    func binary(_ name: String) -> String {
        URL(fileURLWithPath: CLITests.binary).deletingLastPathComponent().appendingPathComponent(name).path
    }

    func runExample(_ name: String, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try CLITests.runProcess(binary(name), arguments)
        XCTAssertEqual(r.status, 0, "\(name) \(arguments): \(r.stderr)", file: file, line: line)
    }

    /// The tutorial loop written out with the library's components gives the same latents as
    /// `pocketsd generate --scheduler lms`, bit for bit.
    func testCustomPipelineEqualsGenerate() throws {
        CLITests.setUp()
        let dir = CLITests.scratch
        try runExample("CustomPipeline", [CLITests.model, "a red bicycle", "--size", "32", "--steps", "4", "--seed", "11",
                                          "--guidance", "6", "-o", dir + "/custom.png", "--latents", dir + "/custom.npy"])
        let r = try CLITests.run(["generate", "-m", CLITests.model, "-p", "a red bicycle", "--width", "32", "--height", "32",
                                  "--steps", "4", "--seed", "11", "--guidance", "6", "--scheduler", "lms",
                                  "--precision", "f32", "-o", dir + "/builtin.png", "--save-latents", dir + "/builtin.npy"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let custom = try CLITests.npyFloats(dir + "/custom.npy"), builtin = try CLITests.npyFloats(dir + "/builtin.npy")
        XCTAssertEqual(custom.count, 4 * 16 * 16)  // the tiny VAE upsamples 2×: 32 px is 16 latent px
        XCTAssertEqual(custom, builtin)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/custom.png")).prefix(8),
                       Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
    }

    /// img2img through the library's pipeline gives the same latents as `pocketsd generate
    /// --init-image`, bit for bit.
    func testImageToImageEqualsGenerate() throws {
        CLITests.setUp()
        let dir = CLITests.scratch
        let initImage = dir + "/init.png"
        XCTAssertEqual(try CLITests.run(["generate", "-m", CLITests.model, "-p", "a house", "--width", "40", "--height", "32",
                                         "--steps", "2", "--seed", "3", "-o", initImage]).status, 0)
        try runExample("ImageToImage", [CLITests.model, initImage, "a red bicycle", "--strength", "0.6", "--steps", "5",
                                        "--seed", "11", "-o", dir + "/i2i.png", "--latents", dir + "/i2i.npy"])
        let r = try CLITests.run(["generate", "-m", CLITests.model, "-p", "a red bicycle", "--init-image", initImage,
                                  "--strength", "0.6", "--steps", "5", "--seed", "11", "--precision", "f32",
                                  "-o", dir + "/i2i-cli.png", "--save-latents", dir + "/i2i-cli.npy"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let library = try CLITests.npyFloats(dir + "/i2i.npy"), command = try CLITests.npyFloats(dir + "/i2i-cli.npy")
        XCTAssertEqual(library.count, 4 * 16 * 20)  // 40×32 px at the tiny VAE's 2× scale
        XCTAssertEqual(library, command)
    }
}
