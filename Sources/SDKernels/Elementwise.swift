import CKernels

/// Element-wise kernels: memory-bound, so they only need to be vectorised and split over
/// threads once they are big enough to pay for a parallel region. The activations run the
/// C build of `VectorMath` (bitwise the same) under every kernel variant but `portable`.
enum Elementwise {
    typealias V = NativeF32

    /// Below this many elements a region's wake-up costs more than it saves.
    static let parallelThreshold = 1 << 15

    /// Calls `body(range)` over 0..<count in vector-aligned ranges, threaded when large.
    @inline(__always)
    static func split(_ count: Int, lanes: Int, pool: ThreadPool, _ body: (Range<Int>) -> Void) {
        if count < parallelThreshold || pool.threads == 1 {
            body(0..<count)
            return
        }
        let units = (count + lanes - 1) / lanes
        let parts = min(pool.threads, units)
        pool.run(parts: parts) { part in
            let lo = units * part / parts * lanes, hi = min(count, units * (part + 1) / parts * lanes)
            if lo < hi { body(lo..<hi) }
        }
    }

    /// y[i] = f(x[i]) over a range.
    @inline(__always)
    static func map(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                    _ range: Range<Int>, _ f: (V) -> V) {
        var i = range.lowerBound
        while i + V.scalarCount <= range.upperBound {
            f(V.load(x + i)).store(y + i)
            i += V.scalarCount
        }
        // The tail goes through the vector function too (one padded vector), so that
        // every element sees the same approximation.
        if i < range.upperBound {
            var t = V()
            for j in 0..<(range.upperBound - i) { t[j] = x[i + j] }
            let r = f(t)
            for j in 0..<(range.upperBound - i) { y[i + j] = r[j] }
        }
    }

    static func activate(_ f: Kernels.Activation, _ x: UnsafeMutablePointer<Float>,
                         count: Int, pool: ThreadPool) {
        let build = Kernels.variant.vectorMath
        split(count, lanes: V.scalarCount, pool: pool) { range in
            if build != .swift {
                let kind = switch f {
                case .gelu: PD_ACTIVATION_GELU
                case .quickGelu: PD_ACTIVATION_QUICK_GELU
                case .silu: PD_ACTIVATION_SILU
                }
                let p = x + range.lowerBound
                if build == .avx512 {
                    pd_activate_avx512(Int32(kind), p, p, range.count)
                } else {
                    pd_activate_avx2(Int32(kind), p, p, range.count)
                }
                return
            }
            switch f {
            case .gelu: map(x, x, range, VectorMath.gelu)
            case .quickGelu: map(x, x, range, VectorMath.quickGelu)
            case .silu: map(x, x, range, VectorMath.silu)
            }
        }
    }

    /// y[i] = x[i] · gelu(x[F·P + i]).
    static func geglu(_ x: UnsafePointer<Float>, features: Int, columns: Int,
                      output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let count = features * columns
        let gate = x + count
        let build = Kernels.variant.vectorMath
        split(count, lanes: V.scalarCount, pool: pool) { range in
            if build != .swift {
                let i = range.lowerBound
                if build == .avx512 {
                    pd_geglu_avx512(x + i, gate + i, y + i, range.count)
                } else {
                    pd_geglu_avx2(x + i, gate + i, y + i, range.count)
                }
                return
            }
            var i = range.lowerBound
            while i + V.scalarCount <= range.upperBound {
                (V.load(x + i) * VectorMath.gelu(V.load(gate + i))).store(y + i)
                i += V.scalarCount
            }
            if i < range.upperBound {
                var a = V(), g = V()
                for j in 0..<(range.upperBound - i) { a[j] = x[i + j]; g[j] = gate[i + j] }
                let r = a * VectorMath.gelu(g)
                for j in 0..<(range.upperBound - i) { y[i + j] = r[j] }
            }
        }
    }

    static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int,
                    output y: UnsafeMutablePointer<Float>, pool: ThreadPool?) {
        let body = { (range: Range<Int>) in
            var i = range.lowerBound
            while i + V.scalarCount <= range.upperBound {
                (V.load(a + i) + V.load(b + i)).store(y + i)
                i += V.scalarCount
            }
            while i < range.upperBound {
                y[i] = a[i] + b[i]
                i += 1
            }
        }
        if let pool { split(count, lanes: V.scalarCount, pool: pool, body) } else { body(0..<count) }
    }

    /// x: [planes, H, W] → y: [planes, 2H, 2W], each input row written to two output rows.
    static func upsampleNearest2x(_ x: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                                  output y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let rows = planes * height
        let body = { (range: Range<Int>) in
            for row in range {
                let src = x + row * width
                let dst = y + row * 4 * width // rows 2r and 2r+1 of width 2W
                for i in 0..<width {
                    let v = src[i]
                    dst[2 * i] = v
                    dst[2 * i + 1] = v
                }
                (dst + 2 * width).update(from: dst, count: 2 * width)
            }
        }
        if rows * width < parallelThreshold { body(0..<rows) } else { pool.parallelRanges(rows, body) }
    }
}
