import XCTest
import SDTokenizer

final class CLIPTokenizerTests: XCTestCase {
    func testBundledVocabulary() {
        let tokenizer = CLIPTokenizer.bundled()
        XCTAssertEqual(tokenizer.vocabulary.count, 49408)
        XCTAssertEqual(tokenizer.merges.count, 48894)
        XCTAssertEqual(tokenizer.vocabulary[0], "!")
        XCTAssertEqual(tokenizer.vocabulary[188], "Ā")      // byte 0x00, first non-printable byte
        XCTAssertEqual(tokenizer.vocabulary[256], "!</w>")
        XCTAssertEqual(tokenizer.vocabulary[512], "in")     // first merge "i n"
        XCTAssertEqual(tokenizer.vocabulary[49406], "<|startoftext|>")
        XCTAssertEqual(tokenizer.vocabulary[49407], "<|endoftext|>")
        XCTAssertEqual(tokenizer.bosTokenID, 49406)
        XCTAssertEqual(tokenizer.eosTokenID, 49407)
        XCTAssertEqual(tokenizer.padTokenID, 49407)
        XCTAssertEqual(tokenizer.maxLength, 77)
        XCTAssertEqual(Set(tokenizer.vocabulary).count, 49408, "token strings must be unique")
    }

    func testEncodeSimpleWords() {
        let tokenizer = CLIPTokenizer.bundled()
        XCTAssertEqual(tokenizer.encode("cat"), [2368])
        XCTAssertEqual(tokenizer.encode("a photograph of an astronaut"), [320, 8853, 539, 550, 18376])
        XCTAssertEqual(tokenizer.encode("Hello!"), [3306, 256])
        XCTAssertEqual(tokenizer.encode(""), [])
        XCTAssertEqual(tokenizer.encode(" \t\n "), [])
    }

    func testDecodeInvertsEncode() {
        let tokenizer = CLIPTokenizer.bundled()
        let text = "a photograph of an astronaut, riding a horse! café 東京 🐴"
        // CLIP splits punctuation into words of its own, so it comes back spaced.
        XCTAssertEqual(tokenizer.decode(tokenizer.encode(text)), "a photograph of an astronaut , riding a horse ! café 東京 🐴")
        XCTAssertEqual(tokenizer.decode(tokenizer.tokenize("cat")), "cat", "BOS, EOS and padding are dropped")
    }

    func testTruncatedTextNamesTheDroppedWords() {
        let tokenizer = CLIPTokenizer.bundled()
        let kept = Array(repeating: "cat", count: 75).joined(separator: " ")
        XCTAssertNil(tokenizer.truncatedText(of: kept), "75 tokens fit between BOS and EOS")
        XCTAssertEqual(tokenizer.truncatedText(of: kept + " riding a horse"), "riding a horse")
    }

    func testTokenizePadsWithEOS() {
        let ids = CLIPTokenizer.bundled().tokenize("cat")
        XCTAssertEqual(ids, [49406, 2368, 49407] + Array(repeating: 49407, count: 74))
    }

    func testTruncationKeepsBOSAndEOS() throws {
        let tokenizer = CLIPTokenizer.bundled()
        let prompt = Array(repeating: "cat", count: 100).joined(separator: " ")
        let encoded = tokenizer.encode(prompt)
        XCTAssertEqual(encoded.count, 100)
        let ids = tokenizer.tokenize(prompt)
        XCTAssertEqual(ids.count, 77)
        XCTAssertEqual(ids.first, 49406)
        XCTAssertEqual(ids.last, 49407)
        XCTAssertEqual(Array(ids[1..<76]), Array(encoded[0..<75]))

        let short = try CLIPTokenizer(merges: tokenizer.merges, vocabulary: tokenizer.vocabulary, maxLength: 5)
        XCTAssertEqual(short.tokenize(prompt), [49406, 2368, 2368, 2368, 49407])
        XCTAssertEqual(short.tokenize(""), [49406, 49407, 49407, 49407, 49407])
    }

    func testDerivedAndGivenVocabularyAgree() throws {
        let bundled = CLIPTokenizer.bundled()
        let given = try CLIPTokenizer(merges: ["#version: 0.2"] + bundled.merges, vocabulary: bundled.vocabulary)
        XCTAssertEqual(given.merges, bundled.merges, "the #version header is not a merge")
        let prompt = "Ångström's café, 8k 😀 日本語 (masterpiece:1.2)"
        XCTAssertEqual(given.tokenize(prompt), bundled.tokenize(prompt))
    }

