/// The BPE merge ranks: (left id, right id) -> (rank, merged id). Open addressing over
/// rank numbers keeps it to ~1 MB for CLIP's 48894 merges and makes a lookup a multiply,
/// a shift and usually one compare, which is what the BPE inner loop needs.
struct MergeTable {
    private var slots: [Int32]          // rank, or -1 when empty
    private var pairs: [UInt64] = []    // by rank: left << 32 | right
    private var results: [Int32] = []   // by rank: id of the merged token
    private let shift: UInt64

    init(expectedCount: Int) {
        var bits: UInt64 = 4
        while (1 << bits) < 2 * expectedCount { bits += 1 }
        slots = [Int32](repeating: -1, count: 1 << Int(bits))
        shift = 64 - bits
        pairs.reserveCapacity(expectedCount)
        results.reserveCapacity(expectedCount)
    }

    var count: Int { pairs.count }

    /// Adds the next-ranked merge; false if the pair is already there.
    mutating func append(left: Int32, right: Int32, result: Int32) -> Bool {
        precondition(2 * (count + 1) <= slots.count, "MergeTable sized too small")
        let key = Self.key(left, right)
        var slot = slot(for: key)
        while slots[slot] >= 0 {
            if pairs[Int(slots[slot])] == key { return false }
            slot = (slot + 1) & (slots.count - 1)
        }
        slots[slot] = Int32(count)
        pairs.append(key)
        results.append(result)
        return true
    }

    /// The rank of merging `left` and `right` (lower merges first), or `Int32.max` if none.
    @inline(__always)
    func rank(_ left: Int32, _ right: Int32) -> Int32 {
        let key = Self.key(left, right)
        var slot = slot(for: key)
        while true {
            let rank = slots[slot]
            if rank < 0 { return .max }
            if pairs[Int(rank)] == key { return rank }
            slot = (slot + 1) & (slots.count - 1)
        }
    }

    @inline(__always)
    func result(ofRank rank: Int32) -> Int32 { results[Int(rank)] }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private func slot(for key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9e37_79b9_7f4a_7c15) >> shift)
    }
}
