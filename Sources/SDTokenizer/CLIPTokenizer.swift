// Matches transformers 5.x `CLIPTokenizer` (the `tokenizers`-backed one) as
// `StableDiffusionPipeline` loads it from a diffusers `tokenizer/` folder and calls it:
// `tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids`.

/// CLIP's byte-level BPE tokenizer.
///
/// Encoding a prompt: special-token strings are cut out first, the rest is normalised
/// (NFC, lower case; see `TextNormalizer`), split into words (`PreTokenizer`), each word's
/// UTF-8 bytes become byte-level symbols with "</w>" on the last one, and the merges are
/// applied lowest rank first.
public struct CLIPTokenizer: Sendable {
    /// Token strings by id (49408 for CLIP), to store in the model file.
    public let vocabulary: [String]
    /// The merges as "left right" lines, rank order, without a "#version" header.
    public let merges: [String]
    /// The begin-of-text token id, put first in every sequence.
    public let bosTokenID: Int32
    /// The end-of-text token id, put after the prompt's tokens.
    public let eosTokenID: Int32
    /// The id that fills a sequence up to `maxLength`.
    public let padTokenID: Int32
    /// Length of `tokenize`'s output, BOS and EOS included.
    public let maxLength: Int

    let mergeTable: MergeTable
    /// Id of each byte's symbol, and of the symbol with "</w>" (a word's last byte).
    let byteSymbolIDs: [Int32]
    let finalByteSymbolIDs: [Int32]
    /// Strings that are never split, matched in the prompt as typed...
    let verbatimAddedTokens: [AddedToken]
    /// ...and after normalisation (so in any letter case).
    let normalizedAddedTokens: [AddedToken]

    struct AddedToken: Sendable {
        let content: [UInt8]
        let id: Int32
    }

    static let startOfText = "<|startoftext|>"
    static let endOfText = "<|endoftext|>"
    static let endOfWord = "</w>"

