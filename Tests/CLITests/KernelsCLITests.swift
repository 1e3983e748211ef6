import Foundation
import XCTest

/// `--kernels` through the binary: unknown or unsupported names are one-line usage errors
/// with no output, the variant that ran is reported, and every variant this CPU runs gives
/// the same latents as `portable`, bit for bit (the block products sum in the same order).
final class KernelsCLITests: XCTestCase {
    static let scratch = NSTemporaryDirectory() + "pocketsd-kernels-cli-tests-\(getpid())"
    static var model: String { scratch + "/tiny.pdm" }

    override class func setUp() {
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        _ = try? CLITests.run(["convert", CLITests.fixtures + "/tiny-sd-a", "-o", model, "--weights", "int8"])
    }

    override class func tearDown() { try? FileManager.default.removeItem(atPath: scratch) }

    func generate(_ name: String, _ extra: [String]) -> [String] {
        ["generate", "-m", Self.model, "-p", "a cat", "--width", "32", "--height", "32", "--steps", "2", "--seed", "5",
         "-o", Self.scratch + "/\(name).png"] + extra
    }

    /// The default thread count follows the affinity mask: `taskset -c 0` gives one thread,
    /// where the online CPU count would start one per CPU on a single allowed CPU.
    func testDefaultThreadsFollowTheAffinityMask() throws {
        let taskset = "/usr/bin/taskset"
        guard FileManager.default.isExecutableFile(atPath: taskset) else { throw XCTSkip("no \(taskset)") }
        guard sysconf(Int32(_SC_NPROCESSORS_ONLN)) > 1 else { throw XCTSkip("one CPU: nothing to confine") }
        func threads(_ prefix: [String]) throws -> Int? {
            let args = ["bench", "-m", Self.model, "--skip-kernels", "--skip-phases", "--json"]
            let run = prefix.isEmpty ? try CLITests.run(args) : try CLITests.runProcess(taskset, prefix + [CLITests.binary] + args)
            XCTAssertEqual(run.status, 0, run.stderr)
            return (try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])?["threads"] as? Int
        }
        let unconfined = try threads([]) ?? 0
        XCTAssertTrue((1...Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))).contains(unconfined), "\(unconfined) threads")
        XCTAssertEqual(try threads(["-c", "0"]), 1)
        // Two CPUs, unless a cgroup quota allows fewer.
        XCTAssertEqual(try threads(["-c", "0,1"]), min(2, unconfined))
    }

    func testBadNamesAreUsageErrors() throws {
        XCTAssertTrue(FileManager.default.fileExists(atPath: Self.model), "setUp converted the model")
        try CLITests.assertFails(generate("bad", ["--kernels", "sse9"]), status: 2, "--kernels: unknown kernel variant 'sse9'")
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.scratch + "/bad.png"))
        try CLITests.assertFails(["bench", "-m", Self.model, "--kernels", "neon2"], status: 2, "unknown kernel variant")
        // A variant this CPU lacks (none on a CPU that has them all).
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if !flags.contains(" avx512f") {
            try CLITests.assertFails(generate("bad", ["--kernels", "avx512"]), status: 2, "needs CPU features this machine lacks")
            XCTAssertFalse(FileManager.default.fileExists(atPath: Self.scratch + "/bad.png"))
        }
        if !flags.contains(" amx_bf16") {
            try CLITests.assertFails(generate("bad", ["--kernels", "amx"]), status: 2, "needs CPU features this machine lacks")
            XCTAssertFalse(FileManager.default.fileExists(atPath: Self.scratch + "/bad.png"))
        }
    }

    func testEachVariantReportsItselfAndMatchesPortable() throws {
        var reference: Data?
        var ran: [String] = []
        for variant in ["portable", "avx2", "avx512", "avx512-bf16", "amx"] {
            let latents = Self.scratch + "/\(variant).npy"
            // f32 products: the exact mode, where every variant must agree bit for bit.
            let r = try CLITests.run(generate(variant, ["--kernels", variant, "--precision", "f32", "--json",
                                                        "--save-latents", latents]))
            if r.status == 2 && r.stderr.contains("needs CPU features this machine lacks") { continue }
            XCTAssertEqual(r.status, 0, "\(variant): \(r.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            XCTAssertEqual(json["kernel_variant"] as? String, variant)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: latents))
            if let reference { XCTAssertEqual(bytes, reference, "\(variant) latents differ from portable's") } else { reference = bytes }
            ran.append(variant)
        }
        XCTAssertTrue(ran.contains("portable"))
        #if arch(x86_64)
        XCTAssertTrue(ran.contains("avx2"), "every x86_64 this builds for runs avx2")
        #endif
        let stats = try CLITests.run(generate("stats", ["--kernels", "portable", "--stats"]))
        XCTAssertEqual(stats.status, 0, stats.stderr)
        XCTAssertTrue(stats.stdout.contains("kernels: portable"), stats.stdout)
    }

    /// `--precision int8` through the binary: it reports itself and its int8 kernel, differs
    /// from the f32 run, and the variants whose other products are f32 (`portable`, `avx2`,
    /// `avx512`: no native bf16) give the same latents, each on its own int8 kernel
    /// (portable C, AVX-VNNI, AVX512-VNNI where the CPU has them).
    func testInt8PrecisionReportsItsKernelAndMatchesAcrossVariants() throws {
        var reference: Data?
        var kernels: [String] = []
        for variant in ["portable", "avx2", "avx512"] {
            let latents = Self.scratch + "/int8-\(variant).npy"
            let r = try CLITests.run(generate("int8-\(variant)", ["--kernels", variant, "--precision", "int8", "--json",
                                                                 "--save-latents", latents]))
            if r.status == 2 && r.stderr.contains("needs CPU features this machine lacks") { continue }
            XCTAssertEqual(r.status, 0, "\(variant): \(r.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            XCTAssertEqual(json["precision"] as? String, "int8")
            let kernel = try XCTUnwrap(json["int8_kernel"] as? String)
            XCTAssertTrue(["portable", "avx-vnni", "avx512-vnni", "sdot"].contains(kernel), kernel)
            if variant == "portable" { XCTAssertTrue(kernel == "portable" || kernel == "sdot", kernel) }
            XCTAssertEqual(json["attention_products"] as? String, "int8 Q·Kᵀ, f32 P·V", variant)
            kernels.append(kernel)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: latents))
            if let reference { XCTAssertEqual(bytes, reference, "\(variant) (\(kernel)) latents differ from portable's") } else { reference = bytes }
        }
        XCTAssertFalse(kernels.isEmpty)
        let exact = Self.scratch + "/int8-f32.npy"
        XCTAssertEqual(try CLITests.run(generate("int8-f32", ["--kernels", "portable", "--precision", "f32",
                                                               "--save-latents", exact])).status, 0)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: exact)), reference, "int8 activations change the run")
        // auto on an int8 file under variants without bf16 products: int8 where the variant
        // has an int8 dot-product kernel, else f32.
        for variant in ["portable", "avx2", "avx512"] {
            let r = try CLITests.run(generate("auto-\(variant)", ["--kernels", variant, "--json"]))
            if r.status == 2 && r.stderr.contains("needs CPU features this machine lacks") { continue }
            XCTAssertEqual(r.status, 0, "\(variant): \(r.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            let native = json["int8_kernel"] as? String != "portable"
            XCTAssertEqual(json["precision"] as? String, native ? "int8" : "f32", "auto under \(variant)")
        }
        let stats = try CLITests.run(generate("int8-stats", ["--precision", "int8", "--stats"]))
        XCTAssertEqual(stats.status, 0, stats.stderr)
        XCTAssertTrue(stats.stdout.contains("precision: int8 (int8 products: "), stats.stdout)
        // (bf16 attention where the variant in use has native bf16 products, int8 scores elsewhere)
        XCTAssertTrue(stats.stdout.contains("; attention: bf16)") || stats.stdout.contains("; attention: int8 Q·Kᵀ, f32 P·V)"),
                      stats.stdout)
    }

    /// `bench --conv-algorithms`: each 3×3 conv row also as direct and Winograd, plus the
    /// UNet's skip-concatenation conv (the fixture's 2 × 64 → 64 at the first level's size).
    func testBenchTimesEachConvAlgorithm() throws {
        let bench = try CLITests.run(["bench", "-m", Self.model, "--width", "64", "--height", "64", "--repeats", "1",
                                      "--precision", "int8", "--skip-phases", "--conv-algorithms", "--json"])
        XCTAssertEqual(bench.status, 0, bench.stderr)
        let kernels = (try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any])?["kernels"]
            as? [[String: Any]] ?? []
        let rows = kernels.compactMap { k in (k["name"] as? String).map { "\($0): \(k["shape"] as? String ?? "")" } }
        for suffix in ["", " direct", " winograd"] {
            XCTAssertTrue(rows.contains("conv3x3\(suffix): 32→32, 32×32"), "\(rows)")
            XCTAssertTrue(rows.contains("conv3x3 (skip concat)\(suffix): 128→64, 32×32"), "\(rows)")
            XCTAssertTrue(rows.contains("VAE conv3x3\(suffix): 64→64, 32×32"), "\(rows)")
        }
        XCTAssertTrue(kernels.allSatisfy { ($0["median_seconds"] as? Double ?? 0) > 0 }, "\(kernels)")
    }
}
