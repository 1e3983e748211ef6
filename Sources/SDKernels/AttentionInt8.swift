/// The int8 scores of `Attention.attention` (`Kernels.Precision.int8` where the other
/// products run f32, i.e. no native bf16; non-causal): Sᵀ = K·Q runs on `I8Gemm.block`, the
/// softmax and O += V·P stay f32 as in the f32 path.
///
/// SageAttention's recipe for the first product: K is smoothed (each channel's mean over the
/// head's keys subtracted, which shifts every score of a query by the same q·mean and so
/// leaves the softmax as it is, while taking out the channel offsets that would otherwise
/// set the quantisation step) and quantised per key (one scale per A row, folded together
/// with log2(e)/√d into the kernel's row scale); Q is quantised per query and per 32
/// channels as any int8 activation (`I8Gemm.packRows`). The product of those bytes is exact
/// in int32. It is the half of attention's multiply-adds that tolerates int8; P · V keeps f32
/// (probabilities in one 8-bit step per block would lose the small ones).
extension Attention {
    /// One head's K as int8 A rows and their scales, and the query tile's packed Q.
    struct Int8Keys {
        /// Rows of `rowBytes` (⌈d/32⌉·32) bytes, one per key: round((k − mean) / step) + 128.
        let keys: UnsafeMutablePointer<UInt8>
        /// Per key: step · log2(e)/√d, the row scale that turns the int32 sums into scores in
        /// log2 units.
        let scales: UnsafeMutablePointer<Float>
        /// The query tile's Q as I8Gemm B panels.
        let queries: UnsafeMutableRawPointer
        /// [blockKeys][I8Gemm.panelColumns] f32 scores of one B panel, when f32 panels are
        /// narrower than it (split into them from here).
        let panelScores: UnsafeMutablePointer<Float>
        let rowBytes: Int

        /// Bytes of scratch (each region 64-byte aligned) for `tk` keys of depth `d` and a
        /// tile of `tileQueries`.
        static func bytes(keys tk: Int, headDim d: Int, tileQueries: Int) -> Int {
            let regions = regionBytes(keys: tk, headDim: d, tileQueries: tileQueries)
            return regions.reduce(0) { $0 + I8Gemm.roundUp64($1) }
        }

        /// Key rows up to a whole I8Gemm tile (the kernel reads them).
        static func paddedRows(keys tk: Int) -> Int { (tk + I8Gemm.tileRows - 1) / I8Gemm.tileRows * I8Gemm.tileRows }

        private static func regionBytes(keys tk: Int, headDim d: Int, tileQueries: Int) -> [Int] {
            let rows = paddedRows(keys: tk)
            let panels = (tileQueries + I8Gemm.panelColumns - 1) / I8Gemm.panelColumns
            return [rows * I8Gemm.rowBytes(depth: d), 4 * rows, panels * I8Gemm.panelStride(depth: d),
                    4 * blockKeys * I8Gemm.panelColumns]
        }

        /// The regions laid out from `base` (64-byte aligned).
        init(base: UnsafeMutableRawPointer, keys tk: Int, headDim d: Int, tileQueries: Int) {
            var offsets: [Int] = []
            var offset = 0
            for size in Self.regionBytes(keys: tk, headDim: d, tileQueries: tileQueries) {
                offsets.append(offset)
                offset += I8Gemm.roundUp64(size)
            }
            let rows = Self.paddedRows(keys: tk)
            rowBytes = I8Gemm.rowBytes(depth: d)
            keys = (base + offsets[0]).bindMemory(to: UInt8.self, capacity: rows * rowBytes)
            scales = (base + offsets[1]).bindMemory(to: Float.self, capacity: rows)
            queries = base + offsets[2]
            panelScores = (base + offsets[3]).bindMemory(to: Float.self, capacity: blockKeys * I8Gemm.panelColumns)
        }
    }

