import Glibc

// libFuzzer target: a LoRA safetensors file matched against a fixed small model. Exercises
// the safetensors reader, kohya / PEFT / diffusers key parsing, `.alpha` tensors, PEFT's
// `lora_adapter_metadata` alphas, the shape checks, and the merge that reads the matrices
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
let fuzzShapes = Dictionary(uniqueKeysWithValues: fuzzModel.map { ("\($0.component).\($0.key)", $0.shape) })

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLoRA(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    withMappedInput(data, size) { _ in
        // The reader opens the file by path, as `--lora FILE` does.
        let plan = try LoRAPlan(specs: [LoRASpec(path: "/proc/self/fd/\(inputFile)", scale: 0.75)], tensors: fuzzModel)
        for key in plan.updates.keys.sorted() {
            guard let shape = fuzzShapes[key] else { fatalError("the plan names \(key), which the model has not") }
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
    return 0
}
