import SDFormat
import SDTokenizer

/// The CLIP tokenizer as stored in the model file: id-ordered vocabulary, BPE merges and
/// the special token ids.
struct TokenizerData {
    var vocabulary: [String]
    var merges: [String]
    var bosTokenID: Int
    var eosTokenID: Int
    var padTokenID: Int
    var maxLength: Int
    var source: String

    /// The standard CLIP vocabulary bundled with the project, for inputs that carry no
    /// tokenizer: SD 1.x pads with the end token; SD 2.x (OpenCLIP) with `padToken` "!" (id 0).
    static func bundled(padToken: String? = nil) -> TokenizerData {
        let t = CLIPTokenizer.bundled()
        let pad = padToken.flatMap { t.vocabulary.firstIndex(of: $0) } ?? Int(t.padTokenID)
        return TokenizerData(vocabulary: t.vocabulary, merges: t.merges, bosTokenID: Int(t.bosTokenID),
                             eosTokenID: Int(t.eosTokenID), padTokenID: pad, maxLength: 77,
                             source: padToken.map { "bundled CLIP BPE, padded with \"\($0)\"" } ?? "bundled CLIP BPE")
    }

    /// A transformers CLIPTokenizer folder: vocab.json and merges.txt (the layout of
    /// published SD checkpoints), or the single tokenizer.json that transformers ≥ 5
    /// writes; tokenizer_config.json and special_tokens_map.json name the special tokens.
    static func read(folder: String) throws -> TokenizerData {
        let (entries, merges) = try FileSystem.isFile(FileSystem.join(folder, "vocab.json"))
            ? readVocabAndMerges(folder) : readTokenizerJSON(folder)
        guard entries.count > 2, entries.count < 1_000_000 else { throw FormatError(folder, "implausible vocabulary size \(entries.count)") }
        var vocabulary = [String?](repeating: nil, count: entries.count)
        var ids: [String: Int] = [:]
        for (token, value) in entries {
            guard let id = value.int, id >= 0, id < entries.count, vocabulary[id] == nil else {
                throw FormatError(folder, "vocabulary ids must be 0..<\(entries.count), each once (\(token))")
            }
            vocabulary[id] = token
            ids[token] = id
        }
        let vocab = vocabulary.map { $0! }
        func id(of token: String) -> Int? { ids[token] }

        var config = JSON.object([])
        let configPath = FileSystem.join(folder, "tokenizer_config.json")
        if FileSystem.isFile(configPath) { config = try FileSystem.readJSON(configPath) }
        var special = JSON.object([])
        let specialPath = FileSystem.join(folder, "special_tokens_map.json")
        if FileSystem.isFile(specialPath) { special = try FileSystem.readJSON(specialPath) }
        // A token is written either as a string or as {"content": "..."}.
        func token(_ name: String) -> String? {
            for source in [config, special] {
                if let v = source[name] { return v.string ?? v["content"]?.string }
            }
            return nil
        }
        func specialID(_ name: String, default fallback: String) throws -> Int {
            let t = token(name) ?? fallback
            guard let i = id(of: t) else { throw FormatError(folder, "\(name) \(t) is not in the vocabulary") }
            return i
        }
        var maxLength = config["model_max_length"]?.int ?? 77
        if maxLength <= 0 || maxLength > 1024 { maxLength = 77 }
        return TokenizerData(vocabulary: vocab, merges: merges,
                             bosTokenID: try specialID("bos_token", default: "<|startoftext|>"),
                             eosTokenID: try specialID("eos_token", default: "<|endoftext|>"),
                             padTokenID: try specialID("pad_token", default: "<|endoftext|>"),
                             maxLength: maxLength, source: folder)
    }

    static func isTokenizerFolder(_ folder: String) -> Bool {
        FileSystem.isFile(FileSystem.join(folder, "vocab.json")) || FileSystem.isFile(FileSystem.join(folder, "tokenizer.json"))
    }

    static func readVocabAndMerges(_ folder: String) throws -> ([(String, JSON)], [String]) {
        let vocabPath = FileSystem.join(folder, "vocab.json")
        guard let entries = try FileSystem.readJSON(vocabPath).object else { throw FormatError(vocabPath, "not a JSON object") }
        // Split by the tokenizer's rules: a merge may start with a combining mark, which
        // Swift would glue to the preceding newline in a Character split.
        let merges = CLIPTokenizer.mergeLines(in: try FileSystem.readText(FileSystem.join(folder, "merges.txt")))
        return (entries, merges)
    }

    /// tokenizers' JSON: a BPE `model` with `vocab` {token: id} and `merges`, each either
    /// "a b" or ["a", "b"] depending on the library version.
    static func readTokenizerJSON(_ folder: String) throws -> ([(String, JSON)], [String]) {
        let path = FileSystem.join(folder, "tokenizer.json")
        let model = try FileSystem.readJSON(path)["model"]
        guard model?["type"]?.string == "BPE", let entries = model?["vocab"]?.object, let list = model?["merges"]?.array else {
            throw FormatError(path, "not a BPE tokenizer with vocab and merges")
        }
        let merges = try list.map { m -> String in
            if let s = m.string { return s }
            if let pair = m.array, pair.count == 2, let a = pair[0].string, let b = pair[1].string { return a + " " + b }
            throw FormatError(path, "malformed merge \(m.serialized)")
        }
        return (entries, merges)
    }

    var metadata: [(String, MetadataValue)] { metadata(prefix: "tokenizer", withTables: true) }

    /// `withTables` false leaves out vocab and merges (a second tokenizer sharing the first's).
    func metadata(prefix p: String, withTables: Bool) -> [(String, MetadataValue)] {
        (withTables ? [(p + ".vocab", .strings(vocabulary)), (p + ".merges", .strings(merges))] : [])
        + [(p + ".bos_token_id", .int(Int64(bosTokenID))), (p + ".eos_token_id", .int(Int64(eosTokenID))),
           (p + ".pad_token_id", .int(Int64(padTokenID))), (p + ".model_max_length", .int(Int64(maxLength)))]
    }
}