    /// - Parameters:
    ///   - merges: "left right" lines in rank order; a leading "#version" line is skipped.
    ///   - vocabulary: token strings by id. When nil it is derived from the merges as CLIP's
    ///     was built: the 256 byte symbols, the same with "</w>", one token per merge, then
    ///     "<|startoftext|>" and "<|endoftext|>".
    ///   - padTokenID: 49407 ("<|endoftext|>") for SD 1.x, 0 ("!") for SD 2.x.
    ///   - maxLength: ids per `tokenize` output, BOS and EOS included.
    public init(merges: [String], vocabulary: [String]? = nil, padTokenID: Int32 = 49407, maxLength: Int = 77) throws {
        let mergeLines = merges.first?.hasPrefix("#version") == true ? Array(merges.dropFirst()) : merges
        var table = TokenTable(expectedCount: (vocabulary?.count ?? 516 + mergeLines.count))
        var derived: [String] = []
        if let vocabulary {
            for (id, token) in vocabulary.enumerated() {
                let added = withUTF8Bytes(token) { table.append($0) }
                guard added else { throw CLIPTokenizerError("vocabulary entry \(id) \(quoted(token)) appears twice") }
            }
        } else {
            derived.reserveCapacity(516 + mergeLines.count)
            let symbols = ByteLevel.vocabularyOrder.map { String(ByteLevel.scalarForByte[Int($0)]) }
            derived += symbols
            derived += symbols.map { $0 + Self.endOfWord }
            for token in derived { _ = withUTF8Bytes(token) { table.append($0) } }
        }

        var mergeTable = MergeTable(expectedCount: mergeLines.count)
        var merged: [UInt8] = []
        for (rank, line) in mergeLines.enumerated() {
            try withUTF8Bytes(line) { bytes in
                var spaceCount = 0, space = 0
                for i in 0..<bytes.count where bytes[i] == UInt8(ascii: " ") {
                    spaceCount += 1
                    space = i
                }
                guard spaceCount == 1, space > 0, space < bytes.count - 1 else {
                    throw CLIPTokenizerError("merge \(rank + 1) \(quoted(line)) is not two tokens separated by one space")
                }
                let left = UnsafeBufferPointer(rebasing: bytes[..<space])
                let right = UnsafeBufferPointer(rebasing: bytes[(space + 1)...])
                guard let leftID = table.id(of: left), let rightID = table.id(of: right) else {
                    let missing = table.id(of: left) == nil ? left : right
                    throw CLIPTokenizerError("merge \(rank + 1) \(quoted(line)): \(quoted(String(decoding: missing, as: UTF8.self))) is not in the vocabulary")
                }
                merged.removeAll(keepingCapacity: true)
                merged.append(contentsOf: left)
                merged.append(contentsOf: right)
                let resultID: Int32
                if vocabulary == nil {
                    guard merged.withUnsafeBufferPointer({ table.append($0) }) else {
                        throw CLIPTokenizerError("merge \(rank + 1) \(quoted(line)) makes a token that already exists")
                    }
                    derived.append(String(decoding: merged, as: UTF8.self))
                    resultID = Int32(table.count - 1)
                } else {
                    guard let id = merged.withUnsafeBufferPointer({ table.id(of: $0) }) else {
                        throw CLIPTokenizerError("merge \(rank + 1) \(quoted(line)): the merged token is not in the vocabulary")
                    }
                    resultID = id
                }
                guard mergeTable.append(left: leftID, right: rightID, result: resultID) else {
                    throw CLIPTokenizerError("merge \(rank + 1) \(quoted(line)) appears twice")
                }
            }
        }
        if vocabulary == nil {
            for token in [Self.startOfText, Self.endOfText] {
                _ = withUTF8Bytes(token) { table.append($0) }
                derived.append(token)
            }
        }

        var byteSymbolIDs = [Int32](repeating: 0, count: 256)
        var finalByteSymbolIDs = [Int32](repeating: 0, count: 256)
        for byte in 0..<256 {
            let symbol = String(ByteLevel.scalarForByte[byte])
            guard let id = table.id(of: symbol), let finalID = table.id(of: symbol + Self.endOfWord) else {
                throw CLIPTokenizerError("the vocabulary lacks the byte symbol \(quoted(symbol)) or \(quoted(symbol + Self.endOfWord))")
            }
            byteSymbolIDs[byte] = id
            finalByteSymbolIDs[byte] = finalID
        }
        guard let bos = table.id(of: Self.startOfText), let eos = table.id(of: Self.endOfText) else {
            throw CLIPTokenizerError("the vocabulary lacks \(Self.startOfText) or \(Self.endOfText)")
        }
        let vocabulary = vocabulary ?? derived
        guard padTokenID >= 0, Int(padTokenID) < vocabulary.count else {
            throw CLIPTokenizerError("pad token id \(padTokenID) is outside the vocabulary (0..<\(vocabulary.count))")
        }
        guard maxLength >= 2 else {
            throw CLIPTokenizerError("maxLength \(maxLength) leaves no room for the start and end tokens")
        }

        // Which special strings are matched verbatim and which after normalisation copies
        // what transformers 5 builds from the tokenizer folders the pipelines ship. SD 1.x
        // (pad "<|endoftext|>"): "<|endoftext|>" only verbatim, "<|startoftext|>" in any
        // case. SD 2.x (pad "!"): "!" verbatim, so "wow!" ends in id 0 rather than "!</w>",
        // and both special strings in any case.
        let bosToken = AddedToken(content: Array(Self.startOfText.utf8), id: bos)
        let eosToken = AddedToken(content: Array(Self.endOfText.utf8), id: eos)
        if padTokenID == eos {
            verbatimAddedTokens = [eosToken]
            normalizedAddedTokens = [bosToken]
        } else {
            verbatimAddedTokens = [AddedToken(content: Array(vocabulary[Int(padTokenID)].utf8), id: padTokenID)]
                .filter { !$0.content.isEmpty }
            normalizedAddedTokens = [bosToken, eosToken]
        }

        self.vocabulary = vocabulary
        self.merges = mergeLines
        self.mergeTable = mergeTable
        self.byteSymbolIDs = byteSymbolIDs
        self.finalByteSymbolIDs = finalByteSymbolIDs
        self.bosTokenID = bos
        self.eosTokenID = eos
        self.padTokenID = padTokenID
        self.maxLength = maxLength
    }

    /// The standard CLIP vocabulary (openai/clip-vit-large-patch14, as in every SD 1.x
    /// tokenizer folder), built from `bundledCLIPMergesText` once per process.
    public static func bundled() -> CLIPTokenizer { bundledTokenizer }

    private static let bundledTokenizer: CLIPTokenizer = {
        do {
            return try CLIPTokenizer(merges: mergeLines(in: bundledCLIPMergesText))
        } catch {
            fatalError("the bundled CLIP merges are invalid: \(error)")
        }
    }()

    /// The merge lines of a merges.txt file: splits lines (LF or CRLF) and drops the
    /// "#version" header and empty lines.
    public static func mergeLines(in text: String) -> [String] {
        var lines: [String] = []
        withUTF8Bytes(text) { bytes in
            var start = 0
            for end in 0...bytes.count where end == bytes.count || bytes[end] == UInt8(ascii: "\n") {
                var stop = end
                if stop > start, bytes[stop - 1] == UInt8(ascii: "\r") { stop -= 1 }
                if stop > start {
                    let line = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<stop]), as: UTF8.self)
                    if !(lines.isEmpty && line.hasPrefix("#version")) { lines.append(line) }
                }
                start = end + 1
            }
        }
        return lines
    }
}

private func quoted(_ text: String) -> String {
    "\"" + (text.count > 40 ? String(text.prefix(40)) + "…" : text) + "\""
}
