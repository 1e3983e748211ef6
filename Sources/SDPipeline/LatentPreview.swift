/// A cheap picture of latents mid-run, for live previews: each latent pixel becomes one RGB
/// pixel through a fixed linear map (no VAE), so a preview costs a few multiply-adds per
/// pixel. The map is a least-squares fit of SD 1.x/2.x VAE outputs to their four latent
/// channels (the community's well-known "approx cheap" factors); other latent spaces get a
/// grey image of the first channel.
public enum LatentPreview {
    /// RGB weights per latent channel (rows: channels 0…3; columns: r, g, b).
    static let sd4Channel: [[Float]] = [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]

    /// Image `index` of NCHW `latents` with `shape` [n, channels, h, w], at latent size
    /// (h × w); nil when the shape does not match the array or the index is out of range.
    public static func image(latents: [Float], shape: [Int], index: Int = 0) -> RGBImage? {
        guard shape.count == 4, shape.allSatisfy({ $0 > 0 }) else { return nil }
        let (n, channels, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let plane = h * w
        guard index >= 0, index < n, n * channels * plane == latents.count else { return nil }
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        let base = index * channels * plane
        for i in 0..<plane {
            for c in 0..<3 {
                var v: Float = 0
                if channels == 4 {
                    for k in 0..<4 { v += sd4Channel[k][c] * latents[base + k * plane + i] }
                } else {
                    v = latents[base + i] * 0.25
                }
                // The fit maps to [-1, 1] like the VAE's output.
                let level = min(max(v / 2 + 0.5, 0), 1)
                pixels[i * 3 + c] = level.isNaN ? 0 : UInt8((level * 255).rounded())
            }
        }
        return RGBImage(width: w, height: h, pixels: pixels)
    }
}
