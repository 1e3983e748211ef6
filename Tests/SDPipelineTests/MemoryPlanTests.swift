import Foundation
import SDConverter
import SDFormat
import SDModels
import SDKernels
@testable import SDPipeline
import XCTest

/// `--memory`: the auto decision, the cgroup probing, and that the policies give the same
/// images.
final class MemoryPlanTests: XCTestCase {
    static let mib = 1 << 20
    static let gib = 1 << 30

    func testAutoKeepsOnlyWhenTheFileFitsWithHeadroom() {
        let file = 1100 * Self.mib  // SD 1.5 int8
        let headroom = MemoryPolicy.keepHeadroomBytes
        func auto(_ available: Int?, _ limit: Int?) -> MemoryPolicy {
            MemoryPolicy.automatic(memAvailable: available, cgroupLimit: limit, modelFileBytes: file)
        }
        XCTAssertEqual(auto(24 * Self.gib, nil), .keep, "a desktop")
        XCTAssertEqual(auto(file + headroom, nil), .keep, "exactly enough")
        XCTAssertEqual(auto(file + headroom - 1, nil), .stream, "one byte short")
        XCTAssertEqual(auto(900 * Self.mib, nil), .stream, "a 1 GB board")
        XCTAssertEqual(auto(24 * Self.gib, 256 * Self.mib), .stream, "a small cgroup on a big machine")
        XCTAssertEqual(auto(24 * Self.gib, 4 * Self.gib), .keep, "a roomy cgroup")
        XCTAssertEqual(auto(1 * Self.gib, 4 * Self.gib), .stream, "the machine, not the cgroup, is short")
        XCTAssertEqual(auto(nil, nil), .keep, "nothing known: no reason to stream")
        XCTAssertEqual(auto(nil, 512 * Self.mib), .stream)
        XCTAssertEqual(MemoryPolicy.automatic(memAvailable: .max, cgroupLimit: nil, modelFileBytes: .max), .stream,
                       "no overflow")
        // A small model keeps on a small machine.
        XCTAssertEqual(MemoryPolicy.automatic(memAvailable: 1200 * Self.mib, cgroupLimit: nil, modelFileBytes: 100 * Self.mib), .keep)
        XCTAssertEqual(MemoryPolicy.automatic(memAvailable: 900 * Self.mib, cgroupLimit: nil, modelFileBytes: 100 * Self.mib), .stream,
                       "keep needs room for the untiled VAE decode")
    }

