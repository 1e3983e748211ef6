import ArgumentParser
import SDKernels
import SDPipeline

extension PrecisionChoice {
    /// The help text of `--precision`, shared by generate and bench.
    static let help = "Matrix-product precision: auto (for int8 model files bf16 when the kernels in use have bf16 dot products, avx512-bf16 or amx; else int8 where the CPU has int8 dot products; else f32), f32 (exact), bf16 (activations rounded to bfloat16; faster only with bf16 dot products) or int8 (int8 model files: linear layers and convolutions run as GEMM on int8 activations, per block of 32 as stable-diffusion.cpp's q8_0, and attention's Q·Kᵀ too where bf16 dot products are missing; faster with int8 dot products, AVX512-VNNI, AVX-VNNI or arm64 sdot)."

    /// `--precision`'s value, or a usage error that lists the choices.
    static func parse(_ text: String) throws -> PrecisionChoice {
        guard let choice = PrecisionChoice(rawValue: text) else {
            throw ValidationError("--precision must be one of \(allCases.map(\.rawValue).joined(separator: ", ")) (got \(text))")
        }
        return choice
    }
}

/// The help text of `--threads`, shared by generate, bench and serve.
let threadsHelp = ArgumentHelp(stringLiteral:
    "Worker threads (default: the CPUs this process may use: the online ones, fewer under an affinity mask such as taskset's or a cgroup CPU quota such as docker --cpus).")

extension StableDiffusionPipeline {
    /// Parses `--precision` and applies it, refusing a choice this model file cannot run.
    func usePrecision(option text: String) throws {
        let choice = try PrecisionChoice.parse(text)
        if let reason = unsupportedReason(choice) { throw PipelineError.invalidRequest("--precision \(text): \(reason)") }
        usePrecision(choice)
    }
}

/// " (int8 products: NAME; attention: PRODUCTS)" under `--precision int8`, for the reports;
/// else "".
func int8Details(_ precision: Kernels.Precision) -> String {
    precision == .int8
        ? " (int8 products: \(Kernels.variant.int8KernelName); attention: \(precision.attention.rawValue))" : ""
}
