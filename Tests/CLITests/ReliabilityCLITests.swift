import Foundation
import XCTest

/// Outputs that would lose data, full disks, read-only folders, signals and a model file
/// truncated while mapped, as a careless user or an unlucky machine meets them: one line
/// on stderr, the documented exit status, and no output (finished or partial) left behind.
final class ReliabilityCLITests: XCTestCase {
    static let scratch = NSTemporaryDirectory() + "pocketsd-reliability-tests-\(getpid())"
    static var model: String { scratch + "/tiny.pdm" }
    static var checkpoint: String { CLITests.fixtures + "/tiny-sd-a.safetensors" }
    /// A convertible input (the single-file checkpoint needs --config for this tiny model).
    static var diffusersFolder: String { CLITests.fixtures + "/tiny-sd-a" }

    override class func setUp() {
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: model) {
            _ = try? CLITests.run(["convert", CLITests.fixtures + "/tiny-sd-a", "-o", model, "--weights", "fp16"])
        }
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    /// A fresh empty folder for one test.
    func folder(_ name: String = #function) throws -> String {
        let dir = Self.scratch + "/" + name.filter { $0.isLetter || $0.isNumber }
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func files(in dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    }

    func generate(_ output: String, _ extra: [String] = []) -> [String] {
        ["generate", "-m", Self.model, "-p", "a cat", "--steps", "2", "--width", "32", "--height", "32", "-o", output] + extra
    }

    /// Fails fast: the refusal comes before the model is loaded or anything is generated.
    func assertRefusedQuickly(_ args: [String], status: Int32 = 1, _ fragment: String,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let start = Date()
        try CLITests.assertFails(args, status: status, fragment, file: file, line: line)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5, "refused before the work", file: file, line: line)
    }

    func fileBytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    // MARK: No silent data loss (issue 9, item 7)

