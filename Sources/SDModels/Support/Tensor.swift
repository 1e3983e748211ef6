/// One activation in the kernels' channel-major layout: `[channels, batch, height, width]`
/// (a token sequence is `height = tokens, width = 1`). The buffer is released when the last
/// reference goes, so model code frees an intermediate simply by dropping it; a class
/// (not an array) so that passing it around never copies.
///
/// Inside `ActivationArena.run` every buffer is the next planned slot of the phase's arena
/// and releasing it does nothing (the plan already gave its bytes to later tensors); while
/// a plan is recorded it is shared scratch; elsewhere it is a plain allocation (see
/// ActivationArena.swift). Either way, the order in which tensors are made and dropped is
/// what the plan is: model code keeps it independent of the values.
final class Tensor {
    let channels: Int
    let batch: Int
    let height: Int
    let width: Int
    let data: UnsafeMutablePointer<Float>
    /// Where `data` came from, with its slot there; nil for a plain allocation.
    private let source: ActivationSource?
    private let slot: Int

    init(channels: Int, batch: Int, height: Int, width: Int) {
        self.channels = channels
        self.batch = batch
        self.height = height
        self.width = width
        let count = max(1, channels * batch * height * width)
        let bytes = count * MemoryLayout<Float>.stride
        if let source = ActivationContext.current, let buffer = source.allocate(bytes) {
            data = buffer.pointer.bindMemory(to: Float.self, capacity: count)
            self.source = source
            slot = buffer.slot
        } else {
            data = PlainActivations.allocate(bytes).bindMemory(to: Float.self, capacity: count)
            source = nil
            slot = -1
        }
    }

    /// A token sequence `[channels, batch, tokens]`.
    convenience init(channels: Int, batch: Int, tokens: Int) {
        self.init(channels: channels, batch: batch, height: tokens, width: 1)
    }

    /// An uninitialised tensor with the same batch and spatial size.
    convenience init(channels: Int, like x: Tensor) {
        self.init(channels: channels, batch: x.batch, height: x.height, width: x.width)
    }

    deinit {
        if let source {
            source.release(slot: slot)
        } else {
            PlainActivations.free(UnsafeMutableRawPointer(data), bytes: max(1, count) * MemoryLayout<Float>.stride)
        }
    }

    var pixels: Int { height * width }
    /// Columns of the `[channels, columns]` matrix the kernels see.
    var columns: Int { batch * height * width }
    var count: Int { channels * columns }
    var pointer: UnsafePointer<Float> { UnsafePointer(data) }

    /// From a PyTorch-layout `[B, C, P]` array (NCHW images, or `[B, C, T]`).
    static func fromBatchMajor(_ values: UnsafePointer<Float>, batch: Int, channels: Int,
                               height: Int, width: Int) -> Tensor {
        let t = Tensor(channels: channels, batch: batch, height: height, width: width)
        let p = height * width
        for b in 0..<batch {
            for c in 0..<channels {
                (t.data + (c * batch + b) * p).update(from: values + (b * channels + c) * p, count: p)
            }
        }
        return t
    }

    /// Back to PyTorch's `[B, C, H, W]`.
    func toBatchMajor() -> [Float] {
        let p = pixels
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            for b in 0..<batch {
                for c in 0..<channels {
                    (out.baseAddress! + (b * channels + c) * p).initialize(from: data + (c * batch + b) * p, count: p)
                }
            }
            initialized = count
        }
    }

    /// Copies columns `range` of the `[channels, columns]` matrix into `buffer`, which then
    /// holds a contiguous `[channels, range.count]` matrix.
    func copyColumns(_ range: Range<Int>, into buffer: UnsafeMutablePointer<Float>) {
        let n = range.count, cols = columns
        for c in 0..<channels {
            (buffer + c * n).update(from: data + c * cols + range.lowerBound, count: n)
        }
    }

    /// Batch element `b` as its own `[channels, 1, H, W]` tensor (itself when the batch is 1).
    func batchElement(_ b: Int) -> Tensor {
        if batch == 1 { return self }
        let t = Tensor(channels: channels, batch: 1, height: height, width: width)
        copyColumns((b * pixels)..<((b + 1) * pixels), into: t.data)
        return t
    }

    /// Concatenation along channels, `[a; b]` (torch.cat(dim=1)); in channel-major order
    /// that is two contiguous copies.
    static func concatChannels(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.batch == b.batch && a.height == b.height && a.width == b.width)
        let t = Tensor(channels: a.channels + b.channels, like: a)
        t.data.update(from: a.data, count: a.count)
        (t.data + a.count).update(from: b.data, count: b.count)
        return t
    }
}

extension Tensor {
    /// Token-major `[B, T, C]` rows (transformers' hidden states) to `[C, B·T]`.
    static func fromTokenRows(_ values: UnsafePointer<Float>, batch: Int, tokens: Int, channels: Int) -> Tensor {
        let t = Tensor(channels: channels, batch: batch, tokens: tokens)
        let cols = batch * tokens
        for col in 0..<cols {
            for c in 0..<channels { t.data[c * cols + col] = values[col * channels + c] }
        }
        return t
    }

    /// `[C, B·T]` back to `[B, T, C]` rows.
    func toTokenRows() -> [Float] {
        let cols = columns
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            for col in 0..<cols {
                for c in 0..<channels { out[col * channels + c] = data[c * cols + col] }
            }
            initialized = count
        }
    }
}