    /// One head's keys (k: [d rows of `rowStride`], contiguous along keys) smoothed and
    /// quantised into `s.keys`/`s.scales`; rows up to a whole I8Gemm tile are zero (128).
    /// `mean` has room for d floats.
    static func packKeysInt8(_ k: UnsafePointer<Float>, rowStride: Int, headDim d: Int, keys tk: Int,
                             scoreScale: Float, mean: UnsafeMutablePointer<Float>, into s: Int8Keys) {
        let lanes = V.scalarCount, width = s.rowBytes
        for e in 0..<d {
            let row = k + e * rowStride
            var sum = V(), j = 0
            while j + lanes <= tk { sum += V.load(row + j); j += lanes }
            var total = sum.sum()
            while j < tk { total += row[j]; j += 1 }
            mean[e] = total / Float(tk)
        }
        let magic = V(repeating: 12_582_912)
        let low = NativeI32(repeating: -127), high = NativeI32(repeating: 127)
        // `lanes` keys at a time: their channels are contiguous along the keys in k.
        var j0 = 0
        while j0 < tk {
            let count = min(lanes, tk - j0)
            @inline(__always) func load(_ e: Int) -> V {
                let row = k + e * rowStride + j0
                if count == lanes { return V.load(row) - V(repeating: mean[e]) }
                var x = V()
                for l in 0..<count { x[l] = row[l] - mean[e] }
                return x
            }
            var m = V()
            for e in 0..<d { m = V.vmax(m, load(e).magnitude) }
            // As I8Gemm.quantize: a zero row gets an infinite 127/m, capped, so every q is 0.
            let inverse = V.vmin(V(repeating: 127) / m, V(repeating: .greatestFiniteMagnitude))
            let step = m / V(repeating: 127) * V(repeating: scoreScale)
            for l in 0..<count { s.scales[j0 + l] = step[l] }
            // Four channels per 32-bit store: lane l of `quad` is key j0+l's bytes e ..< e+4.
            for e in stride(from: 0, to: width, by: 4) {
                var quad = NativeU32()
                for b in 0..<4 where e + b < d {
                    let q = ((load(e + b) * inverse + magic).bits &- magic.bits)
                        .clamped(lowerBound: low, upperBound: high)
                    quad |= NativeU32(truncatingIfNeeded: q & NativeI32(repeating: 0xFF)) &<< UInt32(8 * b)
                }
                quad ^= NativeU32(repeating: 0x8080_8080)
                for l in 0..<count {
                    UnsafeMutableRawPointer(s.keys).storeBytes(of: quad[l], toByteOffset: (j0 + l) * width + e,
                                                               as: UInt32.self)
                }
            }
            j0 += count
        }
        let rows = Int8Keys.paddedRows(keys: tk)
        (s.keys + tk * width).initialize(repeating: 128, count: (rows - tk) * width)
        (s.scales + tk).initialize(repeating: 0, count: rows - tk)
    }

    /// The scores of keys j0 ..< j0+nk for every f32 panel of the tile (`panels` of w
    /// queries, `scores` [panelsPerTile][blockKeys][w]): one I8Gemm.block per B panel of 32
    /// queries, written straight into the f32 panel when it is 32 wide, else split into its
    /// w-wide panels.
    static func int8Scores(_ s: Int8Keys, firstKey j0: Int, keys nk: Int, headDim d: Int, panels: Int,
                           scores: UnsafeMutablePointer<Float>) {
        let lanes = V.scalarCount, w = 2 * lanes, bw = I8Gemm.panelColumns
        let queryPanels = (panels * w + bw - 1) / bw
        // The head's depth in whole quads: d = 40 is one block and two quads, not two blocks.
        let blocks = s.rowBytes / I8Gemm.blockDepth, lastQuads = (d - (blocks - 1) * I8Gemm.blockDepth + 3) / 4
        for qp in 0..<queryPanels {
            let direct = w == bw
            let c = direct ? scores + qp * blockKeys * w : s.panelScores
            I8Gemm.block(rows: nk, columns: bw, blocks: blocks, lastQuads: lastQuads, a: s.keys + j0 * s.rowBytes,
                         lda: s.rowBytes, b: s.queries + qp * I8Gemm.panelStride(depth: d),
                         panelStride: I8Gemm.panelStride(depth: d), c: c, rowStride: bw, scale: s.scales + j0,
                         bias: nil, addend: nil)
            if direct { continue }
            for sub in 0..<(bw / w) {
                let panel = qp * (bw / w) + sub
                if panel >= panels { break }
                let dst = scores + panel * blockKeys * w, src = s.panelScores + sub * w
                for j in 0..<nk {
                    V.load(src + j * bw).store(dst + j * w)
                    V.load(src + j * bw + lanes).store(dst + j * w + lanes)
                }
            }
        }
    }
}
