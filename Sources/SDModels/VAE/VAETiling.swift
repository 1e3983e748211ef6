// Tiled decoding, the idea of diffusers' AutoencoderKL.enable_tiling (tiled_decode) in our
// own form: overlapping latent tiles, blended with linear ramps across the overlap.
import SDKernels

/// How `AutoencoderKL.decode` splits a large latent. The decoder's activations grow with
/// the image (SD's last level is 128 channels at full resolution: 128 MiB per tensor at
/// 512²), so an image larger than one tile is decoded tile by tile and accumulated with
/// weights that ramp linearly across the overlap. Memory then depends on the tile, not
/// on the image.
///
/// Tiles are an approximation: the decoder's GroupNorms take their statistics over the
/// tile, and its mid-block attention attends within the tile, instead of over the whole
/// image. The difference from the untiled decode is measured in
/// Tests/SDModelsTests/MemoryTests.swift.
public struct VAETiling: Sendable, Equatable {
    /// Tile side in image pixels (rounded down to whole latent pixels).
    public var tileSize: Int
    /// Image pixels that neighbouring tiles share (rounded down to whole latent pixels).
    public var overlap: Int
    /// Latents of up to this many pixels run conv_in and the mid block (the one global
    /// attention) on the whole latent, and only the up blocks in tiles; larger ones are
    /// tiled from the start, so memory stays bounded at any size.
    public var wholeMiddleMaxPixels: Int

    /// 160-pixel tiles (20 latent pixels for SD) overlapping by 32 px (4 latent pixels, a
    /// fifth; diffusers overlaps a quarter): SD 1.5's decoder then needs about 65 MiB of
    /// activations at any image size (measured, docs/MEMORY.md), and a 512² image takes
    /// 4 × 4 tiles: the same decoder work as 5 × 5 tiles of 128 px, for less error (fewer
    /// seams) and ≈ 20 MiB more. Images up to 160 px on both sides decode in one piece.
    public static let standard = VAETiling(tileSize: 160, overlap: 32)

    /// 512-pixel tiles overlapping by 64 px: SD 1.x's own size decodes whole (≈ 700 MiB of
    /// activations for SD 1.5), larger images in tiles of that size; for `keep`.
    public static let large = VAETiling(tileSize: 512, overlap: 64)

    /// Tiles of `tileSize` pixels overlapping by a fifth of a tile (in whole latent pixels
    /// of SD's factor 8, at least 8 px), as `standard` does.
    public init(tileSize: Int) {
        self.init(tileSize: tileSize, overlap: max(8, tileSize / 5 / 8 * 8))
    }

    /// Tiles of `tileSize` image pixels sharing `overlap` pixels; needs 0 ≤ overlap < tileSize.
    public init(tileSize: Int, overlap: Int, wholeMiddleMaxPixels: Int = 0) {
        precondition(tileSize >= 1 && overlap >= 0 && overlap < tileSize, "tile \(tileSize) with overlap \(overlap)")
        self.tileSize = tileSize
        self.overlap = overlap
        self.wholeMiddleMaxPixels = wholeMiddleMaxPixels
    }

    /// Tile and overlap in latent pixels for a decoder that upsamples by `factor`.
    func latent(factor: Int) -> (tile: Int, overlap: Int) {
        let tile = max(1, tileSize / factor)
        return (tile, min(overlap / factor, tile - 1))
    }

    /// Whether a latent of this size needs more than one tile.
    public func applies(height: Int, width: Int, factor: Int) -> Bool {
        let tile = latent(factor: factor).tile
        return height > tile || width > tile
    }

    /// Tile origins along an axis of `length` latent pixels: every `tile − overlap`, the
    /// last one flush with the end (so no tile is a sliver).
    static func origins(length: Int, tile: Int, overlap: Int) -> [Int] {
        if length <= tile { return [0] }
        var result = Array(stride(from: 0, to: length - tile, by: tile - overlap))
        result.append(length - tile)
        return result
    }

