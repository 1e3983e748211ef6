// The denoising loop of diffusers' "build your own pipeline" tutorial, written out with
// PocketDiffusion's components and the K-LMS scheduler:
//
//     swift run -c release [-Xswiftc -target-cpu -Xswiftc haswell] CustomPipeline MODEL.pdm "a photograph of an astronaut riding a horse" \
//         [--size 512] [--steps 25] [--guidance 7.5] [--seed 0] [-o custom.png] [--latents custom.npy]
//
// For the same settings its latents equal `pocketsd generate --scheduler lms
// --seed-mode batch --precision f32` bit for bit: the built-in pipeline runs the same
// stages (its pool is f32; `auto` means bf16 or int8 products for int8 files on CPUs
// with bf16 or int8 dot products).
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
let size = Int(option("--size", "512", from: &args)) ?? 512
let steps = Int(option("--steps", "25", from: &args)) ?? 25
let guidance = Float(option("--guidance", "7.5", from: &args)) ?? 7.5
let seed = UInt64(option("--seed", "0", from: &args)) ?? 0
let output = option("-o", "custom.png", from: &args)
let latentsPath = option("--latents", "", from: &args)
guard let modelPath = args.first else {
    print("usage: CustomPipeline MODEL.pdm [PROMPT] [--size N] [--steps N] [--guidance G] [--seed S] [-o OUT.png]")
    exit(2)
}
let prompt = args.count > 1 ? args[1] : "a photograph of an astronaut riding a horse"

do {
    // 1. The model file and the pieces it stores.
    let file = try ModelFileReader(path: modelPath)
    let tokenizer = try file.clipTokenizer()
    let pool = ThreadPool(threads: ThreadPool.defaultThreadCount)

    // 2. Text embeddings: the empty prompt (unconditional) and the prompt, in one batch.
    let textEncoder = try CLIPTextModel(config: file.textEncoderConfig(), weights: file.component("text_encoder"))
    let ids = tokenizer.tokenize("") + tokenizer.tokenize(prompt)
    let embeddings = try textEncoder.encode(ids: ids, batch: 2, pool: pool)

    // 3. Random latents from a seeded, torch-compatible generator, scaled by the scheduler.
    let unetConfig = try file.unetConfig()
    let vaeConfig = try file.vaeConfig()
    let factor = vaeConfig.upsamplingFactor
    let (h, w, channels) = (size / factor, size / factor, unetConfig.inChannels)
    var scheduler = try LMSDiscreteScheduler(config: file.schedulerConfig(), steps: steps)
    var generator = TorchGenerator(seed: seed)
    var latents = generator.randn(count: channels * h * w).map { $0 * scheduler.initNoiseSigma }

    // 4. The loop: predict the noise for both halves, guide, step.
    let unet = try UNet2DConditionModel(config: unetConfig, weights: file.component("unet"))
    for (i, t) in scheduler.timesteps.enumerated() {
        let input = scheduler.scaleModelInput(latents, stepIndex: i)
        let noise = unet.predictNoise(sample: input + input, batch: 2, height: h, width: w, timestep: t,
                                      context: embeddings, contextTokens: tokenizer.maxLength, pool: pool)
        let n = latents.count
        let guided = (0..<n).map { noise[$0] + guidance * (noise[n + $0] - noise[$0]) }
        latents = scheduler.step(modelOutput: guided, stepIndex: i, sample: latents, generator: &generator)
        print("step \(i + 1)/\(steps)")
    }
    if !latentsPath.isEmpty {
        try AtomicFile.write(latentsPath, bytes: NPYArray.encode(shape: [1, channels, h, w], floats: latents))
    }

    // 5. Decode latents / scaling_factor with the VAE and save the picture.
    let vae = try AutoencoderKL(config: vaeConfig, weights: file.component("vae"))
    let pixels = vae.decode(latents: latents.map { $0 / Float(vaeConfig.scalingFactor) }, batch: 1,
                            height: h, width: w, pool: pool)
    let image = pixels.withUnsafeBufferPointer { RGBImage(decoded: $0, width: size, height: size) }
    try PNGWriter.write(image, to: output)
    print("wrote \(output)")
} catch {
    print("CustomPipeline: \(error)")
    exit(1)
}
