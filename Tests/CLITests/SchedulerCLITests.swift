import Foundation
import XCTest

/// `--scheduler lcm` through the binary: it runs, and bad step counts are one-line errors
/// that leave no output behind.
final class SchedulerCLITests: XCTestCase {
    static let scratch = NSTemporaryDirectory() + "pocketsd-scheduler-cli-tests-\(getpid())"
    static var model: String { scratch + "/tiny.pdm" }

    override class func setUp() {
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        _ = try? CLITests.run(["convert", CLITests.fixtures + "/tiny-sd-a", "-o", model, "--weights", "fp16"])
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    func generate(_ output: String, _ extra: [String]) -> [String] {
        ["generate", "-m", Self.model, "-p", "a cat", "--width", "32", "--height", "32", "--seed", "3", "-o", output] + extra
    }

    func assertOneLineError(_ r: CLITests.Run, status: Int32, _ fragment: String, line: UInt = #line) {
        XCTAssertEqual(r.status, status, r.stderr, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)", line: line)
        XCTAssertTrue(r.stderr.contains(fragment), "'\(r.stderr)' lacks '\(fragment)'", line: line)
    }

    func testLCMRunsAndRejectsBadStepCounts() throws {
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.model), "setUp converted the model")
        let output = Self.scratch + "/lcm.png"
        assertOneLineError(try CLITests.run(generate(output, ["--scheduler", "lcm", "--steps", "0"])), status: 2, "steps")
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
        // The tiny model keeps SD 1.5's scheduler config: original_inference_steps is LCM's default 50.
        assertOneLineError(try CLITests.run(generate(output, ["--scheduler", "lcm", "--steps", "51"])), status: 1,
                           "more than original_inference_steps (50)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))

        let run = try CLITests.run(generate(output, ["--scheduler", "lcm", "--steps", "2", "--guidance", "1.5"]))
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: output))
    }
}
