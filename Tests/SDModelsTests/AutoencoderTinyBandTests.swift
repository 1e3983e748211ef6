import Foundation
import SDFormat
import SDKernels
@testable import SDModels
import XCTest

/// TAESD's row-band decode (AutoencoderTinyBands.swift) against its whole decode: bit-identical.
///
/// With the fixture's 16 channels every convolution is the direct (im2col) one, whose output
/// at a pixel is the same sum in the same order however the input is cropped. TAESD's own 64
/// channels take Winograd F(2,3): each row of a 2×2 output tile is computed from its own
/// three input rows only, and bands keep every crop on an even row, so each row comes from
/// the same tile position, with the same rounding, as in the whole decode.
final class AutoencoderTinyBandTests: XCTestCase {
    func fixture() throws -> AutoencoderTiny {
        let folder = Fixtures.path("tiny-taesd")
        let config = try AutoencoderTinyConfig(json: Fixtures.json(folder + "/config.json"))
        return try AutoencoderTiny(config: config, weights: SafetensorsFile(path: folder + "/diffusion_pytorch_model.safetensors"))
    }

    /// Latents in about [-3, 3] (the UNet's range), from a fixed seed.
    func latents(_ count: Int, seed: UInt64 = 1) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) - (1 << 23)) / Float(1 << 23) * 3
        }
    }

    func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    func testBandsOfTheGoldenAreTheWholeDecode() throws {
        let taesd = try fixture()
        let golden = try NPYArray(path: AutoencoderTinyTests.golden + "/decode-latents.npy")
        let s = golden.shape  // [2, 4, 6, 10]
        let whole = taesd.decode(latents: golden.floats, batch: s[0], height: s[2], width: s[3],
                                 bands: .budget(bytes: .max), pool: testPool)
        for bands in [TinyDecodeBands.rows(2), .rows(4), .rows(6), .budget(bytes: 1)] {
            let banded = taesd.decode(latents: golden.floats, batch: s[0], height: s[2], width: s[3], bands: bands, pool: testPool)
            XCTAssertEqual(banded, whole, "\(bands)")
        }
    }

    /// Odd, non-square latents, batch 2, bands of a few rows: many bands at every stage, the
    /// first and last touching the image's borders.
    func testManyBandsOfOddSizesAreTheWholeDecode() throws {
        let taesd = try fixture()
        for (h, w) in [(13, 9), (9, 13), (1, 5), (2, 3)] {
            let z = latents(2 * 4 * h * w)
            let whole = taesd.decode(latents: z, batch: 2, height: h, width: w, bands: .budget(bytes: .max), pool: testPool)
            for rows in [2, 3, 4, 8] {
                let banded = taesd.decode(latents: z, batch: 2, height: h, width: w, bands: .rows(rows), pool: testPool)
                XCTAssertEqual(banded, whole, "\(h)×\(w) latents in bands of \(rows) rows")
            }
        }
    }

    /// The halo is what makes the bands exact: decoding two halves of the latents on their own
    /// (no halo) is visibly wrong at the seam, so the comparisons above can fail.
    func testBandsWithoutHaloWouldDiffer() throws {
        let taesd = try fixture()
        let h = 12, w = 7, f = taesd.upsamplingFactor
        let z = latents(4 * h * w, seed: 2)
        let whole = taesd.decode(latents: z, batch: 1, height: h, width: w, bands: .budget(bytes: .max), pool: testPool)
        func rows(_ r: Range<Int>, of x: [Float], height: Int, width: Int, channels: Int) -> [Float] {
            (0..<channels).flatMap { c in x[(c * height + r.lowerBound) * width..<(c * height + r.upperBound) * width] }
        }
        let top = taesd.decode(latents: rows(0..<6, of: z, height: h, width: w, channels: 4), batch: 1,
                               height: 6, width: w, pool: testPool)
        let wholeTop = rows(0..<(6 * f), of: whole, height: h * f, width: w * f, channels: 3)
        XCTAssertGreaterThan(maxAbsDifference(top, wholeTop), 1e-3, "the top half alone lacks the rows below its seam")
    }

    /// 64 channels and at least 64 tiles per convolution, whole or banded: Winograd F(2,3).
    func testWinogradBandsAreTheWholeDecode() throws {
        let taesd = try RandomTAESD.model(channels: 64)
        let h = 8, w = 20
        let z = latents(2 * 4 * h * w, seed: 3)
        let whole = taesd.decode(latents: z, batch: 2, height: h, width: w, bands: .budget(bytes: .max), pool: testPool)
        for rows in [6, 10] {
            let banded = taesd.decode(latents: z, batch: 2, height: h, width: w, bands: .rows(rows), pool: testPool)
            XCTAssertEqual(maxAbsDifference(banded, whole), 0, "bands of \(rows) rows")
        }
    }

    /// The budget bounds the largest band activation (TAESD's last stage at 512 px wide: 64
    /// channels of 2 KiB a row), and the bands are few enough that the halo costs little.
    func testBandHeightFollowsTheBudget() throws {
        let taesd = try RandomTAESD.model(channels: 64)
        let stage = taesd.decoderStages[taesd.decoderStages.count - 1]
        for (batch, width) in [(1, 256), (2, 128), (1, 128)] {
            let input = Tensor(channels: 64, batch: batch, height: 256, width: width)
            let budget = AutoencoderTiny.standardBandBytes
            let rows = stage.bandRows(.budget(bytes: budget), input: input)
            let widest = stage.neededRows(for: 256..<(256 + rows), inputHeight: 256).map { $0.count }.max()!
            let bytes = 64 * batch * 2 * width * 4 * widest
            XCTAssertEqual(rows % 2, 0)
            XCTAssertLessThanOrEqual(bytes, budget, "batch \(batch), \(width) wide: \(rows) rows")
            XCTAssertGreaterThanOrEqual(rows, 2 * stage.haloRows, "batch \(batch), \(width) wide")
        }
        XCTAssertEqual(stage.bandRows(.budget(bytes: .max), input: Tensor(channels: 64, batch: 1, height: 64, width: 64)), 128,
                       "one band when the whole fits")
    }

    /// Planned like every model call (ActivationArena): the band path makes the same tensors
    /// with the kernels skipped, runs in its arena without a fallback, and plans far less
    /// than the whole decode.
    func testBandedDecodeRunsInItsPlannedArena() throws {
        let taesd = try fixture()
        let h = 13, w = 9
        let z = latents(2 * 4 * h * w, seed: 4)
        func decode(_ bands: TinyDecodeBands) -> [Float] {
            taesd.decode(latents: z, batch: 2, height: h, width: w, bands: bands, pool: testPool)
        }
        let plan = ActivationArena.plan { _ = decode(.rows(4)) }
        let wholePlan = ActivationArena.plan { _ = decode(.budget(bytes: .max)) }
        XCTAssertLessThan(plan.peakLiveBytes, wholePlan.peakLiveBytes / 2)
        let arena = ActivationArena(plan: plan)
        let banded = arena.run { decode(.rows(4)) }
        XCTAssertEqual(arena.fallbacks, 0)
        arena.close()
        XCTAssertEqual(banded, decode(.budget(bytes: .max)))
    }
}

