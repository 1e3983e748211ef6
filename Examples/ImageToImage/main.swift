// img2img with the built-in pipeline, as a library user writes it: an init image, a
// prompt, and how far to move away from the image (diffusers' StableDiffusionImg2ImgPipeline).
//
//     swift run -c release [-Xswiftc -target-cpu -Xswiftc haswell] ImageToImage MODEL.pdm INIT.png "a watercolor painting" \
//         [--strength 0.75] [--steps 30] [--guidance 7.5] [--seed 0] [-o out.png] [--latents out.npy]
//
// Its latents equal `pocketsd generate --init-image INIT.png --strength S` for the same
// settings: the command runs this same pipeline.
import Glibc
import PocketDiffusion

var args = Array(CommandLine.arguments.dropFirst())
/// Removes `name VALUE` from `args` and returns VALUE, or `fallback` when absent. (`args` is
/// passed in: a top-level variable belongs to the main actor in Swift 6.)
func option(_ name: String, _ fallback: String, from args: inout [String]) -> String {
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return fallback }
    defer { args.removeSubrange(i...(i + 1)) }
    return args[i + 1]
}
let strength = Double(option("--strength", "0.75", from: &args)) ?? 0.75
let steps = Int(option("--steps", "30", from: &args)) ?? 30
let guidance = Float(option("--guidance", "7.5", from: &args)) ?? 7.5
let seed = UInt64(option("--seed", "0", from: &args)) ?? 0
let output = option("-o", "img2img.png", from: &args)
let latentsPath = option("--latents", "", from: &args)
guard args.count >= 3 else {
    print("usage: ImageToImage MODEL.pdm INIT.png PROMPT [--strength S] [--steps N] [--guidance G] [--seed S] [-o OUT.png]")
    exit(2)
}

do {
    let pipeline = try StableDiffusionPipeline(modelPath: args[0], threads: ThreadPool.defaultThreadCount)
    var request = GenerationRequest(prompts: [args[2]])
    request.imageInput = ImageInput(image: try PNGReader.read(path: args[1]), strength: strength)
    // The init image's size (rounded down to a multiple of 8), as diffusers does.
    (request.width, request.height) = resolveGenerationSize(width: nil, height: nil, initImage: request.imageInput?.image,
                                                            modelDefault: pipeline.defaultImageSize)
    request.steps = steps
    request.guidanceScale = guidance
    request.seed = seed
    let result = try pipeline.generate(request) { progress in
        if progress.phase == .denoising { print("step \(progress.step)/\(progress.totalSteps)") }
        return true  // returning false would cancel the run
    }
    if !latentsPath.isEmpty {
        try AtomicFile.write(latentsPath, bytes: NPYArray.encode(shape: result.latentShape, floats: result.latents))
    }
    try PNGWriter.write(result.images[0], to: output)
    print("wrote \(output)")
} catch {
    print("ImageToImage: \(error)")
    exit(1)
}
