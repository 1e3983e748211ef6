import Foundation
import SDPipeline

// The img2img body decoding, apart from its route (Img2ImgParameters.swift) so that it
// compiles without Hummingbird: the `http` fuzz target builds it with JobParameters.swift.

extension JobParameters {
    /// A1111's default `denoising_strength` (diffusers' is 0.8).
    public static let defaultDenoisingStrength = 0.75
    /// Either side of an init image or mask: checked from the PNG header before decoding, so
    /// a queued job holds at most 2048² × 3 bytes per image.
    public static let maxInitImageSide = maxSide

    /// `POST /sdapi/v1/img2img`'s body: txt2img's fields plus `init_images` (the first is
    /// used), `mask` (inpainting) and `denoising_strength`. Width and height default to the
    /// init image's size rounded down to 8, as `pocketsd generate --init-image` does.
    public static func automatic1111Img2Img(body: [UInt8]) throws -> (JobParameters, ImageInput) {
        let f = try FieldReader(body: body)
        var p = try automatic1111(fields: f)
        guard let first = try f.strings("init_images")?.first else {
            throw APIError.invalid("init_images", "is required: a list with one base64 PNG")
        }
        let image = try decodeBase64PNG(first, field: "init_images")
        let mask = try f.string("mask").map { try decodeBase64PNG($0, field: "mask") }
        let strength = try f.number("denoising_strength") ?? defaultDenoisingStrength
        guard strength.isFinite, strength > 0, strength <= 1 else {
            throw APIError.invalid("denoising_strength", "must be greater than 0 and at most 1 (got \(strength))")
        }
        if let mask, mask.width != image.width || mask.height != image.height {
            throw APIError.invalid("mask", "is \(mask.width)x\(mask.height) but the init image is \(image.width)x\(image.height): they must have the same size")
        }
        (p.width, p.height) = resolveGenerationSize(width: try f.int("width", in: anyCount), height: try f.int("height", in: anyCount),
                                                    initImage: image, modelDefault: (p.width, p.height))
        try p.validate()
        let input = ImageInput(image: image, mask: mask, strength: strength)
        guard ImageInput.beginIndex(steps: p.steps, strength: strength) < p.steps else {
            throw APIError.invalid("denoising_strength", "\(strength) × \(p.steps) steps leaves no denoising step: raise denoising_strength or steps")
        }
        return (p, input)
    }

    /// A base64 PNG (a `data:image/png;base64,` prefix is allowed), its size checked from the
    /// header before it is decoded; every failure is a 422 naming `field`.
    static func decodeBase64PNG(_ text: String, field: String) throws -> RGBImage {
        var payload = Substring(text)
        if payload.hasPrefix("data:"), let comma = payload.firstIndex(of: ",") {
            payload = payload[payload.index(after: comma)...]
        }
        guard !payload.isEmpty, let data = Data(base64Encoded: String(payload), options: .ignoreUnknownCharacters), !data.isEmpty else {
            throw APIError.invalid(field, "is not valid base64")
        }
        let bytes = [UInt8](data)
        if let (width, height) = pngHeaderSize(bytes), width > maxInitImageSide || height > maxInitImageSide {
            throw APIError.invalid(field, "a PNG of \(width)x\(height) pixels is too large (at most \(maxInitImageSide) per side)")
        }
        do {
            return try PNGReader.decode(bytes, name: field)
        } catch {
            throw APIError(422, "\(error)", field: field)  // "FIELD: not a PNG file" and the like
        }
    }

    /// Width and height from a PNG's IHDR chunk (the first, by the PNG spec); nil when the
    /// bytes do not start like a PNG (PNGReader then says why).
    static func pngHeaderSize(_ bytes: [UInt8]) -> (Int, Int)? {
        guard bytes.count >= 24, bytes[12..<16].elementsEqual("IHDR".utf8) else { return nil }
        func be32(_ at: Int) -> Int { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
        return (be32(16), be32(20))
    }
}
