/// Why a vocabulary or merge list cannot make a `CLIPTokenizer`.
public struct CLIPTokenizerError: Error, CustomStringConvertible, Equatable {
    /// What is wrong with the vocabulary or merges.
    public let message: String

    init(_ message: String) {
        self.message = message
    }

    /// "CLIP tokenizer: message".
    public var description: String { "CLIP tokenizer: \(message)" }
}
