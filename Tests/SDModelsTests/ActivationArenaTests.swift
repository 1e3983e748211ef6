import Foundation
import SDConverter
import SDFormat
import SDKernels
import XCTest
@testable import SDModels

/// The activation planner (offsets from lifetimes), the arena's replay of a recorded call,
/// its fallback when a pass leaves the plan, and the models run in arenas: the same numbers
/// as with plain allocations, and no unplanned allocation.
final class ActivationArenaTests: XCTestCase {
    typealias Interval = ActivationPlanner.Interval

    // MARK: - Planner

    /// What every layout must satisfy: aligned offsets, no two buffers that are live at
    /// the same time share a byte, the arena holds every buffer and is at least the most
    /// bytes live at once (computed here by brute force).
    func assertValid(_ intervals: [Interval], _ layout: ActivationPlanner.Layout,
                     file: StaticString = #filePath, line: UInt = #line) {
        let a = ActivationPlanner.alignment
        XCTAssertEqual(layout.offsets.count, intervals.count, file: file, line: line)
        let sizes = intervals.map { ActivationPlanner.alignedSize($0.bytes) }
        for (i, x) in intervals.enumerated() {
            XCTAssertEqual(layout.offsets[i] % a, 0, "offset \(i) aligned", file: file, line: line)
            XCTAssertGreaterThanOrEqual(sizes[i], max(x.bytes, 1), file: file, line: line)
            XCTAssertLessThanOrEqual(layout.offsets[i] + sizes[i], layout.arenaBytes, "\(i) inside", file: file, line: line)
            for j in 0..<i where x.first <= intervals[j].last && intervals[j].first <= x.last {
                let disjoint = layout.offsets[i] + sizes[i] <= layout.offsets[j] || layout.offsets[j] + sizes[j] <= layout.offsets[i]
                XCTAssertTrue(disjoint, "buffers \(j) and \(i) are live together and overlap", file: file, line: line)
            }
        }
        let end = intervals.map(\.last).max() ?? 0
        var peak = 0
        for t in 0...max(end, 0) {
            var live = 0
            for (x, size) in zip(intervals, sizes) where x.first <= t && t <= x.last { live += size }
            peak = max(peak, live)
        }
        XCTAssertEqual(layout.peakLiveBytes, peak, "peak live", file: file, line: line)
        XCTAssertGreaterThanOrEqual(layout.arenaBytes, peak, file: file, line: line)
    }

    func testBuffersLiveOneAfterAnotherShareTheirBytes() {
        let chain = (0..<5).map { Interval(bytes: 1000, first: 2 * $0, last: 2 * $0 + 1) }
        let layout = ActivationPlanner.layout(chain)
        assertValid(chain, layout)
        XCTAssertEqual(layout.offsets, [0, 0, 0, 0, 0])
        XCTAssertEqual(layout.arenaBytes, 1024, "one aligned buffer")
        XCTAssertEqual(layout.peakLiveBytes, 1024)
    }

    func testAlignmentAndSizeRounding() {
        let sizes = [1, 63, 64, 65, 100, 4]
        let together = sizes.map { Interval(bytes: $0, first: 0, last: 9) }
        let layout = ActivationPlanner.layout(together)
        assertValid(together, layout)
        XCTAssertEqual(ActivationPlanner.alignedSize(0), 64, "even an empty buffer has its own address")
        XCTAssertEqual(sizes.map(ActivationPlanner.alignedSize), [64, 64, 64, 128, 128, 64])
        XCTAssertEqual(layout.arenaBytes, 512, "all live at once: the sum of the rounded sizes")
        XCTAssertEqual(ActivationPlanner.layout([]).arenaBytes, 0)
    }

    /// Largest first; each buffer goes to the lowest offset free over its lifetime, also
    /// into a gap below a buffer placed earlier.
    func testGreedyBySizeFillsTheLowestGap() {
        let intervals = [
            Interval(bytes: 512, first: 0, last: 1),  // X: placed first, at 0
            Interval(bytes: 256, first: 0, last: 5),  // Y: meets X, above it at 512
            Interval(bytes: 256, first: 2, last: 3),  // Z: meets only Y: X's bytes at 0
            Interval(bytes: 200, first: 4, last: 6),  // W: meets Y (and not Z): at 0 too
            Interval(bytes: 64, first: 3, last: 4),   // V: meets Y, Z, W: above Z/W at 256
        ]
        let layout = ActivationPlanner.layout(intervals)
        assertValid(intervals, layout)
        XCTAssertEqual(layout.offsets, [0, 512, 0, 0, 256])
        XCTAssertEqual(layout.arenaBytes, 768)
        XCTAssertEqual(layout.peakLiveBytes, 768)
    }

