import SDFormat

/// Source tensors of any float dtype as float32. Its own file, apart from the converter, so
/// that the LoRA reader (which also reads LoRA matrices through it) compiles without the
/// rest of the converter: tools/fuzz.sh builds the `lora` target from LoRA.swift and this.
enum SourceFloats {
    /// Source elements [from, from + count) as Float.
    static func load(_ dtype: TensorDType, _ base: UnsafeRawPointer, from: Int, count: Int,
                     into f: UnsafeMutablePointer<Float>, key: String, path: String) throws {
        switch dtype {
        case .f32:
            // Source offsets need not be aligned: copy or load unaligned.
            UnsafeMutableRawPointer(f).copyMemory(from: base + from * 4, byteCount: count * 4)
        case .f16:
            let h = base + from * 2
            for i in 0..<count { f[i] = Float(h.loadUnaligned(fromByteOffset: i * 2, as: Float16.self)) }
        case .bf16:
            let b = base + from * 2
            for i in 0..<count { f[i] = Float(bitPattern: UInt32(b.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16) }
        case .f64:
            let d = base + from * 8
            for i in 0..<count { f[i] = Float(d.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
        default:
            throw FormatError(path, "tensor \(key) has dtype \(dtype.rawValue); weights must be F32, F16 or BF16")
        }
        for i in 0..<count where !f[i].isFinite {
            throw FormatError(path, "tensor \(key) contains NaN or infinity")
        }
    }
}
