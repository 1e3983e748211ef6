import Foundation
import XCTest

/// What a newcomer meets: metadata that remakes each image, warnings that say what was
/// dropped, progress in logs, one exit-status rule.
final class NewcomerCLITests: XCTestCase {
    typealias Run = CLITests.Run
    static var scratch: String { CLITests.scratch }
    static var model: String { CLITests.model }
    static func run(_ args: [String]) throws -> Run { try CLITests.run(args) }

    override class func setUp() { CLITests.setUp() }
    override class func tearDown() { CLITests.tearDown() }

    func assertFails(_ args: [String], status: Int32, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try CLITests.assertFails(args, status: status, fragment, file: file, line: line)
    }

    func generate(_ extra: [String]) -> [String] {
        ["generate", "-m", Self.model, "-p", "a cat", "--steps", "2", "--width", "32", "--height", "32", "-o", Self.scratch + "/x.png"] + extra
    }

    func png(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// The text of a PNG's `key` chunk (tEXt or uncompressed iTXt), read back from the bytes.
    func pngText(_ data: Data, _ key: String) -> String? {
        var offset = 8
        let bytes = [UInt8](data)
        while offset + 8 <= bytes.count {
            let length = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            let body = Array(bytes[(offset + 8)..<min(bytes.count, offset + 8 + length)])
            if type == "tEXt" || type == "iTXt", let zero = body.firstIndex(of: 0),
               String(decoding: body[..<zero], as: UTF8.self) == key {
                var rest = Array(body[(zero + 1)...])
                if type == "iTXt" {
                    // compression flag, method, language tag \0, translated keyword \0, text
                    guard rest.count >= 2, rest[0] == 0 else { return nil }
                    rest.removeFirst(2)
                    for _ in 0..<2 { rest = Array(rest[(rest.firstIndex(of: 0)! + 1)...]) }
                }
                return String(decoding: rest, as: UTF8.self)
            }
            offset += 12 + length
        }
        return nil
    }

    func testEachImageRemakesItselfFromItsMetadata() throws {
        let out = Self.scratch + "/remake.png", latents = Self.scratch + "/remake.npy"
        let r = try Self.run(["generate", "-m", Self.model, "-p", "a cat", "-n", "blurry", "--images", "3", "--steps", "2",
                              "--width", "32", "--height", "32", "--seed", "20", "--scheduler", "euler-a", "-o", out,
                              "--save-latents", latents])
        XCTAssertEqual(r.status, 0, r.stderr)
        let batchLatents = try CLITests.npyFloats(latents)
        let plane = batchLatents.count / 3
        for i in 0..<3 {
            let path = Self.scratch + "/remake-\(i).png"
            let text = try XCTUnwrap(pngText(try png(path), "parameters"))
            XCTAssertTrue(text.contains("Seed: \(20 + i),"), text)
            XCTAssertFalse(text.contains("Batch"), "per-image seeds need no batch position: \(text)")
            // The recorded settings alone, one image: the same text, and the same latents
            // up to float rounding (a batch of 3 runs the kernels in other block shapes, so
            // sums round differently: ~1e-5 here, against noise of unit size).
            let single = Self.scratch + "/single-\(i).png", singleLatents = Self.scratch + "/single-\(i).npy"
            let again = try Self.run(["generate", "-m", Self.model, "-p", "a cat", "-n", "blurry", "--steps", "2",
                                      "--width", "32", "--height", "32", "--seed", "\(20 + i)", "--scheduler", "euler-a", "-o", single,
                                      "--save-latents", singleLatents])
            XCTAssertEqual(again.status, 0, again.stderr)
            XCTAssertEqual(pngText(try png(single), "parameters"), text)
            let alone = try CLITests.npyFloats(singleLatents)
            XCTAssertEqual(alone.count, plane)
            let worst = zip(alone, batchLatents[(i * plane)..<((i + 1) * plane)]).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThan(worst, 1e-3, "image \(i) remade from its own seed")
            if i > 0 {
                let other = zip(alone, batchLatents[0..<plane]).map { abs($0 - $1) }.max() ?? 0
                XCTAssertGreaterThan(other, 0.1, "image \(i) is not image 0")
            }
        }
        // diffusers' single generator: one seed, and where the image sits in the batch.
        let batch = try Self.run(["generate", "-m", Self.model, "-p", "a cat", "--images", "2", "--steps", "1", "--width", "32",
                                  "--height", "32", "--seed", "20", "--seed-mode", "batch", "-o", Self.scratch + "/batch.png"])
        XCTAssertEqual(batch.status, 0, batch.stderr)
        let second = try XCTUnwrap(pngText(try png(Self.scratch + "/batch-1.png"), "parameters"))
        XCTAssertTrue(second.contains("Seed: 20, Size: 32x32, Model: tiny, Batch size: 2, Batch pos: 1"), second)
        XCTAssertNotEqual(try png(Self.scratch + "/batch-1.png"), try png(Self.scratch + "/remake-1.png"),
                          "batch mode continues one generator instead of seeding image 1 with 21")
        XCTAssertEqual(try Self.run(generate(["--seed-mode", "shuffle"])).status, 2)
    }

    func testMetadataSaysWhatHappened() throws {
        // Guidance off: the negative prompt had no effect and is not recorded.
        let off = Self.scratch + "/noguide.png"
        XCTAssertEqual(try Self.run(generate(["-n", "blurry", "--guidance", "1", "-o", off])).status, 0)
        let offText = try XCTUnwrap(pngText(try png(off), "parameters"))
        XCTAssertFalse(offText.contains("Negative prompt"), offText)
        // Text beyond Latin-1 goes to iTXt as UTF-8, and reads back whole.
        let utf8 = Self.scratch + "/utf8.png"
        let prompt = "a café in 東京 🐴"
        let r = try Self.run(["generate", "-m", Self.model, "-p", prompt, "--steps", "1", "--width", "32", "--height", "32",
                              "--seed", "1", "-o", utf8])
        XCTAssertEqual(r.status, 0, r.stderr)
        let data = try png(utf8)
        XCTAssertNotNil(data.range(of: Data("iTXtparameters".utf8)))
        XCTAssertNil(data.range(of: Data("tEXtparameters".utf8)))
        XCTAssertTrue(try XCTUnwrap(pngText(data, "parameters")).hasPrefix(prompt + "\n"))
        // A grid records every prompt and its real size.
        let grid = Self.scratch + "/grid2.png"
        let g = try Self.run(["generate", "-m", Self.model, "-p", "a cat", "-p", "a dog", "--grid", "1x2", "--steps", "1",
                              "--width", "32", "--height", "32", "--seed", "3", "-o", grid])
        XCTAssertEqual(g.status, 0, g.stderr)
        let gridData = try png(grid)
        XCTAssertTrue(try XCTUnwrap(pngText(gridData, "parameters")).contains("Grid: 1x2, Grid size: 64x32"))
        let cells = try XCTUnwrap(pngText(gridData, "grid"))
        XCTAssertTrue(cells.contains("a cat\n") && cells.contains("a dog\n") && cells.contains("Seed: 4,"), cells)
    }

    func testLongPromptWarnsWithTheDroppedWords() throws {
        let words = Array(repeating: "cat", count: 75).joined(separator: " ")
        let r = try Self.run(["generate", "-m", Self.model, "-p", words + " riding a purple horse", "--steps", "1",
                              "--width", "32", "--height", "32", "-o", Self.scratch + "/long.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("pocketsd: warning: prompt is longer than 77 tokens"), r.stderr)
        XCTAssertTrue(r.stderr.contains("\"riding a purple horse\""), r.stderr)
        let short = try Self.run(generate(["--steps", "1"]))
        XCTAssertFalse(short.stderr.contains("warning"), short.stderr)
    }

    func testProgressIsLoggedWhenStderrIsNotATerminal() throws {
        // The test reads stderr through a pipe: plain lines, not terminal rewrites, once the
        // work has run for a second (quick commands stay quiet).
        let r = try Self.run(["generate", "-m", Self.model, "-p", "a cat", "--steps", "40", "--width", "64", "--height", "64",
                              "--scheduler", "pndm", "-o", Self.scratch + "/slow.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("step "), r.stderr)
        XCTAssertFalse(r.stderr.contains("\u{1B}["), "no terminal escapes in a log: \(r.stderr)")
    }

    func testExitStatusRule() throws {
        try assertFails(generate(["--guidance", "nan"]), status: 2, "--guidance")
        try assertFails(generate(["--guidance", "-1"]), status: 2, "--guidance")
        try assertFails(generate(["--width", "-8"]), status: 2, "multiples of 8 (got -8x32)")
        try assertFails(generate(["--steps", "0"]), status: 2, "--steps")
        try assertFails(["generate", "-m", Self.scratch + "/missing.pdm", "-p", "x"], status: 1, "cannot open")
        let help = try Self.run(["--help"])
        XCTAssertTrue(help.stdout.contains("Exit status:"), help.stdout)
        XCTAssertTrue(help.stdout.contains("130"), help.stdout)
    }
}

@testable import pocketsd

final class ProgressLabelTests: XCTestCase {
    func testPNDMWarmUpIsNamedNotCountedPastTheSteps() {
        // PNDM with --steps 3 makes 4 UNet calls: the first step takes two.
        XCTAssertEqual((1...4).map { GenerateCommand.stepLabel(call: $0, calls: 4, steps: 3) },
                       ["step 1/3 (warm-up call 1 of 2)", "step 1/3 (warm-up call 2 of 2)", "step 2/3", "step 3/3"])
        XCTAssertEqual(GenerateCommand.stepLabel(call: 2, calls: 3, steps: 3), "step 2/3")
    }

    func testNegativeNumbersReachTheValidation() {
        XCTAssertEqual(Main.joiningNegativeValues(["generate", "--width", "-8", "-p", "-5", "--steps", "3"]),
                       ["generate", "--width=-8", "-p", "-5", "--steps", "3"])
        XCTAssertEqual(Main.joiningNegativeValues(["--", "--width", "-8"]), ["--", "--width", "-8"])
    }
}