    /// Random lifetimes (deterministic): every layout is valid, reuses memory, and stays
    /// within a modest factor of the lower bound.
    func testRandomLifetimes() {
        var state: UInt64 = 0x1234_5678
        func random(_ n: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(n))
        }
        var worst = 0.0
        for _ in 0..<200 {
            let count = 1 + random(60)
            let intervals = (0..<count).map { _ -> Interval in
                let first = random(100)
                return Interval(bytes: 1 + random(random(2) == 0 ? 5000 : 100_000), first: first, last: first + random(20))
            }
            let layout = ActivationPlanner.layout(intervals)
            assertValid(intervals, layout)
            let total = intervals.map { ActivationPlanner.alignedSize($0.bytes) }.reduce(0, +)
            XCTAssertLessThanOrEqual(layout.arenaBytes, total)
            worst = max(worst, Double(layout.arenaBytes) / Double(layout.peakLiveBytes))
        }
        print("random lifetimes: arena / peak live at most \(worst)")
        XCTAssertLessThan(worst, 2)
    }

    /// Idle pages: listed at the release after which nothing touches them for more than
    /// `idleEvents` events (the pass repeating), never while a tensor on them is live.
    func testIdlePagesAreReleasedOnlyWhenFreeForLong() {
        let page = 4096
        let intervals = [
            Interval(bytes: page, first: 0, last: 1),   // A at 0
            Interval(bytes: page, first: 0, last: 10),  // C at 4096, the whole pass
            Interval(bytes: page, first: 2, last: 3),   // B at 0
            Interval(bytes: page, first: 9, last: 10),  // D at 0
        ]
        let layout = ActivationPlanner.layout(intervals)
        XCTAssertEqual(layout.offsets, [0, page, 0, 0])
        let idle = { (k: Int) in
            ActivationPlanner.idlePages(intervals, offsets: layout.offsets, idleEvents: k, pageBytes: page)
                .map { "\($0.event):\($0.pages)" }
        }
        XCTAssertEqual(idle(4), ["3:0..<1"], "page 0 is unused from event 4 to 8")
        XCTAssertEqual(idle(5), [])
        XCTAssertEqual(idle(0), ["3:0..<1"], "A to B and D to the next pass's A are back to back")

        var state: UInt64 = 99
        func random(_ n: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(n))
        }
        for _ in 0..<100 {
            let intervals = (0..<(1 + random(40))).map { _ -> Interval in
                let first = random(80)
                return Interval(bytes: 1 + random(3000), first: first, last: first + random(15))
            }
            let events = intervals.map(\.last).max()! + 1
            let offsets = ActivationPlanner.layout(intervals).offsets
            let k = random(20), pageBytes = 256
            for r in ActivationPlanner.idlePages(intervals, offsets: offsets, idleEvents: k, pageBytes: pageBytes) {
                for (i, x) in intervals.enumerated() {
                    let lo = offsets[i] / pageBytes
                    let hi = (offsets[i] + ActivationPlanner.alignedSize(x.bytes) + pageBytes - 1) / pageBytes
                    guard lo < r.pages.upperBound && r.pages.lowerBound < hi else { continue }
                    XCTAssertFalse(x.first <= r.event && r.event < x.last, "a live tensor's page released")
                    let nextUse = x.first > r.event ? x.first : x.first + events
                    XCTAssertGreaterThan(nextUse - r.event - 1, k, "released although used again soon")
                }
            }
        }
    }

    // MARK: - Recording and replay

    /// A call that makes tensors of `floats` in order, dropping each one `keep` tensors later.
    static func call(_ floats: [Int], keep: Int = 1) -> [Int] {
        var alive: [Tensor] = []
        var addresses: [Int] = []
        for n in floats {
            let t = Tensor(channels: n, batch: 1, height: 1, width: 1)
            for i in 0..<n { t.data[i] = Float(i) }  // the memory is writable, planning included
            addresses.append(Int(bitPattern: t.data))
            alive.append(t)
            if alive.count > keep { alive.removeFirst() }
        }
        return addresses
    }

    func testArenaReplaysThePlanEveryPass() throws {
        let pattern = [1000, 10, 1000, 5000, 10, 1000, 1]
        let plan = ActivationArena.plan { _ = Self.call(pattern) }
        XCTAssertFalse(Kernels.isPlanning)
        XCTAssertEqual(plan.sizes, pattern.map { 4 * $0 })
        XCTAssertEqual(plan.escaped, 0)
        XCTAssertLessThan(plan.arenaBytes, pattern.map { ActivationPlanner.alignedSize(4 * $0) }.reduce(0, +), "reuse")
        XCTAssertGreaterThanOrEqual(plan.arenaBytes, plan.peakLiveBytes)
        let arena = ActivationArena(plan: plan)
        let first = arena.run { Self.call(pattern) }
        let second = arena.run { Self.call(pattern) }
        XCTAssertEqual(first, second, "every pass uses the same slots")
        let base = first.min()!
        XCTAssertEqual(first.map { $0 - base }, plan.offsets.map { $0 - plan.offsets.min()! })
        XCTAssertTrue(first.allSatisfy { $0 % ActivationPlanner.alignment == 0 })
        XCTAssertEqual(arena.fallbacks, 0)
        XCTAssertEqual(arena.divergedPasses, 0)
        XCTAssertEqual(arena.passes, 2)
        arena.close()
        // After close (or outside run) tensors are plain allocations again.
        _ = arena.run { Self.call([3]) }
        XCTAssertEqual(arena.fallbacks, 1)
        _ = Self.call(pattern)
    }

    func testADivergingPassFallsBackAndCounts() {
        let pattern = [100, 200, 300, 400]
        let arena = ActivationArena(plan: ActivationArena.plan { _ = Self.call(pattern) })
        _ = arena.run { Self.call([100, 999, 300, 400]) }  // differs at index 1: plain from there on
        XCTAssertEqual(arena.fallbacks, 3)
        XCTAssertEqual(arena.divergedPasses, 1)
        _ = arena.run { Self.call(pattern + [50]) }  // one more than planned
        XCTAssertEqual(arena.fallbacks, 4)
        XCTAssertEqual(arena.divergedPasses, 2)
        _ = arena.run { Self.call(Array(pattern.prefix(2))) }  // ends early: no fallback, but counted
        XCTAssertEqual(arena.fallbacks, 4)
        XCTAssertEqual(arena.divergedPasses, 3)
        _ = arena.run { Self.call(pattern) }
        XCTAssertEqual(arena.fallbacks, 4, "a pass that follows the plan uses it again")
        XCTAssertEqual(arena.divergedPasses, 3)
        XCTAssertEqual(arena.passes, 4)
    }

    /// A tensor that outlives its pass keeps its bytes: the next pass takes plain buffers
    /// rather than overwrite it.
    func testATensorLeftAliveIsNotOverwritten() {
        let arena = ActivationArena(plan: ActivationArena.plan { _ = Self.call([256, 256]) })
        let kept = arena.run { () -> Tensor in
            let t = Tensor(channels: 256, batch: 1, height: 1, width: 1)
            for i in 0..<256 { t.data[i] = 7 }
            _ = Tensor(channels: 256, batch: 1, height: 1, width: 1)
            return t
        }
        _ = arena.run { Self.call([256, 256]) }
        XCTAssertEqual(arena.divergedPasses, 1)
        XCTAssertEqual(arena.fallbacks, 2)
        XCTAssertTrue((0..<256).allSatisfy { kept.data[$0] == 7 })
        arena.close()  // kept is still alive: the mapping stays
        XCTAssertTrue((0..<256).allSatisfy { kept.data[$0] == 7 })
    }

    // MARK: - Models in arenas

    final class CountingResidency: WeightResidency {
        var calls = 0
        func willUse(_ keyPrefix: String) { calls += 1 }
        func didUse(_ keyPrefix: String) { calls += 1 }
    }

    /// Plans a model call, then runs it `passes` times in the arena; every pass must give
    /// exactly the plain result, with no unplanned allocation.
    func assertArenaMatchesPlain(_ name: String, passes: Int = 2, idlePageEvents: Int? = nil,
                                 _ call: () throws -> [Float]) throws -> ActivationArena {
        let plain = try call()
        let arena = ActivationArena(plan: try ActivationArena.plan { _ = try call() }, idlePageEvents: idlePageEvents)
        for pass in 0..<passes {
            let result = try arena.run(call)
            XCTAssertEqual(result, plain, "\(name): pass \(pass) differs from plain allocations")
        }
        XCTAssertEqual(arena.fallbacks, 0, name)
        XCTAssertEqual(arena.divergedPasses, 0, name)
        XCTAssertEqual(arena.plan.escaped, 0, name)
        XCTAssertGreaterThanOrEqual(arena.plan.arenaBytes, arena.plan.peakLiveBytes, name)
        print("\(name): \(arena.plan.count) tensors, arena \(arena.plan.arenaBytes) B, peak live \(arena.plan.peakLiveBytes) B")
        arena.close()
        return arena
    }

    func testModelsInArenasMatchPlainAllocations() throws {
        for model in tinyModels {
            let residency = CountingResidency()
            let memory = MemoryOptions(residency: residency, chunkFloats: 4096, maxBatch: 2)

            let textConfig = try CLIPTextConfig(json: Fixtures.config(model, "text_encoder"))
            let clip = try CLIPTextModel(config: textConfig, weights: Fixtures.weights(model, "text_encoder"), memory: memory)
            let ids = (0..<14).map { Int32($0 % 7 == 6 ? textConfig.vocabSize - 1 : 5 * $0 + 1) }
            _ = try assertArenaMatchesPlain("\(model) text encoder") { try clip.encode(ids: ids, batch: 2, pool: testPool) }

            let unetConfig = try UNet2DConditionConfig(json: Fixtures.config(model, "unet"))
            let unet = try UNet2DConditionModel(config: unetConfig, weights: Fixtures.weights(model, "unet"), memory: memory)
            let (batch, h, w, tokens) = (3, 12, 10, 7)  // split into 2 + 1 samples; chunked attention
            let sample = MemoryTests.noise(batch * unetConfig.inChannels * h * w, seed: 1)
            let context = MemoryTests.noise(batch * tokens * unetConfig.crossAttentionDim, seed: 2)
            for idle in [nil, 0, 8] {
                // Idle pages returned (zeroed) and faulted back in must not change a value.
                let arena = try assertArenaMatchesPlain("\(model) UNet, idle pages \(String(describing: idle))",
                                                        passes: 3, idlePageEvents: idle) {
                    unet.predictNoise(sample: sample, batch: batch, height: h, width: w, timestep: 500, context: context,
                                      contextTokens: tokens, pool: testPool)
                }
                XCTAssertEqual(arena.idleBytesPerPass > 0, idle != nil, "\(model): \(arena.idleBytesPerPass) idle bytes")
            }

            let vaeConfig = try AutoencoderKLConfig(json: Fixtures.config(model, "vae"))
            let vae = try AutoencoderKL(config: vaeConfig, weights: Fixtures.weights(model, "vae"), memory: memory)
            let f = vae.upsamplingFactor
            let latents = MemoryTests.noise(vaeConfig.latentChannels * 14 * 11, seed: 3)
            for tiling in [nil, VAETiling(tileSize: 6 * f, overlap: 2 * f),
                           VAETiling(tileSize: 6 * f, overlap: 2 * f, wholeMiddleMaxPixels: .max)] {
                XCTAssertTrue(tiling?.applies(height: 14, width: 11, factor: f) ?? true)
                _ = try assertArenaMatchesPlain("\(model) VAE, tiling \(String(describing: tiling))", idlePageEvents: 4) {
                    vae.decode(latents: latents, batch: 1, height: 14, width: 11, tiling: tiling, pool: testPool)
                }
            }

            // Planning leaves the weights alone: only the real passes told the residency.
            let calls = residency.calls
            _ = ActivationArena.plan {
                _ = unet.predictNoise(sample: sample, batch: batch, height: h, width: w, timestep: 500, context: context,
                                      contextTokens: tokens, pool: testPool)
            }
            XCTAssertEqual(residency.calls, calls, "\(model): no residency calls while planning")
            XCTAssertGreaterThan(calls, 0)
        }
    }
}
