import SDSchedulers

/// The generation settings of image `i` of a run (batch order: prompt by prompt, the
/// images of one prompt together) as AUTOMATIC1111 writes them into a PNG's `parameters`
/// text chunk, so tools that read A1111 images can read ours and the image can be made
/// again from them alone:
///
///     a photo of an astronaut
///     Negative prompt: blurry
///     Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 43, Size: 512x512, Model: sd15
///
/// With per-image seeds the seed is the image's own (seed + i); with one generator for the
/// batch it is the batch's, and `Batch size`/`Batch pos` say which image of that batch it
/// is, as A1111 writes them. A negative prompt is recorded only when guidance used it.
public func automatic1111Parameters(image i: Int, request: GenerationRequest, modelName: String) -> String {
    let promptIndex = i / request.imagesPerPrompt
    var lines = [request.prompts[promptIndex]]
    let negative = request.negativePrompt(for: promptIndex)
    if !negative.isEmpty && request.usesGuidance { lines.append("Negative prompt: \(negative)") }
    var fields = ["Steps: \(request.steps)", "Sampler: \(request.scheduler?.displayName ?? "model default")",
                  "CFG scale: \(automatic1111Number(request.guidanceScale))", "Seed: \(request.seed(ofImage: i))",
                  "Size: \(request.width)x\(request.height)", "Model: \(modelName)"]
    if let input = request.imageInput { fields.append("Denoising strength: \(input.strength)") }  // A1111's img2img key
    if request.seedMode == .batch && request.imageCount > 1 {
        fields += ["Batch size: \(request.imageCount)", "Batch pos: \(i)", "Seed mode: batch"]
    }
    if request.guidanceRescale > 0 { fields.append("CFG Rescale: \(automatic1111Number(request.guidanceRescale))") }
    lines.append(fields.joined(separator: ", "))
    return lines.joined(separator: "\n")
}

/// The text chunks of a grid of all the run's images (`rows` × `columns`): `parameters`
/// holds the first image's settings (what A1111 readers load) with the grid's layout and
/// real pixel size added; `grid` lists every cell's own parameters, so every prompt and
/// seed is recorded.
public func automatic1111GridText(request: GenerationRequest, modelName: String, rows: Int, columns: Int) -> [(String, String)] {
    let first = automatic1111Parameters(image: 0, request: request, modelName: modelName)
        + ", Grid: \(rows)x\(columns), Grid size: \(request.width * columns)x\(request.height * rows)"
    let cells = (0..<request.imageCount).map { i in
        "Image \(i + 1) (row \(i / columns + 1), column \(i % columns + 1)):\n"
            + automatic1111Parameters(image: i, request: request, modelName: modelName)
    }
    return [("parameters", first), ("grid", cells.joined(separator: "\n\n"))]
}

/// 7 for 7.0, 7.5 for 7.5: how A1111 prints its numbers.
func automatic1111Number(_ v: Float) -> String {
    v == v.rounded() && abs(v) < 1e9 ? "\(Int(v))" : "\(v)"
}
