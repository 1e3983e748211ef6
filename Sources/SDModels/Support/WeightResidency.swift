import SDFormat
import SDKernels

/// Which weight pages stay in memory while a model runs (DESIGN §5, docs/MEMORY.md).
///
/// Weights are always read in place from the mapped model file. Every Linear and Conv2d,
/// and every module around them (a resnet, a transformer, an attention, a CLIP layer, a
/// sampler), brackets its work with `willUse`/`didUse` and its key prefix
/// ("down_blocks.1.resnets.0.conv1.", as the model's WeightSource names the keys). When a
/// model call returns, `didUse` with the model's own prefix (usually "") says the whole
/// model is done with. Keeping pages is doing nothing (`nil` residency in the models);
/// `StreamingResidency` drops them after each use.
///
/// Calls come from the thread that runs the model, in execution order.
public protocol WeightResidency: AnyObject {
    func willUse(_ keyPrefix: String)
    func didUse(_ keyPrefix: String)
}

/// The `stream` policy: after a module has run, its pages are dropped from this process
/// (madvise DONTNEED: they stay in the page cache while the machine has room, and are read
/// again on the next touch); before it runs, its pages and the next module's (the
/// converter lays tensors out in execution order) are requested ahead (WILLNEED), so a
/// cold or evicted file is read in large sequential requests rather than page by page.
/// Resident weights are then about one layer's (the read-ahead sits in the page cache, not
/// in this process).
public final class StreamingResidency: WeightResidency, @unchecked Sendable {
    let file: MappedFile
    /// Key prefix (ending in ".", or "" for the component) → bytes its tensors occupy.
    let ranges: [String: Range<Int>]
    let prefetch: Bool

    /// The residency of one component ("unet", "vae", "text_encoder") of a model file, for
    /// a model bound to `reader.component(component)`; "" for a model bound to the reader
    /// itself (keys then start with the component).
    public init(file reader: ModelFileReader, component: String, prefetch: Bool = true) {
        file = reader.file
        self.prefetch = prefetch
        var ranges: [String: Range<Int>] = [:]
        let componentPrefix = component.isEmpty ? "" : component + "."
        for e in reader.entries where e.key.hasPrefix(componentPrefix) {
            let lo = min(e.dataRange.lowerBound, e.scalesRange?.lowerBound ?? .max)
            let hi = max(e.dataRange.upperBound, e.scalesRange?.upperBound ?? 0)
            // Every dotted prefix of the key: "", "down_blocks.", "down_blocks.0.", …
            let key = e.key.dropFirst(componentPrefix.count)
            var prefixes = [""]
            var end = key.startIndex
            while let dot = key[end...].firstIndex(of: ".") {
                prefixes.append(String(key[...dot]))
                end = key.index(after: dot)
            }
            for p in prefixes {
                let r = ranges[p].map { min($0.lowerBound, lo)..<max($0.upperBound, hi) } ?? lo..<hi
                ranges[p] = r
            }
        }
        self.ranges = ranges
    }

    /// The bytes of the tensors under `keyPrefix`, if any.
    public func byteRange(_ keyPrefix: String) -> Range<Int>? { ranges[keyPrefix] }

    /// Called before the module under `keyPrefix` runs: prefetches its bytes and as many again after them.
    public func willUse(_ keyPrefix: String) {
        guard prefetch, let r = ranges[keyPrefix] else { return }
        // This module and as many bytes again after it: usually the next module.
        file.prefetch(r.lowerBound..<min(file.byteCount, r.upperBound + r.count))
    }

    /// Called after the module under `keyPrefix` has run: releases its pages.
    public func didUse(_ keyPrefix: String) {
        if let r = ranges[keyPrefix] { file.release(r) }
    }
}

/// A module's weights as the residency policy sees them; `scope.using { … }` brackets the
/// work that reads them. Made by `Weights.scope` at bind time. While an activation plan is
/// recorded (`Kernels.isPlanning`: no kernel reads a weight) it does nothing.
struct ResidencyScope {
    let residency: WeightResidency?
    let keyPrefix: String

    @inline(__always)
    func using<R>(_ body: () throws -> R) rethrows -> R {
        guard let residency, !Kernels.isPlanning else { return try body() }
        residency.willUse(keyPrefix)
        defer { residency.didUse(keyPrefix) }
        return try body()
    }

    /// For a model's root scope: called when a whole model call is done, so that the small
    /// top-level layers without a scope of their own are released too.
    func finished() {
        if !Kernels.isPlanning { residency?.didUse(keyPrefix) }
    }
}
