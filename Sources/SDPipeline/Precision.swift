import SDFormat
import SDKernels

/// `--precision`: the operand precision of the matrix products (`Kernels.Precision`).
public enum PrecisionChoice: String, CaseIterable, Sendable {
    /// For int8 model files: bf16 when the kernel variant has native bf16 dot products
    /// (`KernelVariant.hasNativeBF16`), else int8 when it has int8 dot products
    /// (`hasNativeInt8`: AVX512-VNNI, AVX-VNNI, arm64 `sdot`), else f32: who converted to
    /// int8 chose speed over exactness (on the parity tests' tiny models int8 weights move
    /// the final latents by ≤ 0.6 % relative RMS, int8 with bf16 by ≤ 1.2 %, with int8
    /// activations by ≤ 3 %; for ≈ 1.7× faster UNet steps and VAE decodes on SD 1.5 with
    /// bf16, ≈ 1.8–2× faster UNet steps with int8 where bf16 is missing: docs/BENCHMARKS.md).
    /// fp16/fp32 files keep the exact mode.
    case auto
    /// Exact: f32 operands (the diffusers parity of the tests).
    case f32
    /// bfloat16 operands, f32 accumulation (the portable twin where the CPU lacks bf16).
    case bf16
    /// int8 activations (per column and block of 32, as stable-diffusion.cpp's q8_0) times the
    /// file's int8 weights with int32 sums, for the linear layers and implicit-GEMM
    /// convolutions (`Kernels.Precision.int8`); attention and the Winograd convolutions in bf16
    /// where the CPU has bf16 dot products, else f32 with attention's scores in int8. Only for
    /// int8 model files
    /// (`unsupportedReason`).
    case int8
}

extension StableDiffusionPipeline {
    /// What `choice` means for this model file on this CPU.
    public func precision(for choice: PrecisionChoice) -> Kernels.Precision {
        switch choice {
        case .f32: return .f32
        case .bf16: return .bf16
        case .int8: return .int8
        case .auto:
            guard Self.unetWeightType(file) == .q8 else { return .f32 }
            return Kernels.variant.hasNativeBF16 ? .bf16 : Kernels.variant.hasNativeInt8 ? .int8 : .f32
        }
    }

    /// Why `choice` cannot run this model file, or nil when it can: int8 products take the
    /// file's int8 weights as they are, so they need a file converted to int8.
    public func unsupportedReason(_ choice: PrecisionChoice) -> String? {
        let stored = Self.unetWeightType(file)
        guard choice == .int8, stored != .q8 else { return nil }
        return "int8 products need a model converted with --weights int8 (this file's UNet weights are \(stored == .f16 ? "fp16" : "fp32"))"
    }

    /// Sets the precision this pipeline's following runs use.
    public func usePrecision(_ choice: PrecisionChoice) {
        precision = precision(for: choice)
    }

    /// The type most UNet weight matrices are stored in: what the kernels run on.
    public static func unetWeightType(_ file: ModelFileReader) -> WeightType {
        var elements: [TensorDType: Int] = [:]
        for e in file.entries where e.component == "unet" && e.shape.count >= 2 { elements[e.dtype, default: 0] += e.elementCount }
        switch elements.max(by: { $0.value < $1.value })?.key {
        case .q8: return .q8
        case .f16: return .f16
        default: return .f32
        }
    }
}
