import Foundation
import Glibc
import SDFormat
import XCTest

/// `OutputFiles`: every output checked before the work, written beside its target, and
/// renamed into place together (or removed together); temporary files are known to the
/// signal handlers while they exist.
final class OutputFilesTests: XCTestCase {
    func testOutputsAppearOnlyAtCommitAndTemporariesAreRegistered() throws {
        let dir = TestFiles.scratch(self)
        let outputs = try OutputFiles(outputs: [dir + "/a.png", dir + "/b.npy"], inputs: [])
        try outputs.write(dir + "/a.png", bytes: [1, 2, 3])
        let temporary = OutputFiles.temporaryPath(for: dir + "/a.png")
        XCTAssertTrue(ProcessSignals.registered.contains(temporary), "removed if interrupted")
        XCTAssertEqual(TestFiles.contents(of: dir), [".a.png.partial-\(getpid())"])
        try outputs.write(dir + "/b.npy", bytes: [4])
        try outputs.commit()
        XCTAssertEqual(TestFiles.contents(of: dir), ["a.png", "b.npy"])
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/a.png"), Data([1, 2, 3]))
        XCTAssertFalse(ProcessSignals.registered.contains(temporary))
    }

    func testAFailedOutputLeavesNoneOfThem() throws {
        let dir = TestFiles.scratch(self)
        let outputs = try OutputFiles(outputs: [dir + "/a.png", dir + "/b.npy"], inputs: [])
        try outputs.write(dir + "/a.png", bytes: [1])
        XCTAssertThrowsError(try outputs.write(dir + "/b.npy") { _ in false })
        outputs.abandon()
        XCTAssertEqual(TestFiles.contents(of: dir), [])
        XCTAssertTrue(ProcessSignals.registered.allSatisfy { !$0.hasPrefix(dir) })
        // An output never written is an error at commit, and nothing is renamed.
        let partial = try OutputFiles(outputs: [dir + "/c.png", dir + "/d.png"], inputs: [])
        try partial.write(dir + "/c.png", bytes: [1])
        XCTAssertThrowsError(try partial.commit())
        partial.abandon()
        XCTAssertEqual(TestFiles.contents(of: dir), [])
    }

    func testRefusals() throws {
        let dir = TestFiles.scratch(self)
        let input = dir + "/in.bin"
        TestFiles.write([0], to: input)
        func refused(_ outputs: [String], _ fragment: String, inputs: [String] = [input], line: UInt = #line) {
            XCTAssertThrowsError(try OutputFiles(outputs: outputs, inputs: inputs), line: line) { error in
                XCTAssertTrue("\(error)".contains(fragment), "'\(error)' lacks '\(fragment)'", line: line)
            }
        }
        refused([input], "would replace the input")
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: input)
        refused([dir + "/link"], "would replace the input")
        XCTAssertEqual(link(input, dir + "/hard"), 0)
        refused([dir + "/hard"], "would replace the input")
        refused([dir + "/x", dir + "/./x"], "names the same file")
        refused([""], "empty")
        refused([dir + "/"], "names a folder")
        refused([dir], "is a folder")
        refused([dir + "/no/x"], "does not exist")
        refused([input + "/x"], "is not a folder")
        refused(["/proc/x.png"], "not writable")
        // A new file inside an input folder is allowed, replacing one is not.
        XCTAssertNoThrow(try OutputFiles(outputs: [dir + "/new"], inputs: [dir]))
        refused([input], "inside the input folder", inputs: [dir])
        XCTAssertEqual(TestFiles.contents(of: dir).filter { $0.contains("partial") }, [], "probe files removed")
    }
}
