// Its own file, apart from the SDXL conditioning code, because GenerationRequest holds one:
// the request then compiles without the models (the `http` fuzz target builds it alone).

/// SDXL's micro-conditioning: the sizes and crop the UNet is told about. Nil sizes default
/// to the generated image's size, as diffusers does; the crop to (0, 0).
public struct SizeConditioning: Equatable, Sendable {
    /// The original image width in pixels; nil: the generated width.
    public var originalWidth: Int?
    /// The original image height in pixels; nil: the generated height.
    public var originalHeight: Int?
    /// Left crop offset in pixels (diffusers' `crops_coords_top_left` x).
    public var cropLeft = 0
    /// Top crop offset in pixels (diffusers' `crops_coords_top_left` y).
    public var cropTop = 0
    /// The target image width in pixels; nil: the generated width.
    public var targetWidth: Int?
    /// The target image height in pixels; nil: the generated height.
    public var targetHeight: Int?

    /// Defaults: sizes from the generated image, crop (0, 0).
    public init() {}

    /// Whether anything differs from the defaults (other models refuse these settings).
    public var isSet: Bool { self != SizeConditioning() }

    /// diffusers' add_time_ids: original (H, W), crops_coords_top_left (top, left), target (H, W).
    public func timeIDs(width: Int, height: Int) -> [Float] {
        [originalHeight ?? height, originalWidth ?? width, cropTop, cropLeft, targetHeight ?? height, targetWidth ?? width]
            .map { Float($0) }
    }

    /// The largest value accepted: the ids only feed sinusoids, but absurd values are typos.
    public static let maxValue = 1 << 16

    /// "W,H" (or "WxH") → (W, H), each 0…maxValue; nil when malformed.
    public static func parsePair(_ text: String) -> (Int, Int)? {
        let parts = text.lowercased().filter { $0 != " " }.split(whereSeparator: { $0 == "," || $0 == "x" })
        guard parts.count == 2, let a = Int(parts[0]), let b = Int(parts[1]),
              (0...maxValue).contains(a), (0...maxValue).contains(b) else { return nil }
        return (a, b)
    }
}
