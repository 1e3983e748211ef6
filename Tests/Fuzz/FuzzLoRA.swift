import Glibc

// libFuzzer target: a LoRA safetensors file matched against two fixed small models (SD 1.x and
// SDXL). Exercises the safetensors reader, kohya / PEFT / diffusers key parsing (SDXL's te1/te2
// and original-layout UNet names too), `.alpha` tensors, PEFT's `lora_adapter_metadata` alphas, the
// shape checks, and the merge that reads the matrices
// (every row at once, then rows 1… as the converter's chunks do).

/// The model: keys and shapes of tiny-sd-b (the LoRA fixtures' base) for the modules the
/// seeds carry, plus tensors a LoRA must not match (1-D, not a weight, another component).
let fuzzModel: [(component: String, key: String, shape: [Int])] = [
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", [32, 32]),
    ("unet", "down_blocks.0.resnets.0.conv1.weight", [32, 32, 3, 3]),
    ("unet", "down_blocks.0.resnets.0.conv1.bias", [32]),
    ("unet", "down_blocks.0.attentions.0.proj_in.weight", [32, 32, 1, 1]),
    ("unet", "down_blocks.0.resnets.0.norm1.weight", [32]),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj.weight", [32, 32]),
    ("text_encoder", "text_model.encoder.layers.0.mlp.fc1.weight", [37, 32]),
    ("vae", "decoder.conv_in.weight", [32, 4, 3, 3]),
]

/// The same for an SDXL model (tiny-sdxl's shapes): its second text encoder, and the UNet keys'
/// names in Stability's original layout, which kohya's SDXL LoRAs use (the converter takes them
/// from CheckpointKeyNames, which this target does not compile).
let fuzzSDXLModel: [(component: String, key: String, shape: [Int])] = [
    ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", [32, 32]),
    ("unet", "down_blocks.0.resnets.0.conv1.weight", [16, 16, 3, 3]),
    ("unet", "down_blocks.0.resnets.0.conv1.bias", [16]),
    ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj.weight", [16, 16]),
    ("text_encoder_2", "text_model.encoder.layers.0.self_attn.q_proj.weight", [24, 24]),
]
let fuzzSDXLOriginalNames = [
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight": "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
    "down_blocks.0.resnets.0.conv1.weight": "input_blocks.1.0.in_layers.2.weight",
    "down_blocks.0.resnets.0.conv1.bias": "input_blocks.1.0.in_layers.2.bias",
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLoRA(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // Each input against both models: SD 1.x's names, then SDXL's (te1/te2, original layout).
    withMappedInput(data, size) { _ in
        try? merge(into: fuzzModel)
        try merge(into: fuzzSDXLModel, originalUNetKey: { fuzzSDXLOriginalNames[$0] })
    }
    return 0
}

/// Plans the LoRA in the input file against `model` and applies every update the way the
/// converter's chunks do.
func merge(into model: [(component: String, key: String, shape: [Int])],
           originalUNetKey: (String) -> String? = { _ in nil }) throws {
    let shapes = Dictionary(uniqueKeysWithValues: model.map { ("\($0.component).\($0.key)", $0.shape) })
    // The reader opens the file by path, as `--lora FILE` does.
    let plan = try LoRAPlan(specs: [LoRASpec(path: "/proc/self/fd/\(inputFile)", scale: 0.75)], tensors: model,
                            originalUNetKey: originalUNetKey)
    for key in plan.updates.keys.sorted() {
        guard let shape = shapes[key] else { fatalError("the plan names \(key), which the model has not") }
        let rows = shape[0], cols = shape.dropFirst().reduce(1, *)
        var chunk = [Float](repeating: 0.5, count: rows * cols)
        try chunk.withUnsafeMutableBufferPointer { c in
            try plan.apply(to: key, firstRow: 0, rowCount: rows, cols: cols, chunk: c.baseAddress!)
            try plan.apply(to: key, firstRow: 1, rowCount: rows - 1, cols: cols, chunk: c.baseAddress!)
        }
        plan.release(key)
    }
    blackHole += plan.reports.count
}