    func testGenerateRefusesToOverwriteItsModel() throws {
        let dir = try folder()
        let model = dir + "/model.pdm"
        try FileManager.default.copyItem(atPath: Self.model, toPath: model)
        let before = fileBytes(model)
        var args = generate(model)
        args[2] = model
        try assertRefusedQuickly(args, "would replace the input")
        // Through a symlink and a relative-looking path too: same file by device and inode.
        let link = dir + "/link.pdm"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: model)
        try assertRefusedQuickly(generate(link).enumerated().map { $0.offset == 2 ? model : $0.element }, "would replace the input")
        try assertRefusedQuickly(generate(dir + "/./model.pdm").enumerated().map { $0.offset == 2 ? model : $0.element },
                                 "would replace the input")
        XCTAssertEqual(fileBytes(model), before, "the model is untouched")
        XCTAssertEqual(files(in: dir), ["link.pdm", "model.pdm"])
    }

    func testConvertRefusesToOverwriteItsCheckpoint() throws {
        let dir = try folder()
        let checkpoint = dir + "/ck.safetensors"
        try FileManager.default.copyItem(atPath: Self.checkpoint, toPath: checkpoint)
        let before = fileBytes(checkpoint)
        try assertRefusedQuickly(["convert", checkpoint, "-o", checkpoint], "would replace the input")
        // A file inside a diffusers folder input, and the --config folder's files.
        let unetWeights = CLITests.fixtures + "/tiny-sd-a/unet/diffusion_pytorch_model.fp16.safetensors"
        if FileManager.default.fileExists(atPath: unetWeights) {
            try assertRefusedQuickly(["convert", CLITests.fixtures + "/tiny-sd-a", "-o", unetWeights],
                                     "inside the input folder")
        }
        try assertRefusedQuickly(["convert", checkpoint, "--config", CLITests.fixtures + "/tiny-sd-a",
                                  "-o", CLITests.fixtures + "/tiny-sd-a/model_index.json"], "inside the input folder")
        XCTAssertEqual(fileBytes(checkpoint), before, "the checkpoint is untouched")
        XCTAssertEqual(files(in: dir), ["ck.safetensors"])
    }

    func testTwoOutputsOfOneRunMayNotNameTheSameFile() throws {
        let dir = try folder()
        try assertRefusedQuickly(generate(dir + "/same.png", ["--save-latents", dir + "/same.png"]), "the run would write this file twice")
        try assertRefusedQuickly(generate(dir + "/same.png", ["--save-latents", dir + "/./same.png"]), "names the same file as the output")
        // Several images: out-1.png is one of the image names.
        try assertRefusedQuickly(generate(dir + "/out.png", ["--images", "2", "--save-latents", dir + "/out-1.png"]),
                                 "the run would write this file twice")
        XCTAssertEqual(files(in: dir), [])
    }

    func testOutputPathsAreCheckedBeforeAnyWork() throws {
        let dir = try folder()
        try assertRefusedQuickly(generate("/proc/x.png"), "not writable")
        try assertRefusedQuickly(generate(dir + "/missing/x.png"), "does not exist")
        try assertRefusedQuickly(generate(dir), "output path is a folder")
        try assertRefusedQuickly(generate(dir + "/"), "names a folder")
        try assertRefusedQuickly(generate(""), status: 2, "-o")
        try assertRefusedQuickly(generate(dir + "/x.png", ["--save-latents", ""]), status: 2, "--save-latents")
        try assertRefusedQuickly(["convert", Self.checkpoint, "-o", ""], status: 2, "-o")
        try assertRefusedQuickly(["convert", Self.checkpoint, "-o", "/proc/x.pdm"], "not writable")
        // A failing --save-latents is found before generating, so no PNG is written either.
        try assertRefusedQuickly(generate(dir + "/x.png", ["--save-latents", "/proc/x.npy"]), "not writable")
        XCTAssertEqual(files(in: dir), [])
    }

    func testImagesAndLatentsAppearTogether() throws {
        let dir = try folder()
        let r = try CLITests.run(generate(dir + "/out.png", ["--images", "2", "--save-latents", dir + "/z.npy"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(files(in: dir), ["out-0.png", "out-1.png", "z.npy"], "no temporary file left")
    }

    // MARK: Faults (issue 9, item 6)

    /// Runs `pocketsd` in a private mount namespace with a tmpfs of `kilobytes` at `dir`
    /// (mounted read-only when `readOnly`), `prepare` (shell) run inside it first. Skips
    /// where mount namespaces are not allowed.
    func runWithTmpfs(_ dir: String, kilobytes: Int, readOnly: Bool = false, prepare: String = "",
                      _ args: [String]) throws -> CLITests.Run {
        let probe = try CLITests.runProcess("/usr/bin/unshare", ["-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs \(dir)"])
        try XCTSkipIf(probe.status != 0, "no mount namespaces here: \(probe.stderr)")
        let quoted = ([CLITests.binary] + args).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let mount = "mount -t tmpfs -o size=\(kilobytes)k\(readOnly ? ",ro" : "") tmpfs '\(dir)'"
        return try CLITests.runProcess("/usr/bin/unshare", ["-m", "sh", "-c",
            "\(mount) && \(prepare.isEmpty ? "" : prepare + " && ")exec \(quoted.joined(separator: " ")); echo 'mount failed' >&2; exit 99"])
    }

    /// `ulimit -f` (1 KiB blocks): a write past it fails with EFBIG since SIGXFSZ is ignored.
    func runWithFileSizeLimit(kilobytes: Int, _ args: [String]) throws -> CLITests.Run {
        let quoted = ([CLITests.binary] + args).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        return try CLITests.runProcess("/bin/bash", ["-c", "ulimit -f \(kilobytes) && exec \(quoted.joined(separator: " "))"])
    }

    func assertOneLineFailure(_ r: CLITests.Run, status: Int32 = 1, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("pocketsd: error:") }
        XCTAssertEqual(lines.count, 1, "one error line: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(fragment), "'\(r.stderr)' lacks '\(fragment)'", file: file, line: line)
        XCTAssertFalse(r.stderr.contains("Fatal error") || r.stderr.contains("Stack dump") || r.stderr.contains("Aborted"),
                       r.stderr, file: file, line: line)
    }

    func testDiskFullWhileConverting() throws {
        let dir = try folder()
        let r = try runWithTmpfs(dir, kilobytes: 256, ["convert", Self.diffusersFolder, "-o", dir + "/m.pdm", "--weights", "fp32"])
        assertOneLineFailure(r, "No space left on device")
        XCTAssertEqual(files(in: dir), [], "nothing left (the tmpfs is gone with its namespace; this is the folder beneath)")
        // File size limit: EFBIG instead of SIGXFSZ killing the process; the temporary file is removed.
        let limited = try runWithFileSizeLimit(kilobytes: 256, ["convert", Self.diffusersFolder, "-o", dir + "/m.pdm", "--weights", "fp32"])
        assertOneLineFailure(limited, "File too large")
        XCTAssertEqual(files(in: dir), [])
    }

    func testDiskFullWhileWritingImages() throws {
        let dir = try folder()
        // 64x64 noise compresses to well over 4 KiB.
        let r = try runWithFileSizeLimit(kilobytes: 4, generate(dir + "/x.png", ["--width", "64", "--height", "64"]))
        assertOneLineFailure(r, "disk full or file too large")
        XCTAssertEqual(files(in: dir), [])
        // A full disk for the latents only: the PNG (written first) must not appear either.
        let full = dir + "/full"
        try FileManager.default.createDirectory(atPath: full, withIntermediateDirectories: true)
        let r2 = try runWithTmpfs(full, kilobytes: 4, prepare: "head -c 4096 /dev/zero > '\(full)/filler' 2>/dev/null; true",
                                  generate(dir + "/x.png", ["--save-latents", full + "/z.npy"]))
        assertOneLineFailure(r2, "disk full")
        XCTAssertEqual(files(in: dir), ["full"], "no PNG without its latents")
        XCTAssertEqual(files(in: full), [])
    }

    func testReadOnlyOutputFolder() throws {
        let dir = try folder()
        let r = try runWithTmpfs(dir, kilobytes: 64, readOnly: true, generate(dir + "/x.png"))
        assertOneLineFailure(r, "is not writable")
        let c = try runWithTmpfs(dir, kilobytes: 64, readOnly: true, ["convert", Self.diffusersFolder, "-o", dir + "/m.pdm"])
        assertOneLineFailure(c, "is not writable")
    }

    /// Starts `pocketsd`, waits until `ready` (given stderr so far) holds, runs `action`, and
    /// returns how the process ended.
    func runInterrupted(_ args: [String], when ready: (String) -> Bool, _ action: (Process) -> Void) throws -> CLITests.Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.binary)
        p.arguments = args
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        let collected = LockedText()
        err.fileHandleForReading.readabilityHandler = { h in collected.append(String(decoding: h.availableData, as: UTF8.self)) }
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while !ready(collected.text), p.isRunning, Date() < deadline { usleep(500) }
        XCTAssertTrue(p.isRunning, "still running when the fault comes: \(collected.text)")
        action(p)
        p.waitUntilExit()
        err.fileHandleForReading.readabilityHandler = nil
        collected.append(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        return CLITests.Run(status: p.terminationStatus, stdout: "", stderr: collected.text)
    }

    func testSignalsDuringGenerateLeaveNothingAndExit130Or143() throws {
        let dir = try folder()
        for (signal, status) in [(SIGINT, Int32(130)), (SIGTERM, Int32(143))] {
            let r = try runInterrupted(generate(dir + "/x.png", ["--steps", "400", "--save-latents", dir + "/z.npy"]),
                                       when: { $0.contains("/400") }) { kill($0.processIdentifier, signal) }
            XCTAssertEqual(r.status, status, r.stderr)
            XCTAssertEqual(files(in: dir), [])
        }
    }

    func testSignalsDuringConvertRemoveTheTemporaryFile() throws {
        let dir = try folder()
        for (signal, status) in [(SIGINT, Int32(130)), (SIGTERM, Int32(143))] {
            // As soon as the temporary file exists (while tensors are being written).
            let r = try runInterrupted(["convert", Self.diffusersFolder, "-o", dir + "/m.pdm", "--weights", "int8"],
                                       when: { _ in self.files(in: dir).contains { $0.contains(".partial") } }) {
                kill($0.processIdentifier, signal)
            }
            XCTAssertEqual(r.status, status, r.stderr)
            XCTAssertEqual(files(in: dir), [], "the .partial file is removed")
        }
    }

    /// A config the model cannot be built from: one line naming the file and the component
    /// once ("unet: …", not "unet: unet: …"), nothing written.
    func testInconsistentConfigIsOneLineNamingTheComponentOnce() throws {
        let dir = try folder() + "/model"
        try FileManager.default.copyItem(atPath: Self.diffusersFolder, toPath: dir)
        let config = dir + "/unet/config.json"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        let narrowed = text.replacingOccurrences(of: #""block_out_channels": \[[^\]]*\]"#,
                                                 with: "\"block_out_channels\": [32]", options: .regularExpression)
        XCTAssertNotEqual(narrowed, text)
        try narrowed.write(toFile: config, atomically: true, encoding: .utf8)
        let out = dir + ".pdm"
        try CLITests.assertFails(["convert", dir, "-o", out], status: 1, "safetensors: unet: down_block_types")
        XCTAssertFalse(try CLITests.run(["convert", dir, "-o", out]).stderr.contains("unet: unet:"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    /// A tokenizer/ folder without its vocabulary (an interrupted download) is refused in one
    /// line instead of silently taking the bundled vocabulary and its padding.
    func testTokenizerFolderWithoutVocabularyIsRefused() throws {
        let dir = try folder() + "/model"
        try FileManager.default.copyItem(atPath: Self.diffusersFolder, toPath: dir)
        try FileManager.default.removeItem(atPath: dir + "/tokenizer/vocab.json")
        let out = dir + ".pdm"
        try CLITests.assertFails(["convert", dir, "-o", out], status: 1, "tokenizer: has neither vocab.json nor tokenizer.json")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    func testModelTruncatedWhileMappedIsAnErrorNotACrash() throws {
        let dir = try folder()
        let model = dir + "/model.pdm"
        try FileManager.default.copyItem(atPath: Self.model, toPath: model)
        // stream: every step maps the UNet's pages again, so the next one meets the cut.
        var args = generate(dir + "/x.png", ["--steps", "400", "--memory", "stream"])
        args[2] = model
        let r = try runInterrupted(args, when: { $0.contains("/400") }) { _ in truncate(model, 4096) }
        assertOneLineFailure(r, "mapped input file could not be read")
        XCTAssertEqual(files(in: dir), ["model.pdm"], "no image, no temporary file")
    }
}

/// Text appended from a pipe's reader thread and read from the test's.
final class LockedText: @unchecked Sendable {
    private let lock = NSLock()
    private var value = ""
    func append(_ s: String) { lock.lock(); value += s; lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return value }
}

extension CLITests {
    /// Runs any program (a shell that sets limits or mounts, then execs pocketsd).
    static func runProcess(_ executable: String, _ args: [String]) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}
