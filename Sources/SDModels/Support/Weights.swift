import SDFormat
import SDKernels

/// Binds weights by diffusers state-dict key under a prefix ("unet.", "down_blocks.0.", …),
/// so a module's init reads like the checkpoint. Every tensor is checked against the shape
/// the config implies; a mismatch or missing key throws `FormatError` naming the full key.
/// It also carries the model's memory options down to the modules that use them.
struct Weights {
    let source: WeightSource
    let prefix: String
    let memory: MemoryOptions

    init(source: WeightSource, prefix: String, memory: MemoryOptions = MemoryOptions()) {
        self.source = source
        self.prefix = prefix
        self.memory = memory
    }

    /// The weights of a submodule: `w["down_blocks.0"]` has keys "…down_blocks.0.*".
    subscript(_ name: String) -> Weights { Weights(source: source, prefix: prefix + name + ".", memory: memory) }
    subscript(_ name: String, _ index: Int) -> Weights { self["\(name).\(index)"] }

    /// This module's weights for the residency policy (keys as the WeightSource names them).
    var scope: ResidencyScope { ResidencyScope(residency: memory.residency, keyPrefix: prefix) }

    /// A matrix read in place from the mapping (never copied).
    func matrix(_ key: String, _ shape: [Int]) throws -> WeightMatrix {
        try source.requireMatrix(prefix + key, shape: shape)
    }

    /// A small vector copied to the heap (biases, norm parameters).
    func vector(_ key: String, _ count: Int) throws -> [Float] {
        try source.requireFloats(prefix + key, shape: [count])
    }

    /// A tensor view in place (embedding tables).
    func view(_ key: String, _ shape: [Int]) throws -> TensorView {
        let t = try source.require(prefix + key, shape: shape)
        guard t.dtype.isFloat || t.dtype == .q8 else {
            throw FormatError(source.sourceName, "tensor \(prefix + key) has unsupported dtype \(t.dtype.rawValue)")
        }
        return t
    }
}
