import Foundation
import SDConverter
import SDFormat
import SDModels
import SDPipeline
import SDSchedulers
import XCTest

/// The pipeline with its activations in preplanned arenas (the default) against plain
/// allocations: the same latents and images bit for bit, every UNet step and VAE tile on
/// plan (no unplanned allocation), one arena per phase. The goldens (PipelineGoldenTests)
/// run with arenas too.
final class ActivationArenaPipelineTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static let scratch = NSTemporaryDirectory() + "pocketsd-arena-tests-\(getpid())"

    static func modelFile(_ model: String) throws -> String {
        let path = "\(scratch)/\(model)-fp32.pdm"
        if !FileManager.default.fileExists(atPath: path) {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            _ = try Converter.convert(input: fixtures + "/" + model, output: path, options: ConversionOptions(weights: .fp32))
        }
        return path
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    func generate(_ model: String, _ request: GenerationRequest, arena: Bool, memory: MemoryPolicy,
                  configure: (inout MemoryPlan, Int) -> Void) throws -> StableDiffusionPipeline.Result {
        let pipeline = try StableDiffusionPipeline(modelPath: Self.modelFile(model), threads: 2, memory: memory)
        configure(&pipeline.memoryPlan, pipeline.vaeScaleFactor)
        pipeline.memoryPlan.planActivations = arena
        return try pipeline.generate(request)
    }

    func testArenasGiveTheSameImagesAndStayOnPlan() throws {
        var request = GenerationRequest(prompts: ["a photo of a cat", "a dog"], negativePrompts: ["blurry"])
        request.steps = 3
        request.width = 64
        request.height = 48
        request.imagesPerPrompt = 2
        request.seed = 11
        request.scheduler = .eulerAncestral
        for (model, memory) in [("tiny-sd-a", MemoryPolicy.stream), ("tiny-sd-b", .keep)] {
            func configure(_ plan: inout MemoryPlan, _ factor: Int) {
                if model == "tiny-sd-a" { plan.unetIdlePageEvents = 0 }  // every idle page returned
                // 8 guided samples per step, at most 3 per UNet call (3 + 3 + 2); the
                // decoder in overlapping tiles of 5 latent pixels, several per image.
                plan.unetBatchLatentPixels = 3 * (64 / factor) * (48 / factor)
                plan.vaeTiling = VAETiling(tileSize: 5 * factor, overlap: factor)
                plan.chunkFloats = 2048
            }
            let plain = try generate(model, request, arena: false, memory: memory, configure: configure)
            let planned = try generate(model, request, arena: true, memory: memory, configure: configure)
            XCTAssertEqual(planned.latents, plain.latents, "\(model): latents bit for bit")
            XCTAssertEqual(planned.images.map(\.pixels), plain.images.map(\.pixels), "\(model): images")
            XCTAssertTrue(plain.phases.allSatisfy { $0.activations == nil })

            let reports = Dictionary(uniqueKeysWithValues: planned.phases.compactMap { p in p.activations.map { (p.name, $0) } })
            XCTAssertEqual(Set(reports.keys), ["text encoder", "denoising", "vae decode"], model)
            XCTAssertEqual(reports["text encoder"]?.passes, 1)
            XCTAssertEqual(reports["denoising"]?.passes, request.steps)
            XCTAssertEqual(reports["vae decode"]?.passes, request.imageCount)
            for (name, r) in reports {
                print("\(model) \(name): \(r.allocations) tensors per pass, arena \(r.arenaBytes) B, peak live \(r.peakLiveBytes) B")
                XCTAssertEqual(r.fallbacks, 0, "\(model) \(name): unplanned allocations")
                XCTAssertEqual(r.divergedPasses, 0, "\(model) \(name)")
                XCTAssertGreaterThan(r.peakLiveBytes, 0)
                XCTAssertGreaterThanOrEqual(r.arenaBytes, r.peakLiveBytes)
                XCTAssertLessThan(Double(r.arenaBytes), 1.5 * Double(r.peakLiveBytes), "\(model) \(name): fragmentation")
            }
        }
    }
}
