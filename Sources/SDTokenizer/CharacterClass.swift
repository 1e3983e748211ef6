/// The four classes that CLIP's pre-tokenisation pattern
/// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
/// tells apart, as the reference's regex engine (Oniguruma inside `tokenizers`) sees them.
enum CharacterClass: UInt8 {
    case whitespace  // \s: Unicode White_Space; never part of a word
    case letter      // \p{L}: runs of them form one word
    case number      // \p{N}: each one is its own word
    case other       // runs of anything else form one word

    /// Oniguruma's Unicode tables are version 16.0 while the Swift runtime may be newer
    /// (6.3 ships 17.0): scalars assigned later are unassigned, hence `other`, to the
    /// reference. Tests/Fixtures/tokenizer/unicode.json holds the reference's classes for
    /// every scalar, so a runtime or reference upgrade that moves this shows up in the tests.
    static let referenceUnicodeMajorVersion = 16

    @inline(__always)
    init(_ scalar: Unicode.Scalar) {
        let value = scalar.value
        if value < 0x80 {
            self = CharacterClass.ascii[Int(value)]
        } else {
            self = CharacterClass.classify(nonASCII: scalar)
        }
    }

    private static func classify(nonASCII scalar: Unicode.Scalar) -> CharacterClass {
        let properties = scalar.properties
        if properties.isWhitespace { return .whitespace }
        guard let age = properties.age, age.major <= referenceUnicodeMajorVersion else { return .other }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        default:
            return .other
        }
    }

    private static let ascii: [CharacterClass] = (0..<0x80).map { (value: Int) -> CharacterClass in
        switch value {
        case 0x09...0x0D, 0x20: return .whitespace
        case 0x30...0x39: return .number
        case 0x41...0x5A, 0x61...0x7A: return .letter
        default: return .other
        }
    }
}
