/// How a model spends memory while it runs. These trade memory against speed, never
/// accuracy: residency only moves pages (bit-identical results), and chunking and batch
/// splitting divide independent work (identical up to the kernels' float rounding).
public struct MemoryOptions {
    /// Told before and after each module uses its weights; nil keeps every page mapped
    /// (the `keep` policy). See `StreamingResidency`.
    public var residency: WeightResidency?
    /// Token-wise work (attention queries, the GEGLU feed-forward) runs over chunks of
    /// columns so that its largest intermediate holds at most about this many floats; an
    /// `[tokens × 4·channels]` or `[tokens × tokens]` matrix is never whole. The
    /// up-sampler's 4× image is made in row bands of about this size. `Int.max` turns
    /// chunking off.
    public var chunkFloats: Int
    /// The UNet runs at most this many samples at once (a guided image is two: unconditional
    /// and conditional); its activations scale with it. The per-sample results do not depend
    /// on how the batch is split.
    public var maxBatch: Int

    /// 2^20 floats = 4 MiB: SD 1.5's feed-forward at 512² then runs 384 tokens at a time,
    /// wide enough that the GEMMs keep their speed.
    public static let defaultChunkFloats = 1 << 20

    /// Options with the given residency, chunk size (floats) and UNet batch limit (samples);
    /// the defaults keep every page mapped and chunk at `defaultChunkFloats`.
    public init(residency: WeightResidency? = nil, chunkFloats: Int = MemoryOptions.defaultChunkFloats,
                maxBatch: Int = .max) {
        precondition(chunkFloats >= 1 && maxBatch >= 1)
        self.residency = residency
        self.chunkFloats = chunkFloats
        self.maxBatch = maxBatch
    }

    /// Columns per chunk for an intermediate of `rows` floats per column: a multiple of
    /// `granule` (the kernels' column tile), at least one granule.
    func chunkColumns(rows: Int, total: Int, granule: Int = 64) -> Int {
        let fit = chunkFloats / max(rows, 1)
        if fit >= total { return max(total, 1) }
        return max(granule, fit / granule * granule)
    }
}
