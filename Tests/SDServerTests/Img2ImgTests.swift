import Foundation
import SDPipeline
@testable import SDServer
import XCTest

/// `POST /sdapi/v1/img2img`: the same pictures as `pocketsd generate --init-image`, and a
/// 422 naming the field for every bad image, mask or strength.
final class Img2ImgTests: XCTestCase {
    /// 70×64: not a multiple of 8 wide, so the default size (64×64) is the rounded-down one.
    static let initImage: RGBImage = {
        var pixels = [UInt8](repeating: 0, count: 70 * 64 * 3)
        for y in 0..<64 {
            for x in 0..<70 {
                let i = (y * 70 + x) * 3
                (pixels[i], pixels[i + 1], pixels[i + 2]) = (UInt8(x * 3), UInt8(y * 4), UInt8((x + y) % 256))
            }
        }
        return RGBImage(width: 70, height: 64, pixels: pixels)
    }()

    /// White (repaint) on the right half, black (keep) on the left.
    static func mask(width: Int = 70, height: Int = 64) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height { for x in (width / 2)..<width { for c in 0..<3 { pixels[(y * width + x) * 3 + c] = 255 } } }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// Writes `image` under the scratch folder and returns its path and its base64.
    func savePNG(_ image: RGBImage, _ name: String) throws -> (path: String, base64: String) {
        let png = try XCTUnwrap(PNGWriter.encode(image))
        let path = ServerTests.scratch + "/" + name
        try Data(png).write(to: URL(fileURLWithPath: path))
        return (path, Data(png).base64EncodedString())
    }

