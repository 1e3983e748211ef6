/// CLIP's pre-tokenisation, hand-written instead of a regex (Swift's Regex pulls in a large
/// runtime and is slow to build): splits normalised UTF-8 text into the words that BPE
/// then encodes one at a time. Equivalent to the reference's two steps:
///
/// 1. Split(`<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`),
///    keeping the matches and dropping what lies between them (only whitespace can).
/// 2. ByteLevel's GPT-2 split (`'s|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|...`) of each
///    piece. That leaves every piece from step 1 whole except the two special-token
///    strings, which become "<|", the name and "|>". (They only reach this point when the
///    added-token pass did not take them, e.g. "<|ENDOFTEXT|>" after lower-casing.)
enum PreTokenizer {
    private static let contractions: [[UInt8]] = ["s", "t", "re", "ve", "m", "ll", "d"].map { Array($0.utf8) }
    private static let specialNames: [[UInt8]] = ["startoftext", "endoftext"].map { Array($0.utf8) }
    private static let specialOpen = Array("<|".utf8), specialClose = Array("|>".utf8)

    /// Calls `word` with the byte range of each word of `text`, in order.
    static func forEachWord(in text: UnsafeBufferPointer<UInt8>, _ word: (Range<Int>) -> Void) {
        var i = 0
        while i < text.count {
            let (scalar, length) = decodeScalar(text, at: i)
            switch CharacterClass(scalar) {
            case .whitespace:
                i += length
            case .number:
                word(i..<i + length)
                i += length
            case .letter:
                let end = endOfRun(text, from: i + length, class: .letter)
                word(i..<end)
                i = end
            case .other:
                if text[i] == UInt8(ascii: "'"), let suffix = contractions.first(where: { hasPrefix(text, $0, at: i + 1) }) {
                    word(i..<i + 1 + suffix.count)
                    i += 1 + suffix.count
                } else if let name = specialName(text, at: i) {
                    word(i..<i + 2)
                    word(i + 2..<i + 2 + name.count)
                    word(i + 2 + name.count..<i + 4 + name.count)
                    i += 4 + name.count
                } else {
                    let end = endOfRun(text, from: i + length, class: .other)
                    word(i..<end)
                    i = end
                }
            }
        }
    }

    /// The name of the "<|name|>" special-token string starting at `i`, if one does.
    private static func specialName(_ text: UnsafeBufferPointer<UInt8>, at i: Int) -> [UInt8]? {
        guard text[i] == UInt8(ascii: "<"), hasPrefix(text, specialOpen, at: i) else { return nil }
        for name in specialNames
        where hasPrefix(text, name, at: i + 2) && hasPrefix(text, specialClose, at: i + 2 + name.count) {
            return name
        }
        return nil
    }

    private static func endOfRun(_ text: UnsafeBufferPointer<UInt8>, from start: Int, class wanted: CharacterClass) -> Int {
        var i = start
        while i < text.count {
            let (scalar, length) = decodeScalar(text, at: i)
            if CharacterClass(scalar) != wanted { break }
            i += length
        }
        return i
    }

    @inline(__always)
    static func hasPrefix(_ text: UnsafeBufferPointer<UInt8>, _ prefix: [UInt8], at i: Int) -> Bool {
        guard prefix.count <= text.count - i else { return false }
        for k in 0..<prefix.count where text[i + k] != prefix[k] { return false }
        return true
    }

    /// Decodes the scalar at `i` of valid UTF-8 (the text comes from a Swift String).
    @inline(__always)
    static func decodeScalar(_ text: UnsafeBufferPointer<UInt8>, at i: Int) -> (Unicode.Scalar, Int) {
        let lead = UInt32(text[i])
        if lead < 0x80 { return (Unicode.Scalar(UInt8(lead)), 1) }
        let length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2
        var value = lead & (0x7F >> UInt32(length))
        for k in 1..<length { value = value << 6 | (UInt32(text[i + k]) & 0x3F) }
        return (Unicode.Scalar(value)!, length)
    }
}