/// A TAESD of the fixture's layout with `channels` channels per level and random weights
/// (uniform, variance 1 / fan-in): TAESD's own 64 channels reach the Winograd convolutions.
final class RandomTAESD: WeightSource {
    let shapes: [String: [Int]]
    let storage: [String: UnsafeMutablePointer<Float>]

    init(like base: WeightSource, channels: Int, from baseChannels: Int) {
        var shapes: [String: [Int]] = [:], storage: [String: UnsafeMutablePointer<Float>] = [:]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for key in base.tensorKeys {
            let shape = base.tensor(key)!.shape.map { $0 == baseChannels ? channels : $0 }
            let count = shape.reduce(1, *)
            let bound = (3 / Float(shape.dropFirst().reduce(1, *))).squareRoot()
            shapes[key] = shape
            let values = UnsafeMutablePointer<Float>.allocate(capacity: count)
            for i in 0..<count {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                values[i] = (Float(state >> 40) / Float(1 << 24) * 2 - 1) * bound
            }
            storage[key] = values
        }
        self.shapes = shapes
        self.storage = storage
    }

    deinit { for values in storage.values { values.deallocate() } }

    var sourceName: String { "random TAESD" }
    var tensorKeys: [String] { Array(shapes.keys) }

    func tensor(_ key: String) -> TensorView? {
        guard let shape = shapes[key], let values = storage[key] else { return nil }
        return TensorView(dtype: .f32, shape: shape, data: values)
    }

    static func model(channels: Int) throws -> AutoencoderTiny {
        let folder = Fixtures.path("tiny-taesd")
        var config = try AutoencoderTinyConfig(json: Fixtures.json(folder + "/config.json"))
        let base = try SafetensorsFile(path: folder + "/diffusion_pytorch_model.safetensors")
        let source = RandomTAESD(like: base, channels: channels, from: config.decoderBlockOutChannels[0])
        config.decoderBlockOutChannels = config.decoderBlockOutChannels.map { _ in channels }
        config.encoderBlockOutChannels = config.encoderBlockOutChannels.map { _ in channels }
        return try AutoencoderTiny(config: config, weights: source)
    }
}