    /// The blending weight of each image pixel of one tile along an axis: 1 inside, rising
    /// linearly across `rampPixels` on each side that has a neighbour, never 0 (so every
    /// pixel has weight). `pixels` is the tile's size in image pixels.
    static func weights(pixels: Int, rampPixels: Int, rampBefore: Bool, rampAfter: Bool) -> [Float] {
        let ramp = Float(max(rampPixels, 1))
        return (0..<pixels).map { r in
            var w: Float = 1
            if rampBefore { w = min(w, (Float(r) + 0.5) / ramp) }
            if rampAfter { w = min(w, (Float(pixels - r) - 0.5) / ramp) }
            return w
        }
    }
}

extension AutoencoderKL {
    /// One image of z: [L, B, h, w] into `image` [out, f·h, f·w] (zeroed): every tile's
    /// decode weighted by its blending ramps, then divided by the summed weights. The tile
    /// grid is a product of row and column origins, so the summed weight at a pixel is
    /// the product of the summed row and column weights: no weight image is needed.
    func decodeTiled(_ z: Tensor, batchIndex b: Int, tiling: VAETiling, into image: UnsafeMutablePointer<Float>,
                     pool: ThreadPool) {
        let f = upsamplingFactor, h = z.height, w = z.width
        let (tile, overlap) = tiling.latent(factor: f)
        let imageWidth = f * w, plane = f * h * imageWidth
        let rows = VAETiling.origins(length: h, tile: tile, overlap: overlap)
        let cols = VAETiling.origins(length: w, tile: tile, overlap: overlap)
        let tileH = min(tile, h), tileW = min(tile, w)
        func axisWeights(_ origins: [Int], size: Int, length: Int) -> [[Float]] {
            origins.map { VAETiling.weights(pixels: f * size, rampPixels: f * overlap,
                                            rampBefore: $0 > 0, rampAfter: $0 + size < length) }
        }
        let rowWeights = axisWeights(rows, size: tileH, length: h)
        let colWeights = axisWeights(cols, size: tileW, length: w)
        var rowSum = [Float](repeating: 0, count: f * h), colSum = [Float](repeating: 0, count: imageWidth)
        for (y0, weights) in zip(rows, rowWeights) { for (i, v) in weights.enumerated() { rowSum[f * y0 + i] += v } }
        for (x0, weights) in zip(cols, colWeights) { for (i, v) in weights.enumerated() { colSum[f * x0 + i] += v } }

        // What the tiles are cut from: the latent, or the mid block's output over all of it.
        let wholeMiddle = h * w <= tiling.wholeMiddleMaxPixels
        let source = wholeMiddle ? decoder.middle(z.batchElement(b), pool: pool) : z
        let sourceBatch = wholeMiddle ? 0 : b
        let latentTile = Tensor(channels: source.channels, batch: 1, height: tileH, width: tileW)
        for (y0, wy) in zip(rows, rowWeights) {
            for (x0, wx) in zip(cols, colWeights) {
                for c in 0..<source.channels {
                    for y in 0..<tileH {
                        (latentTile.data + (c * tileH + y) * tileW).update(
                            from: source.data + ((c * source.batch + sourceBatch) * h + y0 + y) * w + x0, count: tileW)
                    }
                }
                // [out, 1, f·tileH, f·tileW]
                let decoded = wholeMiddle ? decoder.upper(latentTile, pool: pool) : decoder(latentTile, pool: pool)
                let dh = decoded.height, dw = decoded.width
                for c in 0..<decoded.channels {
                    for y in 0..<dh {
                        let src = decoded.data + (c * dh + y) * dw
                        let dst = image + c * plane + (f * y0 + y) * imageWidth + f * x0
                        for x in 0..<dw { dst[x] += src[x] * wy[y] * wx[x] }
                    }
                }
            }
        }
        for c in 0..<config.outChannels {
            for y in 0..<(f * h) {
                let row = image + c * plane + y * imageWidth
                for x in 0..<imageWidth { row[x] /= rowSum[y] * colSum[x] }
            }
        }
    }
}
