import Foundation
import SDConverter
import SDFormat
import XCTest
@testable import SDModels

/// The memory options change how much is alive at once, not the numbers: chunked token-wise
/// work, a split batch and streamed weights give the same outputs as the plain path, and
/// tiled VAE decoding stays within a measured bound of the untiled decode.
final class MemoryTests: XCTestCase {
    /// Chunking splits independent columns (and the up-sampler's convolution into row bands
    /// with their halo), so only the kernels' blocking can differ: float rounding (measured
    /// 0 to 1e-6 on the tiny models).
    static let chunkedRelativeTolerance: Float = 1e-6

    /// Tiled vs untiled VAE decode on the tiny models' final pipeline latents, with tiles
    /// as large relative to the latent as SD's standard tiles are at 512² (20 of 64 latent
    /// pixels, overlap a fifth of a tile): relative RMS over the image, and the largest
    /// difference in [-1, 1] units. Measured (random weights, so no trained VAE's smooth
    /// statistics): tiny-sd-b 16² latent, tile 8 overlap 2: 0.169 and 0.48; tiny-sd-a 32²
    /// latent, tile 10 overlap 2: 0.204 and 0.51. The bounds leave about 1.5× headroom.
    static let tiledRelativeRMSBound: Float = 0.3
    static let tiledMaxAbsBound: Float = 0.75

    // MARK: - Helpers

    static let scratch = NSTemporaryDirectory() + "pocketsd-memory-tests-\(getpid())"

