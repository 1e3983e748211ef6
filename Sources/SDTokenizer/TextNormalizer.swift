/// The reference's normaliser, `tokenizers`' Sequence[NFC, Replace(\s+ -> " "), Lowercase],
/// on UTF-8 bytes.
///
/// - The whitespace replacement is skipped: the pre-tokeniser drops every \s character
///   anyway and no added token contains whitespace, so it cannot change an id.
/// - Lower-casing is per scalar with the full Unicode mapping (Rust's `char::to_lowercase`,
///   e.g. "İ" -> "i̇", and Σ -> σ even at the end of a word), which is what
///   `Unicode.Scalar.Properties.lowercaseMapping` gives.
/// - NFC comes from the Swift runtime (`String._nfcCodeUnits`, public but underscored; the
///   stdlib has no other normalisation entry point yet).
/// - Not done, because the reference does not do it: ftfy's `fix_text` (mojibake repair,
///   NFC and the rest) and `html.unescape`. transformers 5's CLIPTokenizer is backed by
///   `tokenizers` only; the slow Python class that ran them (transformers 4.x, when ftfy was
///   installed) is gone. So "&amp;" stays five characters, as the goldens check. A prompt
///   with HTML entities, mojibake or a final capital sigma ("ΟΔΟΣ": Python's str.lower()
///   gives "οδος", the reference "οδοσ") would encode differently under transformers 4.x.
enum TextNormalizer {
    static func normalize(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        for byte in text where byte >= 0x80 {
            return nfc(text).withUnsafeBufferPointer { lowercased($0) }
        }
        // NFC leaves ASCII alone.
        return lowercased(text)
    }

    static func nfc(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        String(decoding: text, as: UTF8.self)._nfcCodeUnits
    }

    static func lowercased(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var lowered: [UInt8] = []
        lowered.reserveCapacity(text.count + 8)
        var i = 0
        while i < text.count {
            let byte = text[i]
            if byte < 0x80 {
                lowered.append((0x41...0x5A).contains(byte) ? byte | 0x20 : byte)
                i += 1
                continue
            }
            let (scalar, length) = PreTokenizer.decodeScalar(text, at: i)
            if scalar.properties.changesWhenLowercased {
                lowered.append(contentsOf: scalar.properties.lowercaseMapping.utf8)
            } else {
                lowered.append(contentsOf: text[i..<i + length])
            }
            i += length
        }
        return lowered
    }
}
