import Synchronization

/// How often the code paths that only real model sizes take have run: Winograd F(4×4, 3×3)
/// needs ≥ 256 input channels, chunked attention more tokens than one chunk holds, and a
/// split UNet batch a latent as large as 512². Tests on the mid-size parity model
/// (Tests/SDPipelineTests/MidSizeParityTests.swift) read them to prove that the comparison
/// with diffusers went through those paths. One relaxed atomic add per call (a convolution,
/// an attention layer, a UNet call), never per element; runs that only plan activations
/// (`Kernels.isPlanning`) are not counted.
public enum PathCounters {
    /// A kernel path whose uses are counted.
    public enum Path: CaseIterable, Sendable {
        /// `Winograd43.conv3x3` calls.
        case winograd43Convolution
        /// Attention layers whose queries ran in more than one chunk (`MemoryOptions.chunkFloats`).
        case chunkedAttention
        /// UNet calls whose batch ran in several slices (`MemoryOptions.maxBatch`).
        case splitUNetBatch
    }

    private static let winograd43 = Atomic<Int>(0)
    private static let chunkedAttention = Atomic<Int>(0)
    private static let splitUNetBatch = Atomic<Int>(0)

    private static func counter(_ path: Path) -> Int {
        switch path {
        case .winograd43Convolution: winograd43.load(ordering: .relaxed)
        case .chunkedAttention: chunkedAttention.load(ordering: .relaxed)
        case .splitUNetBatch: splitUNetBatch.load(ordering: .relaxed)
        }
    }

    /// Records one run of `path` (not while planning).
    public static func record(_ path: Path) {
        if Kernels.isPlanning { return }
        switch path {
        case .winograd43Convolution: winograd43.add(1, ordering: .relaxed)
        case .chunkedAttention: chunkedAttention.add(1, ordering: .relaxed)
        case .splitUNetBatch: splitUNetBatch.add(1, ordering: .relaxed)
        }
    }

    /// The counts since the process started; compare two of them to count a run.
    public static func snapshot() -> [Path: Int] {
        Dictionary(uniqueKeysWithValues: Path.allCases.map { ($0, counter($0)) })
    }
}
