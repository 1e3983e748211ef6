import SDSchedulers

/// The generation settings as AUTOMATIC1111 writes them into a PNG's `parameters` text
/// chunk, so tools that read A1111 images can read ours:
///
///     a photo of an astronaut
///     Negative prompt: blurry
///     Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15
public func automatic1111Parameters(promptIndex i: Int, request: GenerationRequest, modelName: String) -> String {
    var lines = [request.prompts[i]]
    let negative = request.negativePrompt(for: i)
    if !negative.isEmpty { lines.append("Negative prompt: \(negative)") }
    let cfg = request.guidanceScale == request.guidanceScale.rounded() ? "\(Int(request.guidanceScale))" : "\(request.guidanceScale)"
    lines.append("Steps: \(request.steps), Sampler: \(request.scheduler.displayName), CFG scale: \(cfg), "
                 + "Seed: \(request.seed), Size: \(request.width)x\(request.height), Model: \(modelName)")
    return lines.joined(separator: "\n")
}