    func testCgroupLimitsAreReadUpTheHierarchy() throws {
        let root = NSTemporaryDirectory() + "pocketsd-cgroup-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/a/b", withIntermediateDirectories: true)
        try "max\n".write(toFile: root + "/a/b/memory.max", atomically: true, encoding: .utf8)
        try "268435456\n".write(toFile: root + "/a/memory.max", atomically: true, encoding: .utf8)
        try "9223372036854771712\n".write(toFile: root + "/memory.max", atomically: true, encoding: .utf8)
        XCTAssertEqual(MachineMemory.limitsUpward(root: root, path: "/a/b", file: "memory.max"), [268_435_456])
        XCTAssertEqual(MachineMemory.limitsUpward(root: root, path: "/", file: "memory.max"), [], "v1's 'unlimited'")
        XCTAssertEqual(MachineMemory.limitsUpward(root: root + "/nowhere", path: "/a", file: "memory.max"), [])
        // The live probes answer something sensible here.
        XCTAssertGreaterThan(MachineMemory.available() ?? 1, 0)
    }

    func testPlanResolvesAuto() {
        let plan = MemoryPlan.resolve(.stream, modelFileBytes: 1)
        XCTAssertEqual(plan.policy, .stream)
        XCTAssertEqual(MemoryPlan.resolve(.keep, modelFileBytes: 1).policy, .keep)
        let auto = MemoryPlan.resolve(.auto, modelFileBytes: 1 << 20)
        XCTAssertNotEqual(auto.policy, .auto)
        XCTAssertTrue(auto.reason.hasPrefix("auto:"), auto.reason)
        XCTAssertEqual(plan.unetBatch(latentPixels: 64 * 64), 1, "512²: the guided halves one at a time")
        XCTAssertEqual(plan.unetBatch(latentPixels: 96 * 96), 1)
        XCTAssertEqual(plan.unetBatch(latentPixels: 32 * 32), 4, "256²: four samples share a pass")
        XCTAssertEqual(plan.unetBatch(latentPixels: 8 * 8), 64)
        XCTAssertEqual(plan.vaeTiling, .standard, "stream: small tiles")
        XCTAssertEqual(MemoryPlan.resolve(.keep, modelFileBytes: 1).vaeTiling, .large, "keep: 512² whole")
        XCTAssertFalse(VAETiling.large.applies(height: 64, width: 64, factor: 8))
        XCTAssertTrue(VAETiling.large.applies(height: 64, width: 72, factor: 8))
    }

    /// keep and stream are the same computation; only page residency differs.
    func testStreamGivesTheSameImagesAsKeep() throws {
        let path = try PipelineGoldenTests.modelFile("tiny-sd-b", .fp16)
        var request = GenerationRequest(prompts: ["a red cube", "a lighthouse"])
        request.steps = 3
        request.width = 40
        request.height = 48
        request.seed = 7
        request.scheduler = .euler
        var results: [StableDiffusionPipeline.Result] = []
        for policy in [MemoryPolicy.keep, .stream] {
            let pipeline = try StableDiffusionPipeline(modelPath: path, threads: 2, memory: policy)
            XCTAssertEqual(pipeline.memoryPlan.policy, policy)
            let result = try pipeline.generate(request)
            XCTAssertEqual(result.memoryPlan.policy, policy)
            XCTAssertEqual(result.steps.map(\.name), ["step 1", "step 2", "step 3"])
            XCTAssertEqual(result.phases.map(\.name), ["text encoder", "denoising", "vae decode"])
            results.append(result)
        }
        XCTAssertEqual(results[0].latents, results[1].latents)
        XCTAssertEqual(results[0].images.map(\.pixels), results[1].images.map(\.pixels))
    }

    /// Above one tile the pipeline decodes in tiles; the picture stays close to the
    /// untiled one (the model-level bound is in SDModelsTests/MemoryTests).
    func testLargeImagesDecodeInTiles() throws {
        let path = try PipelineGoldenTests.modelFile("tiny-sd-b", .fp16)
        var request = GenerationRequest(prompts: ["a red cube"])
        request.steps = 2
        request.width = 216  // 54 × 34 latent pixels: 1 × 2 tiles of 40 with the standard 160-px tiles
        request.height = 136
        request.seed = 3
        let pipeline = try StableDiffusionPipeline(modelPath: path, threads: 2, memory: .stream)
        let tiled = try pipeline.generate(request)
        pipeline.memoryPlan.vaeTiling = nil
        let untiled = try pipeline.generate(request)
        XCTAssertEqual(tiled.latents, untiled.latents)
        let a = tiled.images[0].pixels.map(Int.init), b = untiled.images[0].pixels.map(Int.init)
        XCTAssertEqual(a.count, 216 * 136 * 3)
        let meanLevels = Double(zip(a, b).map { abs($0 - $1) }.reduce(0, +)) / Double(a.count)
        print("tiny-sd-b 216×136: tiled vs untiled mean |Δ| \(meanLevels) levels")
        XCTAssertNotEqual(a, b, "the tiled path ran")
        XCTAssertLessThanOrEqual(meanLevels, Self.tiledMeanLevelsBound)
    }

    /// Measured ≈ 0.5 levels (see the test's output); several levels on average would be a
    /// visible seam.
    static let tiledMeanLevelsBound = 3.0
}