    /// The tiny model converted to a .pdm once per run (fp32 weights).
    static func modelFile(_ model: String) throws -> ModelFileReader {
        let path = "\(scratch)/\(model).pdm"
        if !FileManager.default.fileExists(atPath: path) {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            _ = try Converter.convert(input: Fixtures.path(model), output: path, options: ConversionOptions(weights: .fp32))
        }
        return try ModelFileReader(path: path)
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// Deterministic values in [-scale, scale).
    static func noise(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    static func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
    }

    /// Forwards to a StreamingResidency and records what the models asked for.
    final class RecordingResidency: WeightResidency {
        let inner: StreamingResidency
        var used: [String] = []
        var open: [String] = []
        var finished: [String] = []
        init(_ inner: StreamingResidency) { self.inner = inner }
        func willUse(_ keyPrefix: String) {
            used.append(keyPrefix)
            open.append(keyPrefix)
            inner.willUse(keyPrefix)
        }
        func didUse(_ keyPrefix: String) {
            if open.last == keyPrefix { open.removeLast() } else { finished.append(keyPrefix) }
            inner.didUse(keyPrefix)
        }
    }

    func runUNet(_ model: String, memory: MemoryOptions, weights: WeightSource? = nil, batch: Int = 3,
                 height: Int = 20, width: Int = 24) throws -> [Float] {
        let config = try UNet2DConditionConfig(json: Fixtures.config(model, "unet"))
        let unet = try UNet2DConditionModel(config: config, weights: weights ?? Fixtures.weights(model, "unet"),
                                            memory: memory)
        let tokens = 7
        return unet.predictNoise(sample: Self.noise(batch * config.inChannels * height * width, seed: 1),
                                 batch: batch, height: height, width: width, timestep: 500,
                                 context: Self.noise(batch * tokens * config.crossAttentionDim, seed: 2),
                                 contextTokens: tokens, pool: testPool)
    }

    // MARK: - Chunking and batch splitting

    func testChunkedAttentionAndFeedForwardMatchUnchunked() throws {
        for model in tinyModels {
            // 20×24 latent: 480 tokens at the first level, so 64-column chunks split every
            // transformer's attention queries and feed-forward many times over, per batch element.
            let plain = try runUNet(model, memory: MemoryOptions(chunkFloats: .max))
            let chunked = try runUNet(model, memory: MemoryOptions(chunkFloats: 1))
            let err = relativeRMSError(chunked, plain)
            print("\(model): chunked UNet relative RMS \(err)")
            XCTAssertLessThanOrEqual(err, Self.chunkedRelativeTolerance, "\(model) UNet")

            let config = try AutoencoderKLConfig(json: Fixtures.config(model, "vae"))
            let latents = Self.noise(2 * config.latentChannels * 12 * 10, seed: 3)
            func decode(_ chunkFloats: Int) throws -> [Float] {
                let vae = try AutoencoderKL(config: config, weights: Fixtures.weights(model, "vae"),
                                            memory: MemoryOptions(chunkFloats: chunkFloats))
                return vae.decode(latents: latents, batch: 2, height: 12, width: 10, pool: testPool)
            }
            let vaeErr = relativeRMSError(try decode(1), try decode(.max))
            print("\(model): chunked VAE relative RMS \(vaeErr)")
            XCTAssertLessThanOrEqual(vaeErr, Self.chunkedRelativeTolerance, "\(model) VAE mid-block attention")
        }
    }

    func testChunkColumns() {
        let options = MemoryOptions(chunkFloats: 1000)
        XCTAssertEqual(options.chunkColumns(rows: 10, total: 50), 50, "fits: one chunk")
        XCTAssertEqual(options.chunkColumns(rows: 10, total: 500), 64, "100 columns fit: one granule of 64")
        XCTAssertEqual(MemoryOptions(chunkFloats: 10_000).chunkColumns(rows: 10, total: 5000), 960)
        XCTAssertEqual(MemoryOptions(chunkFloats: 1).chunkColumns(rows: 4096, total: 5000), 64, "never below a granule")
    }

    func testSplitBatchMatchesWholeBatch() throws {
        for model in tinyModels {
            let whole = try runUNet(model, memory: MemoryOptions(), batch: 3, height: 8, width: 6)
            let split = try runUNet(model, memory: MemoryOptions(maxBatch: 1), batch: 3, height: 8, width: 6)
            let pairs = try runUNet(model, memory: MemoryOptions(maxBatch: 2), batch: 3, height: 8, width: 6)
            XCTAssertEqual(split.count, whole.count)
            XCTAssertLessThanOrEqual(relativeRMSError(split, whole), Self.chunkedRelativeTolerance, "\(model) batch 1")
            XCTAssertLessThanOrEqual(relativeRMSError(pairs, whole), Self.chunkedRelativeTolerance, "\(model) batch 2+1")
        }
    }

    // MARK: - Streaming residency

    /// Dropping pages only makes the kernel read them again from the file: every output is
    /// bit for bit the one of `keep`. The models must also ask for prefixes the file has,
    /// bracket them properly, and cover (nearly) all of each component's bytes.
    func testStreamingIsBitIdenticalToKeepAndCoversTheWeights() throws {
        for model in tinyModels {
            let file = try Self.modelFile(model)
            func streaming(_ component: String) -> RecordingResidency {
                RecordingResidency(StreamingResidency(file: file, component: component))
            }
            /// `root`: the model's own key prefix, released when the call returns.
            func check(_ r: RecordingResidency, _ component: String, root: String = "", minimumShare: Double,
                       line: UInt = #line) {
                XCTAssertFalse(r.used.isEmpty, "\(model) \(component): no module reported", line: line)
                XCTAssertTrue(r.open.isEmpty, "\(model) \(component): unbalanced \(r.open)", line: line)
                for p in Set(r.used) {
                    XCTAssertNotNil(r.inner.byteRange(p), "\(model) \(component): prefix \(p) has no tensors", line: line)
                }
                XCTAssertEqual(r.finished, [root], "\(model) \(component): whole-model release", line: line)
                XCTAssertNotNil(r.inner.byteRange(root), line: line)
                // Bytes of the component inside some module's range.
                let total = try! XCTUnwrap(r.inner.byteRange(""))
                let covered = Set(r.used).compactMap { r.inner.byteRange($0) }.sorted { $0.lowerBound < $1.lowerBound }
                var bytes = 0, end = 0
                for range in covered {
                    bytes += max(0, range.upperBound - max(range.lowerBound, end))
                    end = max(end, range.upperBound)
                }
                let share = Double(bytes) / Double(total.count)
                print("\(model) \(component): modules cover \(Int(share * 100))% of the weight bytes")
                XCTAssertGreaterThan(share, minimumShare, "\(model) \(component)", line: line)
            }

            let unetConfig = try UNet2DConditionConfig(json: file.config("unet"))
            let unetRecorder = streaming("unet")
            let keepUNet = try runUNet(model, memory: MemoryOptions(), weights: file.component("unet"), batch: 2)
            let streamUNet = try runUNet(model, memory: MemoryOptions(residency: unetRecorder),
                                         weights: file.component("unet"), batch: 2)
            XCTAssertEqual(keepUNet, streamUNet, "\(model) UNet")
            check(unetRecorder, "unet", minimumShare: 0.9)
            XCTAssertEqual(unetConfig.inChannels, 4)

            let vaeConfig = try AutoencoderKLConfig(json: file.config("vae"))
            let latents = Self.noise(vaeConfig.latentChannels * 9 * 7, seed: 4)
            let vaeRecorder = streaming("vae")
            let keepVAE = try AutoencoderKL(config: vaeConfig, weights: file.component("vae"))
                .decode(latents: latents, batch: 1, height: 9, width: 7, pool: testPool)
            let streamVAE = try AutoencoderKL(config: vaeConfig, weights: file.component("vae"),
                                              memory: MemoryOptions(residency: vaeRecorder))
                .decode(latents: latents, batch: 1, height: 9, width: 7, pool: testPool)
            XCTAssertEqual(keepVAE, streamVAE, "\(model) VAE")
            // The VAE's bytes include the encoder, which text-to-image never reads.
            check(vaeRecorder, "vae", minimumShare: 0.4)
            XCTAssertTrue(vaeRecorder.used.contains { $0.hasPrefix("decoder.up_blocks.") })

            let clipConfig = try CLIPTextConfig(json: file.config("text_encoder"))
            let ids: [Int32] = [49406, 320, 1125, 539, 49407, 49407, 49407]
            let clipRecorder = streaming("text_encoder")
            let keepCLIP = try CLIPTextModel(config: clipConfig, weights: file.component("text_encoder"))
                .encode(ids: ids, batch: 1, pool: testPool)
            let streamCLIP = try CLIPTextModel(config: clipConfig, weights: file.component("text_encoder"),
                                               memory: MemoryOptions(residency: clipRecorder))
                .encode(ids: ids, batch: 1, pool: testPool)
            XCTAssertEqual(keepCLIP, streamCLIP, "\(model) CLIP")
            // A tiny CLIP's bytes are mostly its token embedding, read row by row (no scope).
            check(clipRecorder, "text_encoder", root: "text_model.", minimumShare: 0)
            for i in 0..<clipConfig.numHiddenLayers {
                XCTAssertTrue(clipRecorder.used.contains("text_model.encoder.layers.\(i)."), "\(model) CLIP layer \(i)")
                XCTAssertTrue(clipRecorder.used.contains("text_model.encoder.layers.\(i).mlp.fc1."), "\(model) CLIP fc1 \(i)")
            }
        }
    }

    // MARK: - Tiled VAE decoding

    func testTileOriginsCoverTheLatent() {
        XCTAssertEqual(VAETiling.origins(length: 64, tile: 16, overlap: 4), [0, 12, 24, 36, 48])
        XCTAssertEqual(VAETiling.origins(length: 30, tile: 16, overlap: 4), [0, 12, 14], "last tile flush with the end")
        XCTAssertEqual(VAETiling.origins(length: 16, tile: 16, overlap: 4), [0])
        XCTAssertEqual(VAETiling.origins(length: 5, tile: 16, overlap: 4), [0])
        XCTAssertEqual(VAETiling.origins(length: 64, tile: 20, overlap: 4), [0, 16, 32, 44], "SD at 512²: 4 per side")
        let tiling = VAETiling.standard
        XCTAssertEqual(tiling.latent(factor: 8).tile, 20)
        XCTAssertEqual(tiling.latent(factor: 8).overlap, 4)
        XCTAssertFalse(tiling.applies(height: 20, width: 20, factor: 8), "160 px decodes in one piece")
        XCTAssertTrue(tiling.applies(height: 20, width: 21, factor: 8))
        XCTAssertEqual(VAETiling(tileSize: 20, overlap: 7).latent(factor: 8).tile, 2, "rounded down to latent pixels")
        let w = VAETiling.weights(pixels: 8, rampPixels: 4, rampBefore: true, rampAfter: false)
        XCTAssertEqual(w, [0.125, 0.375, 0.625, 0.875, 1, 1, 1, 1])
    }

    func testOneTileDecodeIsTheUntiledDecode() throws {
        let config = try AutoencoderKLConfig(json: Fixtures.config("tiny-sd-b", "vae"))
        let vae = try AutoencoderKL(config: config, weights: Fixtures.weights("tiny-sd-b", "vae"))
        let latents = Self.noise(config.latentChannels * 6 * 5, seed: 5)
        let untiled = vae.decode(latents: latents, batch: 1, height: 6, width: 5, pool: testPool)
        let tiled = vae.decode(latents: latents, batch: 1, height: 6, width: 5, tiling: VAETiling(tileSize: 24, overlap: 8),
                               pool: testPool)
        XCTAssertEqual(tiled, untiled)
    }

    func testTiledDecodeIsCloseToUntiled() throws {
        // The pipeline's final latents for the tiny models (16×16 and 32×32, diffusers goldens).
        for (model, folder, tile) in [("tiny-sd-b", "b-dpm++2m-karras", 8), ("tiny-sd-a", "a-euler", 10)] {
            let config = try AutoencoderKLConfig(json: Fixtures.config(model, "vae"))
            let vae = try AutoencoderKL(config: config, weights: Fixtures.weights(model, "vae"))
            let npy = try NPYArray(path: Fixtures.path("golden", "pipeline", folder, "latents.npy"))
            let (h, w) = (npy.shape[2], npy.shape[3])
            let latents = npy.floats.map { $0 / Float(config.scalingFactor) }
            let untiled = vae.decode(latents: latents, batch: 1, height: h, width: w, pool: testPool)
            let f = vae.upsamplingFactor
            let tiling = VAETiling(tileSize: tile * f, overlap: 2 * f)
            XCTAssertTrue(tiling.applies(height: h, width: w, factor: f))
            let tiled = vae.decode(latents: latents, batch: 1, height: h, width: w, tiling: tiling, pool: testPool)
            let rms = relativeRMSError(tiled, untiled), worst = Self.maxAbsDifference(tiled, untiled)
            print("\(model) \(h)×\(w) latent, \(tile)-pixel tiles: relative RMS \(rms), max |Δ| \(worst)")
            XCTAssertLessThanOrEqual(rms, Self.tiledRelativeRMSBound, model)
            XCTAssertLessThanOrEqual(worst, Self.tiledMaxAbsBound, model)
            // The bound is not vacuous: tiles do change the image.
            XCTAssertGreaterThan(rms, 0, model)
        }
    }
}
