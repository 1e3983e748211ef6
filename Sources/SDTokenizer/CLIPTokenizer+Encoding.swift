// The encoding half of CLIPTokenizer: added-token splitting, then per word the byte-level
// symbols and the BPE merges.

extension CLIPTokenizer {
    /// `maxLength` ids: BOS, the prompt's ids cut to `maxLength - 2`, EOS, then padding,
    /// like `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`.
    public func tokenize(_ prompt: String) -> [Int32] {
        let ids = encode(prompt).prefix(maxLength - 2)
        var result: [Int32] = []
        result.reserveCapacity(maxLength)
        result.append(bosTokenID)
        result.append(contentsOf: ids)
        result.append(eosTokenID)
        result.append(contentsOf: repeatElement(padTokenID, count: maxLength - result.count))
        return result
    }

    /// The ids of `text` without BOS/EOS and without truncation (special-token strings in
    /// the text do become their ids, as in `tokenizer(text, add_special_tokens=False)`).
    public func encode(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        var scratch = BPEScratch()
        withUTF8Bytes(text) { raw in
            Self.split(raw, on: verbatimAddedTokens) { segment, addedID in
                if let addedID { ids.append(addedID); return }
                let normalized = TextNormalizer.normalize(segment)
                normalized.withUnsafeBufferPointer { normalized in
                    Self.split(normalized, on: normalizedAddedTokens) { piece, addedID in
                        if let addedID { ids.append(addedID); return }
                        PreTokenizer.forEachWord(in: piece) { word in
                            appendBPE(of: UnsafeBufferPointer(rebasing: piece[word]), to: &ids, scratch: &scratch)
                        }
                    }
                }
            }
        }
        return ids
    }

    /// Calls `body` for the stretches of `text` between added tokens (id nil) and for each
    /// added token (its id), in order; matches leftmost first, then longest.
    static func split(_ text: UnsafeBufferPointer<UInt8>, on tokens: [AddedToken],
                              _ body: (UnsafeBufferPointer<UInt8>, Int32?) -> Void) {
        var start = 0, i = 0
        while i < text.count {
            var best: AddedToken?
            for token in tokens
            where token.content[0] == text[i] && token.content.count > (best?.content.count ?? 0)
                && PreTokenizer.hasPrefix(text, token.content, at: i) {
                best = token
            }
            guard let best else { i += 1; continue }
            if start < i { body(UnsafeBufferPointer(rebasing: text[start..<i]), nil) }
            body(UnsafeBufferPointer(rebasing: text[i..<i]), best.id)
            i += best.content.count
            start = i
        }
        if start < text.count { body(UnsafeBufferPointer(rebasing: text[start...]), nil) }
    }

    /// Buffers reused across the words of one `encode` call.
    struct BPEScratch {
        var symbols: [Int32] = []
        var ranks: [Int32] = []  // ranks[k]: rank of merging symbols[k] and symbols[k + 1]
    }

    /// BPE of one word: merge the lowest-ranked adjacent pair (leftmost on ties) until no
    /// pair has a merge. The same result as `tokenizers`' priority queue; O(n²) compares
    /// but only O(n) table look-ups, so even a 10 000-byte word takes milliseconds.
    func appendBPE(of word: UnsafeBufferPointer<UInt8>, to ids: inout [Int32], scratch: inout BPEScratch) {
        let count = word.count
        if count == 1 {
            ids.append(finalByteSymbolIDs[Int(word[0])])
            return
        }
        scratch.symbols.removeAll(keepingCapacity: true)
        for k in 0..<count - 1 { scratch.symbols.append(byteSymbolIDs[Int(word[k])]) }
        scratch.symbols.append(finalByteSymbolIDs[Int(word[count - 1])])
        scratch.ranks.removeAll(keepingCapacity: true)
        for k in 0..<count - 1 { scratch.ranks.append(mergeTable.rank(scratch.symbols[k], scratch.symbols[k + 1])) }

        while true {
            var best = Int32.max, at = -1
            for k in 0..<scratch.ranks.count where scratch.ranks[k] < best {
                best = scratch.ranks[k]
                at = k
            }
            if at < 0 { break }
            scratch.symbols[at] = mergeTable.result(ofRank: best)
            scratch.symbols.remove(at: at + 1)
            scratch.ranks.remove(at: at)
            if at > 0 {
                scratch.ranks[at - 1] = mergeTable.rank(scratch.symbols[at - 1], scratch.symbols[at])
            }
            if at < scratch.ranks.count {
                scratch.ranks[at] = mergeTable.rank(scratch.symbols[at], scratch.symbols[at + 1])
            }
        }
        ids.append(contentsOf: scratch.symbols)
    }
}