    /// Runs `pocketsd generate` with `arguments` and returns the PNG it wrote.
    func cliPNG(_ arguments: [String], output: String) throws -> [UInt8] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ServerTests.cli)
        p.arguments = ["generate", "-m", ServerTests.model, "--threads", "1", "-o", output] + arguments
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "pocketsd generate \(arguments)")
        return Array(try XCTUnwrap(FileManager.default.contents(atPath: output)))
    }

    func images(_ reply: HTTPTestClient.Reply) throws -> [[UInt8]] {
        try XCTUnwrap(reply.object["images"] as? [String]).compactMap { Data(base64Encoded: $0).map(Array.init) }
    }

    /// img2img (a data-URL init image, no size given) and inpainting give byte for byte the
    /// CLI's PNGs for the same seed, strength and settings.
    func testImg2imgAndInpaintingPNGsEqualTheCLIs() throws {
        let s = try RunningServer()
        defer { s.stop() }
        let image = try savePNG(Self.initImage, "init.png")
        let mask = try savePNG(Self.mask(), "mask.png")
        let common: [String: Any] = ["prompt": "a red apple", "negative_prompt": "blurry", "steps": 4, "cfg_scale": 7.5,
                                     "seed": 42, "sampler_name": "Euler a", "unknown_field": 1]
        let cliCommon = ["-p", "a red apple", "-n", "blurry", "--steps", "4", "--guidance", "7.5", "--seed", "42",
                         "--scheduler", "euler-a", "--init-image", image.path]

        var body = common
        body["init_images"] = ["data:image/png;base64," + image.base64]
        body["denoising_strength"] = 0.6
        let reply = try XCTUnwrap(s.client.post("/sdapi/v1/img2img", json: body))
        XCTAssertEqual(reply.status, 200, reply.text)
        let parameters = try XCTUnwrap(reply.object["parameters"] as? [String: Any])
        XCTAssertEqual(parameters["width"] as? Int, 64, "the init image's width rounded down to 8")
        XCTAssertEqual(parameters["height"] as? Int, 64)
        XCTAssertEqual(parameters["denoising_strength"] as? Double, 0.6)
        let info = try XCTUnwrap((reply.object["info"] as? String).flatMap {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        XCTAssertEqual(info["all_seeds"] as? [Int], [42])
        XCTAssertTrue((info["infotexts"] as? [String])?.first?.contains("Denoising strength: 0.6") ?? false, reply.text)
        let img2img = try XCTUnwrap(try images(reply).first)
        let cli = try cliPNG(cliCommon + ["--strength", "0.6"], output: ServerTests.scratch + "/cli-img2img.png")
        XCTAssertEqual(img2img, cli, "the API's img2img PNG differs from the CLI's")

        // Inpainting: the mask, and A1111's default strength 0.75 when none is given.
        body = common
        body["init_images"] = [image.base64]
        body["mask"] = mask.base64
        let inpaint = try XCTUnwrap(s.client.post("/sdapi/v1/img2img", json: body))
        XCTAssertEqual(inpaint.status, 200, inpaint.text)
        XCTAssertEqual((inpaint.object["parameters"] as? [String: Any])?["denoising_strength"] as? Double, 0.75)
        let inpainted = try XCTUnwrap(try images(inpaint).first)
        let cliInpaint = try cliPNG(cliCommon + ["--mask", mask.path, "--strength", "0.75"], output: ServerTests.scratch + "/cli-inpaint.png")
        XCTAssertEqual(inpainted, cliInpaint, "the API's inpainting PNG differs from the CLI's")

        // The mask matters: without it (same strength) the picture is another one.
        body["mask"] = nil
        body["denoising_strength"] = 0.75
        let unmasked = try XCTUnwrap(s.client.post("/sdapi/v1/img2img", json: body))
        XCTAssertEqual(unmasked.status, 200, unmasked.text)
        XCTAssertNotEqual(try images(unmasked).first, inpainted)
    }

    /// Bad images, masks and strengths get 422 naming the field; the server keeps serving.
    func testBadImg2imgRequests() throws {
        let s = try RunningServer()
        defer { s.stop() }
        let image = try savePNG(Self.initImage, "bad-init.png").base64
        let ok: [String: Any] = ["prompt": "x", "steps": 2, "init_images": [image], "denoising_strength": 0.5]
        func with(_ key: String, _ value: Any?) -> [String: Any] {
            var d = ok
            d[key] = value
            return d
        }
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        // A PNG header claiming 100000×100000 pixels: refused before anything is decoded.
        let hugeHeader = signature + [0, 0, 0, 13] + Array("IHDR".utf8) + [0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0, 8, 2, 0, 0, 0, 0, 0, 0, 0]
        let pngBytes = try XCTUnwrap(Data(base64Encoded: image))
        let truncated = pngBytes.prefix(pngBytes.count / 2).base64EncodedString()
        let smallMask = try savePNG(Self.mask(width: 64, height: 64), "bad-mask.png").base64
        let cases: [(String, [String: Any], String)] = [
            ("no init_images", with("init_images", nil), "init_images"),
            ("empty init_images", with("init_images", [String]()), "init_images"),
            ("init_images not a list", with("init_images", image), "init_images"),
            ("init_images of numbers", with("init_images", [1, 2]), "init_images"),
            ("bad base64", with("init_images", ["!!!!"]), "init_images"),
            ("not a PNG", with("init_images", [Data("hello, world".utf8).base64EncodedString()]), "init_images"),
            ("truncated PNG", with("init_images", [truncated]), "init_images"),
            ("huge PNG header", with("init_images", [Data(hugeHeader).base64EncodedString()]), "init_images"),
            ("mask not a PNG", with("mask", Data("nope".utf8).base64EncodedString()), "mask"),
            ("mask of another size", with("mask", smallMask), "mask"),
            ("mask of wrong type", with("mask", 3), "mask"),
            ("strength 0", with("denoising_strength", 0), "denoising_strength"),
            ("strength above 1", with("denoising_strength", 1.5), "denoising_strength"),
            ("negative strength", with("denoising_strength", -0.2), "denoising_strength"),
            ("strength as text", with("denoising_strength", "0.5"), "denoising_strength"),
            ("strength leaving no step", with("steps", 1), "denoising_strength"),
            ("width not a multiple of 8", with("width", 100), "width"),
            ("missing prompt", with("prompt", nil), "prompt"),
        ]
        for (name, body, field) in cases {
            let r = try XCTUnwrap(s.client.post("/sdapi/v1/img2img", json: body), name)
            XCTAssertEqual(r.status, 422, "\(name): \(r.text)")
            XCTAssertEqual(r.object["field"] as? String, field, "\(name): \(r.text)")
            XCTAssertTrue((r.object["detail"] as? String)?.contains(field) ?? false, "\(name): \(r.text)")
        }
        XCTAssertEqual(s.client.post("/sdapi/v1/img2img", raw: "{init_images")?.status, 400)
        XCTAssertEqual(s.client.post("/sdapi/v1/img2img", json: with("width", 64))?.status, 200, "the server still serves")
    }

    func testPNGHeaderSize() {
        let header: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + Array("IHDR".utf8)
            + [0, 0, 1, 0, 0, 0, 0, 70, 8, 2, 0, 0, 0]
        XCTAssertEqual(JobParameters.pngHeaderSize(header).map { [$0.0, $0.1] }, [256, 70])
        XCTAssertNil(JobParameters.pngHeaderSize(Array(header.prefix(20))))
        XCTAssertNil(JobParameters.pngHeaderSize(Array("not a png at all, not at all".utf8)))
    }

    /// img2img bodies in flight are bounded: the gate gives out `limit` places, refuses the
    /// next one, and takes it again once one is left.
    func testUploadGateBoundsLargeBodiesInFlight() {
        let gate = UploadGate(limit: 3)
        XCTAssertEqual((0..<5).map { _ in gate.enter() }, [true, true, true, false, false])
        gate.leave()
        XCTAssertTrue(gate.enter())
        XCTAssertFalse(gate.enter())
    }
}
