import Foundation
import XCTest

/// The programs in Examples/, run as a user runs them, against the built-in pipeline.
final class ExampleTests: XCTestCase {
    func binary(_ name: String) -> String {
        URL(fileURLWithPath: CLITests.binary).deletingLastPathComponent().appendingPathComponent(name).path
    }

    func floats(_ path: String) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        // .npy: magic, version, little-endian header length, header; then the values.
        let headerLength = Int(data[8]) | Int(data[9]) << 8
        let values = data.dropFirst(10 + headerLength)
        return values.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// The tutorial loop written out with the library's components gives the same latents as
    /// `pocketsd generate --scheduler lms`, bit for bit.
    func testCustomPipelineEqualsGenerate() throws {
        CLITests.setUp()
        let dir = CLITests.scratch
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary("CustomPipeline"))
        p.arguments = [CLITests.model, "a red bicycle", "--size", "32", "--steps", "4", "--seed", "11",
                       "--guidance", "6", "-o", dir + "/custom.png", "--latents", dir + "/custom.npy"]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let r = try CLITests.run(["generate", "-m", CLITests.model, "-p", "a red bicycle", "--width", "32", "--height", "32",
                                  "--steps", "4", "--seed", "11", "--guidance", "6", "--scheduler", "lms",
                                  "--precision", "f32", "-o", dir + "/builtin.png", "--save-latents", dir + "/builtin.npy"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let custom = try floats(dir + "/custom.npy"), builtin = try floats(dir + "/builtin.npy")
        XCTAssertEqual(custom.count, 4 * 16 * 16)  // the tiny VAE upsamples 2×: 32 px is 16 latent px
        XCTAssertEqual(custom, builtin)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/custom.png")).prefix(8),
                       Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
    }
}
