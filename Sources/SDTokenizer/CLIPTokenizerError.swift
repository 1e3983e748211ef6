/// Why a vocabulary or merge list cannot make a `CLIPTokenizer`.
public struct CLIPTokenizerError: Error, CustomStringConvertible, Equatable {
    public let message: String

    init(_ message: String) {
        self.message = message
    }

    public var description: String { "CLIP tokenizer: \(message)" }
}
