import ArgumentParser
import SDPipeline

/// `generate --init-image IN.png [--mask MASK.png] [--strength S]`: img2img and inpainting.
extension GenerateCommand {
    /// Flag checks that need no file: a mask needs an init image, strength is in (0, 1].
    func validateImageInputFlags() throws {
        if mask != nil && initImage == nil { throw ValidationError("--mask needs --init-image") }
        if strength != nil && initImage == nil { throw ValidationError("--strength needs --init-image") }
        if let strength, !(strength > 0 && strength <= 1) {
            throw ValidationError("--strength must be greater than 0 and at most 1 (got \(strength))")
        }
    }

    /// The init image and mask, read (and checked) before the model is loaded; nil without
    /// --init-image. A mask of another size than the init image is refused.
    func loadImageInput() throws -> ImageInput? {
        guard let initImage else { return nil }
        let input = ImageInput(image: try PNGReader.read(path: initImage), mask: try mask.map { try PNGReader.read(path: $0) },
                               strength: strength)
        if let m = input.mask, m.width != input.image.width || m.height != input.image.height {
            throw PipelineError.invalidRequest("--mask is \(m.width)x\(m.height) but --init-image is \(input.image.width)x\(input.image.height): give a mask of the same size")
        }
        return input
    }
}
