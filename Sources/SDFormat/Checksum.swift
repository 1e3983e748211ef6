/// The model file's per-tensor checksum: FNV-1a over little-endian 64-bit words (a last
/// partial word zero-padded), then the byte count mixed in. Word-wise keeps it at
/// several GB/s in plain Swift; it guards against corruption, not tampering.
public struct Checksum {
    static let prime: UInt64 = 0x0000_0100_0000_01B3
    private var h: UInt64 = 0xCBF2_9CE4_8422_2325
    private var pending: UInt64 = 0
    private var pendingBytes = 0
    private var total = 0

    /// An empty checksum, ready for `update`.
    public init() {}

    /// The checksum of `bytes` in one call.
    public static func of(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var c = Checksum()
        c.update(bytes)
        return c.value
    }

    /// Feeds more bytes; chunks may have any size, the result is that of the concatenation.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        total += bytes.count
        var i = 0
        while pendingBytes != 0, i < bytes.count { addByte(base.load(fromByteOffset: i, as: UInt8.self)); i += 1 }
        while i + 8 <= bytes.count {
            h = (h ^ UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))) &* Self.prime
            i += 8
        }
        while i < bytes.count { addByte(base.load(fromByteOffset: i, as: UInt8.self)); i += 1 }
    }

    private mutating func addByte(_ b: UInt8) {
        pending |= UInt64(b) << (8 * UInt64(pendingBytes))
        pendingBytes += 1
        if pendingBytes == 8 {
            h = (h ^ pending) &* Self.prime
            pending = 0
            pendingBytes = 0
        }
    }

    /// The checksum of every byte fed so far.
    public var value: UInt64 {
        var v = h
        if pendingBytes != 0 { v = (v ^ pending) &* Self.prime }
        return (v ^ UInt64(total)) &* Self.prime
    }
}
