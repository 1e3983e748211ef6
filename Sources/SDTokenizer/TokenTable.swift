/// Token string -> id, keyed by UTF-8 bytes. Only the constructor uses it: encoding works
/// on ids alone. A byte-keyed open-addressing table rather than `[String: Int32]` because
/// hashing a non-ASCII `String` normalises it first, which made building the 49408-entry
/// vocabulary several times slower.
struct TokenTable {
    /// Token `id` occupies `bytes[starts[id] ..< starts[id + 1]]`; ids are insertion order.
    private var bytes: [UInt8] = []
    private var starts: [Int] = [0]
    private var slots: [Int32]
    private let mask: Int

    init(expectedCount: Int) {
        var capacity = 16
        while capacity < 2 * expectedCount { capacity <<= 1 }
        slots = [Int32](repeating: -1, count: capacity)
        mask = capacity - 1
        bytes.reserveCapacity(expectedCount * 6)
        starts.reserveCapacity(expectedCount + 1)
    }

    var count: Int { starts.count - 1 }

    /// Adds `token` with the next id; returns false (adding nothing) if it is already present.
    mutating func append(_ token: UnsafeBufferPointer<UInt8>) -> Bool {
        if count * 2 >= slots.count { grow() }
        var slot = Self.hash(token) & mask
        while slots[slot] >= 0 {
            if equals(Int(slots[slot]), token) { return false }
            slot = (slot + 1) & mask
        }
        slots[slot] = Int32(count)
        bytes.append(contentsOf: token)
        starts.append(bytes.count)
        return true
    }

    func id(of token: UnsafeBufferPointer<UInt8>) -> Int32? {
        var slot = Self.hash(token) & mask
        while slots[slot] >= 0 {
            if equals(Int(slots[slot]), token) { return slots[slot] }
            slot = (slot + 1) & mask
        }
        return nil
    }

    func id(of token: String) -> Int32? {
        withUTF8Bytes(token) { id(of: $0) }
    }

    private func equals(_ id: Int, _ token: UnsafeBufferPointer<UInt8>) -> Bool {
        let start = starts[id], end = starts[id + 1]
        guard end - start == token.count else { return false }
        var i = 0
        while i < token.count {
            if bytes[start + i] != token[i] { return false }
            i += 1
        }
        return true
    }

    private mutating func grow() {
        // Only reached when the caller underestimated; rebuild at twice the size.
        var bigger = TokenTable(expectedCount: slots.count)
        for id in 0..<count {
            bytes.withUnsafeBufferPointer { all in
                _ = bigger.append(UnsafeBufferPointer(rebasing: all[starts[id]..<starts[id + 1]]))
            }
        }
        self = bigger
    }

    /// FNV-1a, then a multiplicative mix so that the low bits (the slot) depend on every byte.
    private static func hash(_ token: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in token { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: (h &* 0x9e37_79b9_7f4a_7c15) >> 20)
    }
}

/// Calls `body` with the string's UTF-8 bytes, copying only if the string is not contiguous.
@inline(__always)
func withUTF8Bytes<R>(_ string: String, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
    if let result = try string.utf8.withContiguousStorageIfAvailable(body) { return result }
    return try Array(string.utf8).withUnsafeBufferPointer(body)
}
