import Foundation
import XCTest

/// `generate --init-image/--mask/--strength` through the binary: runs end to end at the init
/// image's size, and bad input is a one-line error with nothing written.
final class ImageToImageCLITests: XCTestCase {
    static let scratch = NSTemporaryDirectory() + "pocketsd-img2img-cli-tests-\(getpid())"
    static var model: String { scratch + "/tiny.pdm" }
    static let images = CLITests.fixtures + "/golden/img2img/images/"

    override class func setUp() {
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        _ = try? CLITests.run(["convert", CLITests.fixtures + "/tiny-sd-a", "-o", model, "--weights", "fp16"])
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    func generate(_ output: String, _ extra: [String]) -> [String] {
        ["generate", "-m", Self.model, "-p", "a cat", "--steps", "4", "--seed", "3", "-o", output, "--json"] + extra
    }

    func testImageToImageAndInpaintingRun() throws {
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.model), "setUp converted the model")
        let output = Self.scratch + "/img2img.png"
        // 52×44 init image: generated at 48×40 (rounded down to 8) unless a size is given.
        let run = try CLITests.run(generate(output, ["--init-image", Self.images + "init-52x44.png", "--strength", "0.5"]))
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("\"width\": 48") || run.stdout.contains("\"width\":48"), run.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: output))

        let inpainted = Self.scratch + "/inpaint.png"
        let inpaint = try CLITests.run(generate(inpainted, ["--init-image", Self.images + "init-48x40.png",
                                                            "--mask", Self.images + "mask-48x40.png", "--width", "64"]))
        XCTAssertEqual(inpaint.status, 0, inpaint.stderr)
        XCTAssertTrue(inpaint.stdout.contains("64"), inpaint.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: inpainted))
    }

    func testBadImageInputIsAOneLineErrorAndWritesNothing() throws {
        let output = Self.scratch + "/bad.png"
        let notPNG = Self.scratch + "/not-a-png.png"
        try Data("just text\n".utf8).write(to: URL(fileURLWithPath: notPNG))
        let truncated = Self.scratch + "/truncated.png"
        let good = try Data(contentsOf: URL(fileURLWithPath: Self.images + "init-48x40.png"))
        try good.prefix(good.count / 2).write(to: URL(fileURLWithPath: truncated))
        let cases: [([String], Int32, String)] = [
            (["--mask", Self.images + "mask-48x40.png"], 2, "--mask needs --init-image"),
            (["--strength", "0.5"], 2, "--strength needs --init-image"),
            (["--init-image", Self.images + "init-48x40.png", "--strength", "0"], 2, "strength"),
            (["--init-image", Self.images + "init-48x40.png", "--strength", "1.5"], 2, "strength"),
            (["--init-image", Self.images + "init-48x40.png", "--strength", "0.1"], 2, "no denoising step"),
            (["--init-image", Self.images + "init-52x44.png", "--mask", Self.images + "mask-48x40.png"], 2, "same size"),
            (["--init-image", notPNG], 1, "not a PNG"),
            (["--init-image", truncated], 1, "PNG"),
            (["--init-image", Self.scratch + "/missing.png"], 1, "cannot open"),
            (["--init-image", Self.images + "init-48x40.png", "--mask", notPNG], 1, "not a PNG"),
        ]
        for (extra, status, fragment) in cases {
            try CLITests.assertFails(generate(output, extra), status: status, fragment)
            XCTAssertFalse(FileManager.default.fileExists(atPath: output), "\(extra): nothing written")
        }
    }
}
