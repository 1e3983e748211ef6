// The decoding half of CLIPTokenizer: ids back to text, for messages that quote what a
// prompt lost to truncation (diffusers warns with the decoded overflow the same way).

extension CLIPTokenizer {
    /// The text of `ids`: byte-level symbols back to bytes, "</w>" word ends to spaces,
    /// special tokens dropped (transformers' `decode(ids, skip_special_tokens=True)` without
    /// its clean-up of the space CLIP leaves before punctuation).
    public func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard id >= 0, Int(id) < vocabulary.count, id != bosTokenID, id != eosTokenID else { continue }
            var token = vocabulary[Int(id)]
            let endsWord = token.hasSuffix(Self.endOfWord)
            if endsWord { token.removeLast(Self.endOfWord.count) }
            for scalar in token.unicodeScalars {
                if let byte = ByteLevel.byteForScalar[scalar] { bytes.append(byte) }
            }
            if endsWord { bytes.append(UInt8(ascii: " ")) }
        }
        while bytes.last == UInt8(ascii: " ") { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// What `tokenize` drops from `prompt` because the text encoder takes at most
    /// `maxLength - 2` tokens between BOS and EOS, decoded; nil when nothing is dropped.
    public func truncatedText(of prompt: String) -> String? {
        let ids = encode(prompt)
        guard ids.count > maxLength - 2 else { return nil }
        return decode(Array(ids[(maxLength - 2)...]))
    }
}

extension ByteLevel {
    /// The byte each stand-in scalar stands for.
    static let byteForScalar: [Unicode.Scalar: UInt8] = {
        var table: [Unicode.Scalar: UInt8] = [:]
        for (byte, scalar) in scalarForByte.enumerated() { table[scalar] = UInt8(byte) }
        return table
    }()
}
