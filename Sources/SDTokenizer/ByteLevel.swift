/// GPT-2's byte-level alphabet (`bytes_to_unicode`): every byte gets a printable stand-in
/// so that BPE can work on text of any script. Printable Latin-1 bytes stand for
/// themselves; the other 68 take U+0100 onwards in byte order. The vocabulary lists the
/// 188 printable ones first, then the rest, which is why the order here matters.
enum ByteLevel {
    static func isPrintable(_ byte: Int) -> Bool {
        (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
    }

    /// The stand-in scalar for each byte value.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if isPrintable(byte) {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// Bytes in vocabulary order: printable ones ascending, then the others ascending.
    static let vocabularyOrder: [UInt8] =
        (0..<256).filter { isPrintable($0) }.map(UInt8.init) + (0..<256).filter { !isPrintable($0) }.map(UInt8.init)
}