    func testSmallCustomMerges() throws {
        // 256 byte symbols, 256 with </w>, one token per merge, then the two specials.
        let tokenizer = try CLIPTokenizer(merges: ["c a", "ca t</w>"], padTokenID: 515)
        XCTAssertEqual(tokenizer.vocabulary.count, 516)
        XCTAssertEqual(tokenizer.vocabulary[512], "ca")
        XCTAssertEqual(tokenizer.vocabulary[513], "cat</w>")
        XCTAssertEqual(tokenizer.bosTokenID, 514)
        XCTAssertEqual(tokenizer.eosTokenID, 515)
        XCTAssertEqual(tokenizer.encode("CAT"), [513])
        // "b</w>": printable bytes come first in the byte order, so "b" is 0x62 - 33 = 65.
        XCTAssertEqual(tokenizer.encode("cab"), [512, 256 + 65])
        XCTAssertEqual(tokenizer.tokenize("cat").prefix(4), [514, 513, 515, 515])
    }

    func testMergeLinesOfAMergesFile() {
        XCTAssertEqual(CLIPTokenizer.mergeLines(in: "#version: 0.2\r\ni n\r\n\r\nt h</w>\n"), ["i n", "t h</w>"])
        XCTAssertEqual(CLIPTokenizer.mergeLines(in: "i n"), ["i n"])
        XCTAssertEqual(CLIPTokenizer.mergeLines(in: ""), [])
    }

    func testMalformedDataThrows() {
        let bundled = CLIPTokenizer.bundled()
        let cases: [(String, () throws -> CLIPTokenizer, String)] = [
            ("no space", { try CLIPTokenizer(merges: ["in"]) }, "merge 1"),
            ("two spaces", { try CLIPTokenizer(merges: ["i n", "a b c"]) }, "merge 2"),
            ("double space", { try CLIPTokenizer(merges: ["i  n"]) }, "merge 1"),
            ("empty side", { try CLIPTokenizer(merges: [" n"]) }, "merge 1"),
            ("empty line", { try CLIPTokenizer(merges: [""]) }, "merge 1"),
            ("unknown token", { try CLIPTokenizer(merges: ["i n", "xyz q"]) }, "\"xyz\" is not in the vocabulary"),
            ("repeated merge", { try CLIPTokenizer(merges: ["i n", "i n"]) }, "merge 2"),
            ("merge result not in vocabulary",
             { try CLIPTokenizer(merges: ["i n"], vocabulary: Array(bundled.vocabulary[0..<512]) + ["<|startoftext|>", "<|endoftext|>"]) },
             "merged token"),
            ("no byte symbols", { try CLIPTokenizer(merges: [], vocabulary: ["<|startoftext|>", "<|endoftext|>"]) }, "byte symbol"),
            ("no special tokens", { try CLIPTokenizer(merges: [], vocabulary: Array(bundled.vocabulary[0..<512])) }, "<|startoftext|>"),
            ("duplicate vocabulary entry", { try CLIPTokenizer(merges: [], vocabulary: bundled.vocabulary + ["cat</w>"]) }, "twice"),
            ("pad id too large", { try CLIPTokenizer(merges: bundled.merges, padTokenID: 49408) }, "pad token id 49408"),
            ("negative pad id", { try CLIPTokenizer(merges: bundled.merges, padTokenID: -1) }, "pad token id -1"),
            ("maxLength 1", { try CLIPTokenizer(merges: bundled.merges, maxLength: 1) }, "maxLength 1"),
        ]
        for (name, make, expectedMessage) in cases {
            XCTAssertThrowsError(try make(), name) { error in
                guard let error = error as? CLIPTokenizerError else {
                    return XCTFail("\(name): threw \(error), not a CLIPTokenizerError")
                }
                XCTAssertTrue(error.description.contains(expectedMessage), "\(name): \(error.description)")
            }
        }
    }

    func testLongWordIsEncodedWhole() {
        // A 5000-letter word is one pre-token: BPE must finish and cover every byte.
        let tokenizer = CLIPTokenizer.bundled()
        let word = String(repeating: "abcdefghij", count: 500)
        let ids = tokenizer.encode(word)
        XCTAssertEqual(ids.map { tokenizer.vocabulary[Int($0)] }.joined(), word + "</w>")
    }
}
