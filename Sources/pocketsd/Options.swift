import ArgumentParser
import SDPipeline

extension PrecisionChoice {
    /// The help text of `--precision`, shared by generate and bench.
    static let help = "Matrix-product precision: auto (bf16 for int8 model files when the kernels in use have bf16 dot products, avx512-bf16 or amx; else f32), f32 (exact) or bf16 (activations rounded to bfloat16; faster only with bf16 dot products)."

    /// `--precision`'s value, or a usage error that lists the choices.
    static func parse(_ text: String) throws -> PrecisionChoice {
        guard let choice = PrecisionChoice(rawValue: text) else {
            throw ValidationError("--precision must be one of \(allCases.map(\.rawValue).joined(separator: ", ")) (got \(text))")
        }
        return choice
    }
}
