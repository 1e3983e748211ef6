import Foundation
import SDPipeline
import SDSchedulers
import XCTest

final class PNGTests: XCTestCase {
    func testWritesReadablePNGWithParameters() throws {
        let dir = NSTemporaryDirectory() + "png-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pixels = (0..<(5 * 3 * 3)).map { UInt8($0 * 5) }
        let image = RGBImage(width: 5, height: 3, pixels: pixels)
        var request = GenerationRequest(prompts: ["a cat"], negativePrompts: ["blurry"])
        request.steps = 20
        request.scheduler = .eulerAncestral
        request.seed = 42
        let params = automatic1111Parameters(image: 0, request: request, modelName: "sd15")
        XCTAssertEqual(params, "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15")
        let path = dir + "/x.png"
        try PNGWriter.write(image, to: path, text: [("parameters", params)])
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(Array(data.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        XCTAssertNotNil(data.range(of: Data("tEXtparameters\0a cat".utf8)))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["x.png"], "no temporary file left")
        XCTAssertThrowsError(try PNGWriter.write(image, to: dir + "/missing/x.png"))
    }

    /// The server sends `encode`'s bytes; they must be the file's, text chunks included
    /// (a long text goes to zTXt, a non-ASCII one to iTXt).
    func testEncodeInMemoryEqualsTheFile() throws {
        let dir = NSTemporaryDirectory() + "png-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let image = RGBImage(width: 7, height: 4, pixels: (0..<(7 * 4 * 3)).map { UInt8(($0 * 37) % 256) })
        let text = [("parameters", "a cat\nSteps: 20"), ("grid", String(repeating: "long text ", count: 300)), ("note", "café")]
        let path = dir + "/x.png"
        try PNGWriter.write(image, to: path, text: text)
        let file = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(PNGWriter.encode(image, text: text), Array(file))
        XCTAssertNil(PNGWriter.encode(RGBImage(width: 0, height: 0, pixels: [])), "an empty image is refused, not encoded")
    }

    func testDecodedToEightBitsAsDiffusers() {
        // (x / 2 + 0.5) clamped, × 255, rounded half to even (numpy).
        let values: [Float] = [-1, 1, 0, 2, -3, 0.5]
        let planes = values + values + values
        let image = planes.withUnsafeBufferPointer { RGBImage(decoded: $0, width: 6, height: 1) }
        XCTAssertEqual(stride(from: 0, to: 18, by: 3).map { image.pixels[$0] }, [0, 255, 128, 255, 0, 191])
    }

    /// A diverged run's NaN and infinities: no trap; NaN is 0 as numpy's uint8 cast gives
    /// diffusers, ±inf clamp to 255 and 0. The latent preview likewise.
    func testNonFiniteValuesDoNotTrap() {
        let values: [Float] = [.nan, .infinity, -.infinity, 0]
        let planes = values + values + values
        let image = planes.withUnsafeBufferPointer { RGBImage(decoded: $0, width: 4, height: 1) }
        XCTAssertEqual(stride(from: 0, to: 12, by: 3).map { image.pixels[$0] }, [0, 255, 0, 128])
        let preview = LatentPreview.image(latents: [Float](repeating: .nan, count: 4 * 2 * 2), shape: [1, 4, 2, 2])
        XCTAssertEqual(preview?.pixels, [UInt8](repeating: 0, count: 2 * 2 * 3))
    }

    func testGrid() {
        let a = RGBImage(width: 1, height: 1, pixels: [1, 1, 1])
        let b = RGBImage(width: 1, height: 1, pixels: [2, 2, 2])
        let g = RGBImage.grid([a, b, b, a], rows: 2, columns: 2)
        XCTAssertEqual(g.width, 2)
        XCTAssertEqual(g.pixels, [1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1])
    }
}
